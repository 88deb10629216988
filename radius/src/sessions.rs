//! Projections of `access.acct`: the sessions open now, and a user's usage in a month.
//!
//! Both are pure functions of the events (no I/O), so `pampa sessions`, `pampa usage`
//! and the server's live Simultaneous-Use check all compute the same thing, and any of
//! them can be rebuilt by replaying the log.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
};

use chrono::{DateTime, Datelike, Utc};
use pampa_schemas::{AccessAcct, AcctStatus};
use serde::Serialize;

/// The user a User-Name stands for: lower-cased, with `default_realm` added to a bare
/// local part. The server, the projection and the reports share this rule, so
/// `alice` and `Alice@Example.org` count as one user.
pub fn normalize_user(user_name: &str, default_realm: Option<&str>) -> String {
    let name = user_name.trim();
    match (name.contains('@'), default_realm) {
        (false, Some(realm)) => format!("{name}@{realm}").to_lowercase(),
        _ => name.to_lowercase(),
    }
}

/// What identifies a session: the NAS and its Acct-Session-Id (unique per NAS, RFC 2866
/// §5.5). A record without one is keyed by NAS-Port and user instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SessionKey {
    nas_ip: String,
    session_id: String,
}

impl SessionKey {
    fn of(acct: &AccessAcct) -> SessionKey {
        let session_id = match &acct.session_id {
            Some(id) => id.clone(),
            None => format!(
                "port:{}/user:{}",
                acct.nas_port.map(|p| p.to_string()).unwrap_or_default(),
                acct.user.as_deref().unwrap_or_default()
            ),
        };
        SessionKey {
            nas_ip: acct.nas_ip.clone(),
            session_id,
        }
    }
}

/// One open session, as its latest accounting record describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// The NAS's address.
    pub nas_ip: String,
    /// Acct-Session-Id.
    pub session_id: Option<String>,
    /// The normalized user (see [`normalize_user`]); empty when the NAS sent none.
    pub user: String,
    /// NAS-Identifier.
    pub nas_identifier: Option<String>,
    /// NAS-Port.
    pub nas_port: Option<u32>,
    /// Framed-IP-Address.
    pub framed_ip: Option<String>,
    /// Calling-Station-Id.
    pub calling_station_id: Option<String>,
    /// When the session began: the Start's event time, or the first record seen.
    pub started_at: DateTime<Utc>,
    /// The event time of the latest record.
    pub updated_at: DateTime<Utc>,
    /// Acct-Session-Time of the latest record, seconds.
    pub session_time: Option<u32>,
    /// Octets from the user, cumulative.
    pub input_octets: Option<u64>,
    /// Octets to the user, cumulative.
    pub output_octets: Option<u64>,
}

/// The sessions open now, fed one `access.acct` at a time in log order.
///
/// - Start opens a session (or refreshes it: a retransmitted Start changes nothing).
/// - Interim-Update refreshes counters, and opens the session if its Start was missed
///   (lost, or before the replay window), unless the session was already closed: a
///   late Interim must not bring a stopped session back.
/// - Stop closes it.
/// - Accounting-On and Accounting-Off close every session of that NAS (matched by
///   `nas_ip`): the NAS rebooted or is going down, so none of them is still up.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    default_realm: Option<String>,
    open: HashMap<SessionKey, Session>,
    /// Sessions seen closing, and when, so late records do not reopen them.
    closed: HashMap<SessionKey, DateTime<Utc>>,
    per_user: HashMap<String, u32>,
}

impl Sessions {
    /// An empty projection that takes User-Names as they are (lower-cased).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty projection that adds `default_realm` to bare User-Names, as the server
    /// does when it authenticates them.
    pub fn with_default_realm(default_realm: Option<String>) -> Self {
        Sessions {
            default_realm,
            ..Self::default()
        }
    }

