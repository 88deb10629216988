//! Sending rates, with governor (GCRA): messages and recipients an hour per user (each
//! user may have their own limits in the directory), and messages an hour per client
//! IP whoever authenticates. A limit reached answers `451 4.7.1`; the session reports it
//! as an event.
//!
//! The state is per process and in memory, like the MX's guards: a user spread over
//! several submission processes gets each process's budget, which the operator sizes
//! for.

use std::{collections::HashMap, net::IpAddr, num::NonZeroU32, sync::Mutex};

use governor::{
    clock::DefaultClock,
    state::{keyed::HashMapStateStore, InMemoryState, NotKeyed},
    Quota, RateLimiter,
};

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// Which limit was reached: the `limit` label and the event's field. The names are
/// the configuration keys', hence the shared suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum Limit {
    /// The user's messages an hour.
    MessagesPerHour,
    /// The user's recipients an hour.
    RecipientsPerHour,
    /// The client IP's messages an hour.
    IpMessagesPerHour,
}

impl Limit {
    /// The name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MessagesPerHour => "messages_per_hour",
            Limit::RecipientsPerHour => "recipients_per_hour",
            Limit::IpMessagesPerHour => "ip_messages_per_hour",
        }
    }
}

/// One user's two budgets, built for the limits they had when last seen.
struct UserBudget {
    limits: (u32, u32),
    messages: Option<Direct>,
    recipients: Option<Direct>,
}

fn per_hour(n: u32) -> Option<Direct> {
    NonZeroU32::new(n).map(|n| RateLimiter::direct(Quota::per_hour(n)))
}

/// The budgets of every user and IP seen.
pub(crate) struct SendingRates {
    users: Mutex<HashMap<String, UserBudget>>,
    ips: Option<RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>>,
}

impl SendingRates {
    pub(crate) fn new(ip_messages_per_hour: u32) -> Self {
        SendingRates {
            users: Mutex::new(HashMap::new()),
            ips: NonZeroU32::new(ip_messages_per_hour)
                .map(|n| RateLimiter::hashmap(Quota::per_hour(n))),
        }
    }

    fn with_user<T>(&self, user: &str, limits: (u32, u32), f: impl FnOnce(&UserBudget) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let budget = users.entry(user.to_owned()).or_insert_with(|| UserBudget {
            limits,
            messages: per_hour(limits.0),
            recipients: per_hour(limits.1),
        });
        // The operator changed the user's limits: start them on the new ones.
        if budget.limits != limits {
            *budget = UserBudget {
                limits,
                messages: per_hour(limits.0),
                recipients: per_hour(limits.1),
            };
        }
        f(budget)
    }

    /// Takes one message from the user's and the IP's budgets; the limit reached if
    /// either is spent. `limits` are (messages, recipients) an hour; 0 is no limit.
    pub(crate) fn take_message(
        &self,
        user: &str,
        ip: IpAddr,
        limits: (u32, u32),
    ) -> Result<(), Limit> {
        let user_ok = self.with_user(user, limits, |b| {
            b.messages.as_ref().is_none_or(|l| l.check().is_ok())
        });
        if !user_ok {
            return Err(Limit::MessagesPerHour);
        }
        if let Some(ips) = &self.ips {
            if ips.check_key(&ip).is_err() {
                return Err(Limit::IpMessagesPerHour);
            }
        }
        Ok(())
    }

    /// Takes one recipient from the user's budget.
    pub(crate) fn take_recipient(&self, user: &str, limits: (u32, u32)) -> Result<(), Limit> {
        let ok = self.with_user(user, limits, |b| {
            b.recipients.as_ref().is_none_or(|l| l.check().is_ok())
        });
        ok.then_some(()).ok_or(Limit::RecipientsPerHour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_their_own_budget_and_new_limits_apply() {
        let rates = SendingRates::new(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(rates.take_message("a@x", ip, (2, 10)).is_ok());
        assert!(rates.take_message("a@x", ip, (2, 10)).is_ok());
        assert_eq!(
            rates.take_message("a@x", ip, (2, 10)),
            Err(Limit::MessagesPerHour)
        );
        assert!(
            rates.take_message("b@x", ip, (2, 10)).is_ok(),
            "b has their own"
        );
        assert!(
            rates.take_message("a@x", ip, (5, 10)).is_ok(),
            "raised limit applies"
        );
        assert!(
            rates.take_message("c@x", ip, (0, 0)).is_ok(),
            "0 is no limit"
        );
    }

    #[test]
    fn recipients_and_ip_budgets_are_counted() {
        let rates = SendingRates::new(1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(rates.take_recipient("a@x", (10, 1)).is_ok());
        assert_eq!(
            rates.take_recipient("a@x", (10, 1)),
            Err(Limit::RecipientsPerHour)
        );
        assert!(rates.take_message("a@x", ip, (10, 1)).is_ok());
        assert_eq!(
            rates.take_message("b@x", ip, (10, 1)),
            Err(Limit::IpMessagesPerHour)
        );
    }
}
