//! Authoritative zones: loading RFC 1035 master files, and answering from them.
//!
//! The parser is hickory-proto's (`serialize::txt::Parser`). The lookup is written here
//! rather than taken from hickory-server's in-memory authority because the server needs
//! to know, per answer, exactly what kind of answer it is (positive, referral, NODATA,
//! NXDOMAIN, CNAME chain) for its metrics and query events, and answers synchronously on
//! the receive path with no task or future per query.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, Record, RecordType},
    serialize::txt::Parser,
};

use crate::{config::ZoneConfig, DnsError};

/// Most CNAMEs followed inside one zone before answering with what was found.
const MAX_CNAME_HOPS: usize = 8;

/// What a zone (or a DNSBL zone) says about a question.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) rcode: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
}

impl Answer {
    pub(crate) fn new(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            authoritative: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// The RRsets at one owner name.
#[derive(Debug, Default)]
struct Node {
    rrsets: Vec<(RecordType, Arc<[Record]>)>,
}

impl Node {
    fn get(&self, rtype: RecordType) -> Option<&Arc<[Record]>> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, set)| set)
    }
}

/// One authoritative zone, loaded and checked.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    file: PathBuf,
    serial: u32,
    /// The apex SOA with its TTL already set to the negative-caching TTL
    /// (min(SOA TTL, MINIMUM), RFC 2308 §3).
    negative_soa: Record,
    nodes: HashMap<Name, Node>,
    /// Names with no records that have descendants that do (RFC 8020: they exist, so
    /// NODATA, not NXDOMAIN).
    empty_non_terminals: HashSet<Name>,
    /// Names below the apex with NS records: delegations.
    cuts: HashSet<Name>,
    has_wildcards: bool,
    records: usize,
}

impl Zone {
    /// Reads and checks the zone file of `config`. The error names the file, and for a
    /// syntax error the line.
    pub fn load(config: &ZoneConfig) -> Result<Zone, DnsError> {
        let text = std::fs::read_to_string(&config.file).map_err(|source| DnsError::ZoneRead {
            path: config.file.clone(),
            source,
        })?;
        Self::parse(&config.name, &config.file, &text)
    }