    /// Builds the projection from a stream of events, in log order.
    pub fn from_events<I, E>(events: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Borrow<AccessAcct>,
    {
        let mut sessions = Sessions::new();
        for e in events {
            sessions.apply(e.borrow());
        }
        sessions
    }

    /// Applies one accounting record.
    pub fn apply(&mut self, acct: &AccessAcct) {
        match acct.status {
            AcctStatus::AccountingOn | AcctStatus::AccountingOff => self.close_nas(acct),
            AcctStatus::Stop => {
                let key = SessionKey::of(acct);
                self.close(&key, acct.event_time);
            }
            AcctStatus::Start => {
                let key = SessionKey::of(acct);
                // A Start always opens: an Acct-Session-Id may be reused after a reboot.
                self.closed.remove(&key);
                self.upsert(key, acct);
            }
            AcctStatus::InterimUpdate => {
                let key = SessionKey::of(acct);
                if !self.closed.contains_key(&key) {
                    self.upsert(key, acct);
                }
            }
        }
    }

    fn upsert(&mut self, key: SessionKey, acct: &AccessAcct) {
        let user = acct
            .user
            .as_deref()
            .map(|u| normalize_user(u, self.default_realm.as_deref()))
            .unwrap_or_default();
        match self.open.get_mut(&key) {
            Some(s) => {
                // Records may arrive out of order (a retransmission after a newer
                // interim): never move counters or time backwards.
                if acct.event_time >= s.updated_at {
                    s.updated_at = acct.event_time;
                    s.session_time = acct.session_time.or(s.session_time);
                    s.input_octets = acct.input_octets.or(s.input_octets);
                    s.output_octets = acct.output_octets.or(s.output_octets);
                    s.framed_ip = acct.framed_ip.clone().or(s.framed_ip.take());
                }
                if acct.status == AcctStatus::Start {
                    s.started_at = acct.event_time;
                }
            }
            None => {
                *self.per_user.entry(user.clone()).or_default() += 1;
                let started_at = match acct.status {
                    AcctStatus::Start => acct.event_time,
                    // An interim says how long it has been up.
                    _ => {
                        acct.event_time
                            - chrono::Duration::seconds(i64::from(acct.session_time.unwrap_or(0)))
                    }
                };
                self.open.insert(
                    key,
                    Session {
                        nas_ip: acct.nas_ip.clone(),
                        session_id: acct.session_id.clone(),
                        user,
                        nas_identifier: acct.nas_identifier.clone(),
                        nas_port: acct.nas_port,
                        framed_ip: acct.framed_ip.clone(),
                        calling_station_id: acct.calling_station_id.clone(),
                        started_at,
                        updated_at: acct.event_time,
                        session_time: acct.session_time,
                        input_octets: acct.input_octets,
                        output_octets: acct.output_octets,
                    },
                );
            }
        }
    }

    fn close(&mut self, key: &SessionKey, at: DateTime<Utc>) {
        if let Some(s) = self.open.remove(key) {
            if let Some(n) = self.per_user.get_mut(&s.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&s.user);
                }
            }
        }
        self.closed.insert(key.clone(), at);
    }

    fn close_nas(&mut self, acct: &AccessAcct) {
        let keys: Vec<SessionKey> = self
            .open
            .keys()
            .filter(|k| k.nas_ip == acct.nas_ip)
            .cloned()
            .collect();
        for key in keys {
            self.close(&key, acct.event_time);
        }
    }

    /// The open sessions, by NAS then session id.
    pub fn active(&self) -> Vec<&Session> {
        let mut keys: Vec<&SessionKey> = self.open.keys().collect();
        keys.sort();
        keys.into_iter().filter_map(|k| self.open.get(k)).collect()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// How many sessions `user` has open (a User-Name or an address, normalized the same
    /// way).
    pub fn count_for(&self, user: &str) -> u32 {
        let user = normalize_user(user, self.default_realm.as_deref());
        self.per_user.get(&user).copied().unwrap_or(0)
    }

    /// Forgets open sessions with no record since `cutoff` (their Stop was lost), and
    /// closed ones older than it. Keeps memory bounded in a long-running server.
    pub fn expire(&mut self, cutoff: DateTime<Utc>) {
        let stale: Vec<SessionKey> = self
            .open
            .iter()
            .filter(|(_, s)| s.updated_at < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.close(&key, cutoff);
        }
        self.closed.retain(|_, at| *at >= cutoff);
    }
}

/// A user's use of the access network in one calendar month (UTC).
///
/// The counters of `access.acct` are cumulative per session, so each record adds what
/// grew since the highest value seen before it in that session, and that growth is
/// counted in the month of the record's event time. A session spanning a month edge is
/// therefore split at its records: what an Interim-Update on 31 October reports goes to
/// October, the growth reported by the next record on 1 November goes to November. The
/// split is as fine as the NAS's interim interval. Taking growth over the running
/// maximum also makes duplicates and out-of-order records harmless (a counter that
/// resets inside a session undercounts instead of double-counting).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// The normalized user.
    pub user: String,
    /// The year.
    pub year: i32,
    /// The month, 1–12.
    pub month: u32,
    /// Sessions with at least one record in the month.
    pub sessions: u64,
    /// Seconds online in the month (growth of Acct-Session-Time).
    pub time_online_seconds: u64,
    /// Octets from the user (Acct-Input-Octets with Gigawords).
    pub input_octets: u64,
    /// Octets to the user (Acct-Output-Octets with Gigawords).
    pub output_octets: u64,
}

