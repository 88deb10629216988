//! Subject names and the headers that let tools route events without decoding them.

/// The stream of mail events.
pub const MAIL_STREAM: &str = "MAIL";
/// Subjects held by [`MAIL_STREAM`].
pub const MAIL_SUBJECTS: &str = "mail.>";
/// The stream of access (RADIUS) events.
pub const ACCESS_STREAM: &str = "ACCESS";
/// Subjects held by [`ACCESS_STREAM`].
pub const ACCESS_SUBJECTS: &str = "access.>";
/// The stream of DNS query events.
pub const DNS_STREAM: &str = "DNS";
/// Subjects held by [`DNS_STREAM`].
pub const DNS_SUBJECTS: &str = "dns.>";
/// The stream of dead letters: inputs a stage gave up on.
pub const DEAD_STREAM: &str = "DEAD";
/// Subjects held by [`DEAD_STREAM`].
pub const DEAD_SUBJECTS: &str = "dead.>";

/// Every stream and the subjects it holds.
pub const STREAMS: [(&str, &str); 4] = [
    (MAIL_STREAM, MAIL_SUBJECTS),
    (ACCESS_STREAM, ACCESS_SUBJECTS),
    (DNS_STREAM, DNS_SUBJECTS),
    (DEAD_STREAM, DEAD_SUBJECTS),
];

/// The subject a stage's dead letters go to.
pub fn dead_letter(stage: &str) -> String {
    format!("dead.{stage}")
}

/// Header: the event id, which JetStream deduplicates on.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header: the event type.
pub const HEADER_EVENT_TYPE: &str = "Event-Type";
/// Header: the payload's schema version.
pub const HEADER_SCHEMA_VERSION: &str = "Schema-Version";
/// Header: the correlation id (root message, session or query).
pub const HEADER_CORRELATION_ID: &str = "Correlation-Id";
/// Header on a dead letter: why the stage gave up.
pub const HEADER_DEAD_REASON: &str = "Dead-Reason";
/// Header on a dead letter: the subject the input came from, so a retry can re-queue it.
pub const HEADER_DEAD_SUBJECT: &str = "Dead-Subject";
/// Header on a re-queued dead letter: tells idempotent consumers to check for earlier work.
pub const HEADER_RETRY: &str = "Pampa-Retry";

/// Does `subject` match the NATS filter `filter` (`*` one token, `>` the rest)?
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn filters_match_like_nats() {
        assert!(matches("mail.>", "mail.received"));
        assert!(matches("mail.>", "mail.a.b"));
        assert!(!matches("mail.>", "mail"));
        assert!(matches("mail.*", "mail.received"));
        assert!(!matches("mail.*", "mail.a.b"));
        assert!(matches("mail.received", "mail.received"));
        assert!(!matches("mail.received", "mail.delivered"));
        assert!(!matches("dead.deliver", "dead.deliver.x"));
    }
}