    /// Parses a zone from text; `file` is for messages and `$INCLUDE`.
    pub fn parse(name: &str, file: &Path, text: &str) -> Result<Zone, DnsError> {
        let err = |line: Option<usize>, message: String| DnsError::Zone {
            zone: name.to_owned(),
            path: file.to_path_buf(),
            line,
            message,
        };
        let mut origin = Name::from_str(name)
            .map_err(|e| err(None, format!("{name:?} is not a domain name: {e}")))?;
        origin.set_fqdn(true);
        let parse = |text: &str| {
            Parser::new(
                text.to_owned(),
                Some(file.to_path_buf()),
                Some(origin.clone()),
            )
            .parse()
        };
        let (_, rrsets) = match parse(text) {
            Ok(r) => r,
            Err(e) => return Err(err(error_line(text, parse), e.to_string())),
        };

        let mut by_name: HashMap<Name, Vec<(RecordType, Vec<Record>)>> = HashMap::new();
        let mut records = 0;
        for (_, set) in rrsets {
            for record in set.records_without_rrsigs() {
                if record.dns_class != DNSClass::IN {
                    return Err(err(
                        None,
                        format!(
                            "{} {}: only class IN is served",
                            record.name,
                            record.record_type()
                        ),
                    ));
                }
                if !origin.zone_of(&record.name) {
                    return Err(err(
                        None,
                        format!(
                            "{} {} is outside the zone",
                            record.name,
                            record.record_type()
                        ),
                    ));
                }
                let rtype = record.record_type();
                let sets = by_name.entry(record.name.clone()).or_default();
                match sets.iter_mut().find(|(t, _)| *t == rtype) {
                    Some((_, v)) => v.push(record.clone()),
                    None => sets.push((rtype, vec![record.clone()])),
                }
                records += 1;
            }
        }

        let soa = by_name
            .get(&origin)
            .and_then(|sets| sets.iter().find(|(t, _)| *t == RecordType::SOA))
            .and_then(|(_, v)| (v.len() == 1).then(|| v[0].clone()))
            .ok_or_else(|| err(None, "the apex needs exactly one SOA record".to_owned()))?;
        let RData::SOA(soa_data) = &soa.data else {
            return Err(err(None, "the apex SOA has no SOA data".to_owned()));
        };
        let serial = soa_data.serial;
        let mut negative_soa = soa.clone();
        negative_soa.ttl = soa.ttl.min(soa_data.minimum);

        let mut nodes = HashMap::with_capacity(by_name.len());
        let mut cuts = HashSet::new();
        let mut has_wildcards = false;
        for (owner, sets) in by_name {
            if sets.len() > 1 && sets.iter().any(|(t, _)| *t == RecordType::CNAME) {
                return Err(err(None, format!("{owner} has a CNAME and other data")));
            }
            if sets
                .iter()
                .any(|(t, v)| *t == RecordType::CNAME && v.len() > 1)
            {
                return Err(err(None, format!("{owner} has more than one CNAME")));
            }
            if owner != origin && sets.iter().any(|(t, _)| *t == RecordType::NS) {
                cuts.insert(owner.clone());
            }
            has_wildcards |= owner.is_wildcard();
            let node = Node {
                rrsets: sets
                    .into_iter()
                    .map(|(t, v)| (t, Arc::<[Record]>::from(v)))
                    .collect(),
            };
            nodes.insert(owner, node);
        }
        let origin_labels = label_count(&origin);
        let mut empty_non_terminals = HashSet::new();
        for owner in nodes.keys() {
            for n in origin_labels + 1..label_count(owner) {
                let ancestor = owner.trim_to(n);
                if !nodes.contains_key(&ancestor) {
                    empty_non_terminals.insert(ancestor);
                }
            }
        }

        Ok(Zone {
            origin,
            file: file.to_path_buf(),
            serial,
            negative_soa,
            nodes,
            empty_non_terminals,
            cuts,
            has_wildcards,
            records,
        })
    }

    /// The zone's apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// How many records it holds.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Answers `qname`/`qtype`, which must lie in this zone. `any_in_full` lets an ANY
    /// query see every RRset (over TCP); otherwise ANY gets one RRset (RFC 8482).
    pub(crate) fn lookup(&self, qname: &Name, qtype: RecordType, any_in_full: bool) -> Answer {
        let mut answer = Answer::new(ResponseCode::NoError);
        let mut name = qname.clone();
        for _ in 0..MAX_CNAME_HOPS {
            if let Some(cut) = self.delegation(&name, qtype) {
                self.referral(&cut, &mut answer);
                return answer;
            }
            let (node, synthesized) = match self.nodes.get(&name) {
                Some(node) => (node, false),
                None if self.empty_non_terminals.contains(&name) => {
                    answer.authorities.push(self.negative_soa.clone());
                    return answer;
                }
                None => match self.wildcard(&name) {
                    Some(node) => (node, true),
                    None => {
                        answer.rcode = ResponseCode::NXDomain;
                        answer.authorities.push(self.negative_soa.clone());
                        return answer;
                    }
                },
            };
            let owned = |set: &[Record]| -> Vec<Record> {
                set.iter()
                    .map(|r| {
                        let mut r = r.clone();
                        if synthesized {
                            r.name = name.clone();
                        }
                        r
                    })
                    .collect()
            };
            if qtype == RecordType::ANY {
                let sets = node.rrsets.iter();
                if any_in_full {
                    for (_, set) in sets {
                        answer.answers.extend(owned(set));
                    }
                } else if let Some((_, set)) = node
                    .rrsets
                    .iter()
                    .find(|(t, _)| *t != RecordType::SOA && *t != RecordType::NS)
                    .or_else(|| node.rrsets.first())
                {
                    answer.answers.extend(owned(set));
                }
                return answer;
            }
            if let Some(set) = node.get(qtype) {
                let records = owned(set);
                self.add_additionals(&records, &mut answer.additionals);
                answer.answers.extend(records);
                return answer;
            }
            if let Some(cname) = node.get(RecordType::CNAME) {
                let records = owned(cname);
                let target = match records.first().map(|r| &r.data) {
                    Some(RData::CNAME(target)) => target.0.clone(),
                    _ => return answer,
                };
                answer.answers.extend(records);
                if !self.origin.zone_of(&target) {
                    // The resolver follows it from here.
                    return answer;
                }
                name = target;
                continue;
            }
            answer.authorities.push(self.negative_soa.clone());
            return answer;
        }
        answer
    }