impl Usage {
    /// The usage of `user` (an address, or a User-Name as the NAS sent it) in
    /// `year`-`month`, from `access.acct` events in log order. Pass every event from
    /// before the month's start that may belong to a session still open then (in
    /// practice: from the month's start minus the longest session), so that growth is
    /// measured from the right base.
    pub fn for_user_month<I, E>(events: I, user: &str, year: i32, month: u32) -> Usage
    where
        I: IntoIterator<Item = E>,
        E: Borrow<AccessAcct>,
    {
        let mut builder = UsageBuilder::new(user, None, year, month);
        for e in events {
            builder.add(e.borrow());
        }
        builder.finish()
    }
}

#[derive(Debug, Default)]
struct Running {
    time: u64,
    input: u64,
    output: u64,
    first_at: Option<DateTime<Utc>>,
}

/// Computes a [`Usage`] one event at a time, for streams too long to collect.
#[derive(Debug)]
pub struct UsageBuilder {
    usage: Usage,
    default_realm: Option<String>,
    running: HashMap<SessionKey, Running>,
    in_month: HashSet<SessionKey>,
}

impl UsageBuilder {
    /// Starts the report of `user` for `year`-`month`; `default_realm` normalizes bare
    /// User-Names in the records and in `user`.
    pub fn new(user: &str, default_realm: Option<&str>, year: i32, month: u32) -> Self {
        UsageBuilder {
            usage: Usage {
                user: normalize_user(user, default_realm),
                year,
                month,
                ..Usage::default()
            },
            default_realm: default_realm.map(str::to_owned),
            running: HashMap::new(),
            in_month: HashSet::new(),
        }
    }

    /// Adds one record; records of other users and NAS-wide ones are skipped.
    pub fn add(&mut self, acct: &AccessAcct) {
        let Some(user) = &acct.user else { return };
        if matches!(
            acct.status,
            AcctStatus::AccountingOn | AcctStatus::AccountingOff
        ) || normalize_user(user, self.default_realm.as_deref()) != self.usage.user
        {
            return;
        }
        let key = SessionKey::of(acct);
        let running = self.running.entry(key.clone()).or_default();
        let first_at = *running.first_at.get_or_insert(acct.event_time);
        // Without Acct-Session-Time, the time since the session's first record.
        let time = match acct.session_time {
            Some(t) => u64::from(t),
            None => u64::try_from((acct.event_time - first_at).num_seconds()).unwrap_or(0),
        };
        let grow = |seen: &mut u64, now: Option<u64>| -> u64 {
            match now {
                Some(now) if now > *seen => {
                    let delta = now - *seen;
                    *seen = now;
                    delta
                }
                _ => 0,
            }
        };
        let dt = grow(&mut running.time, Some(time));
        let di = grow(&mut running.input, acct.input_octets);
        let d_o = grow(&mut running.output, acct.output_octets);
        if acct.event_time.year() == self.usage.year && acct.event_time.month() == self.usage.month
        {
            self.usage.time_online_seconds += dt;
            self.usage.input_octets += di;
            self.usage.output_octets += d_o;
            if self.in_month.insert(key) {
                self.usage.sessions += 1;
            }
        }
    }

    /// The report.
    pub fn finish(self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn acct(
        status: AcctStatus,
        nas: &str,
        session: &str,
        user: &str,
        at: DateTime<Utc>,
    ) -> AccessAcct {
        AccessAcct {
            status,
            nas_ip: nas.into(),
            nas_identifier: None,
            nas_port: Some(1),
            user: (!user.is_empty()).then(|| user.into()),
            session_id: (!session.is_empty()).then(|| session.into()),
            framed_ip: None,
            calling_station_id: None,
            session_time: None,
            input_octets: None,
            output_octets: None,
            input_packets: None,
            output_packets: None,
            terminate_cause: None,
            event_time: at,
        }
    }

    fn t(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 10, d, h, 0, 0).unwrap()
    }

    #[test]
    fn start_interim_stop() {
        let mut s = Sessions::with_default_realm(Some("example.org".into()));
        s.apply(&acct(AcctStatus::Start, "10.0.0.1", "a", "alice", t(1, 0)));
        s.apply(&acct(AcctStatus::Start, "10.0.0.1", "a", "alice", t(1, 0))); // retransmission
        s.apply(&acct(
            AcctStatus::Start,
            "10.0.0.2",
            "a",
            "Alice@Example.org",
            t(1, 1),
        ));
        assert_eq!(s.count_for("alice@example.org"), 2);
        assert_eq!(s.count_for("alice"), 2);
        let mut interim = acct(AcctStatus::InterimUpdate, "10.0.0.1", "a", "alice", t(1, 2));
        interim.input_octets = Some(5 << 32);
        s.apply(&interim);
        assert_eq!(s.active()[0].input_octets, Some(5 << 32));
        s.apply(&acct(AcctStatus::Stop, "10.0.0.1", "a", "alice", t(1, 3)));
        assert_eq!(s.count_for("alice"), 1);
        // A late interim of the stopped session does not reopen it.
        s.apply(&interim);
        assert_eq!(s.count_for("alice"), 1);
        assert_eq!(s.len(), 1);
        // A Start with a reused id does.
        s.apply(&acct(AcctStatus::Start, "10.0.0.1", "a", "alice", t(2, 0)));
        assert_eq!(s.count_for("alice"), 2);
    }

    #[test]
    fn accounting_on_closes_every_session_of_that_nas() {
        let mut s = Sessions::new();
        for (i, user) in ["a@x", "b@x", "c@x"].iter().enumerate() {
            s.apply(&acct(
                AcctStatus::Start,
                "10.0.0.1",
                &i.to_string(),
                user,
                t(1, 0),
            ));
        }
        s.apply(&acct(AcctStatus::Start, "10.0.0.9", "z", "a@x", t(1, 0)));
        assert_eq!(s.len(), 4);
        s.apply(&acct(AcctStatus::AccountingOn, "10.0.0.1", "", "", t(1, 5)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.count_for("a@x"), 1);
        assert_eq!(s.count_for("b@x"), 0);
        assert_eq!(s.active()[0].nas_ip, "10.0.0.9");
        s.apply(&acct(
            AcctStatus::AccountingOff,
            "10.0.0.9",
            "",
            "",
            t(1, 6),
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn interim_without_start_opens_and_expire_forgets() {
        let mut s = Sessions::new();
        let mut i = acct(AcctStatus::InterimUpdate, "n", "s", "u@x", t(3, 12));
        i.session_time = Some(3600);
        s.apply(&i);
        assert_eq!(s.active()[0].started_at, t(3, 11));
        s.expire(t(3, 13));
        assert!(s.is_empty());
        assert_eq!(s.count_for("u@x"), 0);
    }

    #[test]
    fn usage_splits_at_month_edges_and_ignores_duplicates() {
        let mut events = Vec::new();
        let oct31 = Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap();
        let nov1 = Utc.with_ymd_and_hms(2026, 11, 1, 1, 0, 0).unwrap();
        events.push(acct(AcctStatus::Start, "n", "s1", "alice@x", oct31));
        let mut interim = acct(
            AcctStatus::InterimUpdate,
            "n",
            "s1",
            "alice@x",
            oct31 + chrono::Duration::minutes(30),
        );
        interim.session_time = Some(1800);
        interim.input_octets = Some(1000);
        interim.output_octets = Some((1u64 << 32) + 10);
        events.push(interim.clone());
        events.push(interim); // a retransmission that got a new id: still counted once
        let mut stop = acct(AcctStatus::Stop, "n", "s1", "alice@x", nov1);
        stop.session_time = Some(7200);
        stop.input_octets = Some(5000);
        stop.output_octets = Some((1u64 << 32) + 110);
        events.push(stop);
        let mut other = acct(AcctStatus::Stop, "n", "s2", "bob@x", nov1);
        other.input_octets = Some(1 << 40);
        events.push(other);

        let oct = Usage::for_user_month(&events, "alice@x", 2026, 10);
        assert_eq!(
            (
                oct.sessions,
                oct.time_online_seconds,
                oct.input_octets,
                oct.output_octets
            ),
            (1, 1800, 1000, (1 << 32) + 10)
        );
        let nov = Usage::for_user_month(&events, "ALICE@x", 2026, 11);
        assert_eq!(
            (
                nov.sessions,
                nov.time_online_seconds,
                nov.input_octets,
                nov.output_octets
            ),
            (1, 5400, 4000, 100)
        );
        let mut b = UsageBuilder::new("alice", Some("x"), 2026, 11);
        events.iter().for_each(|e| b.add(e));
        assert_eq!(b.finish(), nov);
    }
}