    /// The delegation point at or above `name`, if the name is below a zone cut. A DS
    /// query for the cut itself belongs to the parent side (RFC 4035 §3.1.4.1).
    fn delegation(&self, name: &Name, qtype: RecordType) -> Option<Name> {
        if self.cuts.is_empty() {
            return None;
        }
        let labels = label_count(name);
        for n in label_count(&self.origin) + 1..=labels {
            let ancestor = name.trim_to(n);
            if self.cuts.contains(&ancestor) {
                if n == labels && qtype == RecordType::DS {
                    return None;
                }
                return Some(ancestor);
            }
        }
        None
    }

    fn referral(&self, cut: &Name, answer: &mut Answer) {
        // A referral is not authoritative data, unless a CNAME above led here.
        answer.authoritative = !answer.answers.is_empty();
        if let Some(ns) = self.nodes.get(cut).and_then(|n| n.get(RecordType::NS)) {
            answer.authorities.extend(ns.iter().cloned());
            // Glue, which lives below the cut and so is only ever served as this.
            for record in ns.iter() {
                if let RData::NS(target) = &record.data {
                    self.addresses_of(&target.0, &mut answer.additionals);
                }
            }
        }
    }

    /// The wildcard node that synthesizes `name` (RFC 4592 §3.3.1): `*` under the
    /// closest existing ancestor.
    fn wildcard(&self, name: &Name) -> Option<&Node> {
        if !self.has_wildcards {
            return None;
        }
        let origin_labels = label_count(&self.origin);
        for n in (origin_labels..label_count(name)).rev() {
            let ancestor = name.trim_to(n);
            if n == origin_labels
                || self.nodes.contains_key(&ancestor)
                || self.empty_non_terminals.contains(&ancestor)
            {
                return ancestor
                    .prepend_label("*")
                    .ok()
                    .and_then(|w| self.nodes.get(&w));
            }
        }
        None
    }

    /// In-zone addresses of the names MX, SRV and NS records point to, so the client
    /// need not ask again.
    fn add_additionals(&self, records: &[Record], additionals: &mut Vec<Record>) {
        for record in records {
            let target = match &record.data {
                RData::MX(mx) => &mx.exchange,
                RData::SRV(srv) => &srv.target,
                RData::NS(ns) => &ns.0,
                _ => continue,
            };
            self.addresses_of(target, additionals);
        }
    }

    fn addresses_of(&self, target: &Name, additionals: &mut Vec<Record>) {
        if !self.origin.zone_of(target) {
            return;
        }
        if let Some(node) = self.nodes.get(target) {
            for rtype in [RecordType::A, RecordType::AAAA] {
                if let Some(set) = node.get(rtype) {
                    for r in set.iter() {
                        if !additionals.contains(r) {
                            additionals.push(r.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Labels in `name`, a leading `*` included (hickory's `num_labels` leaves it out, as
/// RRSIG label counts do).
pub(crate) fn label_count(name: &Name) -> usize {
    name.iter().count()
}

/// Places a parse error: the first line of the first record whose addition makes the
/// text stop parsing. hickory's parser does not report positions, so this re-parses
/// prefixes that end between records (outside parentheses), by bisection.
fn error_line<T, E>(text: &str, parse: impl Fn(&str) -> Result<T, E>) -> Option<usize> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut bounds = vec![0usize];
    let mut depth = 0i32;
    for (i, line) in lines.iter().enumerate() {
        depth = (depth + paren_delta(line)).max(0);
        if depth == 0 {
            bounds.push(i + 1);
        }
    }
    if *bounds.last()? != lines.len() {
        bounds.push(lines.len());
    }
    let fails = |b: usize| parse(&lines[..b].concat()).is_err();
    // bounds[lo] parses, bounds[hi] fails.
    let (mut lo, mut hi) = (0usize, bounds.len() - 1);
    if !fails(bounds[hi]) {
        return None;
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fails(bounds[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The failing group may start with blank or comment lines: skip them.
    let mut line = bounds[lo];
    while line + 1 < bounds[hi] && is_blank(lines[line]) {
        line += 1;
    }
    Some(line + 1)
}

fn is_blank(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with(';')
}

/// Opening minus closing parentheses on a line, outside quotes and comments.
fn paren_delta(line: &str) -> i32 {
    let mut delta = 0;
    let mut quoted = false;
    let mut escaped = false;
    for c in line.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => break,
            '(' if !quoted => delta += 1,
            ')' if !quoted => delta -= 1,
            _ => {}
        }
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "$TTL 300
@   IN SOA ns1 hostmaster ( 2024010101 3600 600 86400
        60 )
    IN NS ns1
    IN MX 10 mail
ns1 IN A 192.0.2.1
mail IN A 192.0.2.2
www IN CNAME web
web IN A 192.0.2.3
a.b.c IN TXT \"deep\"
*.wild IN A 192.0.2.9
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
";

    fn zone() -> Zone {
        Zone::parse("example.net", Path::new("/tmp/example.net.zone"), ZONE).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn answers_nodata_nxdomain_and_chases_cnames() {
        let z = zone();
        let a = z.lookup(&n("www.example.net."), RecordType::A, false);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);

        let mx = z.lookup(&n("example.net."), RecordType::MX, false);
        assert_eq!(mx.answers.len(), 1);
        assert_eq!(mx.additionals.len(), 1, "the MX target's address is added");

        let nodata = z.lookup(&n("web.example.net."), RecordType::AAAA, false);
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(nodata.authorities[0].ttl, 60, "min(SOA TTL, MINIMUM)");

        let ent = z.lookup(&n("b.c.example.net."), RecordType::A, false);
        assert_eq!(
            ent.rcode,
            ResponseCode::NoError,
            "an empty non-terminal exists"
        );

        let nx = z.lookup(&n("nope.example.net."), RecordType::A, false);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authorities.len(), 1);
    }

    #[test]
    fn wildcards_and_referrals() {
        let z = zone();
        let w = z.lookup(&n("x.y.wild.example.net."), RecordType::A, false);
        assert_eq!(w.answers.len(), 1);
        assert_eq!(w.answers[0].name, n("x.y.wild.example.net."));

        let r = z.lookup(&n("host.sub.example.net."), RecordType::A, false);
        assert!(!r.authoritative);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::NS);
        assert_eq!(r.additionals.len(), 1, "glue");
    }

    #[test]
    fn errors_name_the_line() {
        let bad = ZONE.replace("web IN A 192.0.2.3", "web IN A 192.0.2.300");
        let e = Zone::parse("example.net", Path::new("/z"), &bad).unwrap_err();
        match e {
            DnsError::Zone { line, .. } => assert_eq!(line, Some(9)),
            other => panic!("{other}"),
        }
        let outside = format!("{ZONE}other.org. IN A 192.0.2.1\n");
        assert!(Zone::parse("example.net", Path::new("/z"), &outside).is_err());
        let no_soa = "@ IN NS ns1\n";
        assert!(Zone::parse("example.net", Path::new("/z"), no_soa).is_err());
    }
}
