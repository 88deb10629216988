//! What the stages find and what `score` decides, and the pure disposition function
//! that the live pipeline and `pampa replay` share.
//!
//! Message-level and recipient-level facts are kept apart: one scan serves every
//! recipient, and each recipient still gets a verdict of its own.

use serde::{Deserialize, Serialize};

use crate::{Event, MailReceived};

/// A finding with its evidence, such as `RBL_ZEN` (evidence: `127.0.0.2 from zen.example`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    /// Upper-case name; `VIRUS:<signature>` for a virus.
    pub name: String,
    /// What the stage saw, for humans and audits.
    #[serde(default)]
    pub evidence: String,
    /// A weight the stage itself assigns (an RBL's weight per return code). Without one,
    /// `score` takes the weight from its configuration.
    #[serde(default)]
    pub weight: Option<f64>,
}

impl Tag {
    /// A tag with evidence and no weight of its own.
    pub fn new(name: impl Into<String>, evidence: impl Into<String>) -> Self {
        Tag {
            name: name.into(),
            evidence: evidence.into(),
            weight: None,
        }
    }

    /// Whether this tag names a virus.
    pub fn is_virus(&self) -> bool {
        self.name.starts_with(VIRUS_PREFIX)
    }
}

/// Prefix of virus tags: `VIRUS:Eicar-Test-Signature`.
pub const VIRUS_PREFIX: &str = "VIRUS:";
/// The sender is on the recipient's allow list.
pub const WL_USER: &str = "WL_USER";
/// The sender is on the global allow list.
pub const WL_GLOBAL: &str = "WL_GLOBAL";
/// The sender is in the recipient's address book.
pub const WL_ADDRESS_BOOK: &str = "WL_ADDRESS_BOOK";
/// The sender is on the recipient's block list.
pub const BL_USER: &str = "BL_USER";
/// The sender is on the global block list.
pub const BL_GLOBAL: &str = "BL_GLOBAL";

/// A spam level as it was when the message arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSnapshot {
    /// Its name (`strict`, `normal`, …).
    pub name: String,
    /// From this score mail goes to Spam; `None`: never.
    pub cut: Option<f64>,
    /// From this score mail is discarded; `None`: never.
    pub discard: Option<f64>,
}

/// Where one recipient's copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// The inbox.
    Inbox,
    /// The `.Spam` folder.
    Spam,
    /// The `.Quarantine` folder (viruses).
    Quarantine,
    /// Nowhere; the event log keeps the message until retention ends.
    Discard,
}

impl Disposition {
    /// The Maildir++ folder name, or `None` for a discard.
    pub fn folder(self) -> Option<&'static str> {
        match self {
            Disposition::Inbox => Some("INBOX"),
            Disposition::Spam => Some("Spam"),
            Disposition::Quarantine => Some("Quarantine"),
            Disposition::Discard => None,
        }
    }

    /// Lower-case name, for tables and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Inbox => "inbox",
            Disposition::Spam => "spam",
            Disposition::Quarantine => "quarantine",
            Disposition::Discard => "discard",
        }
    }
}

/// A disposition and the rule that chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Where the copy goes.
    pub disposition: Disposition,
    /// Why, in words (`virus Eicar-Test-Signature`, `score 6.0 >= cut 5.0 of normal`).
    pub reason: String,
}

/// The rule that decides a copy, over any representation of tags.
enum Rule<T> {
    Virus(T),
    Block(T),
    Allow(T),
    Discard(f64),
    Cut(f64),
    Below,
}

/// The product's promise, in order: a virus is quarantined; a blocked sender is
/// discarded; an allowed sender goes to the inbox; otherwise the score against the
/// level's cut and discard decides. `tags` are the message's tags, then the recipient's.
fn rule<'a, T: Copy + 'a>(
    mut tags: impl Iterator<Item = T> + Clone,
    name: impl Fn(T) -> &'a str,
    score: f64,
    level: &LevelSnapshot,
) -> Rule<T> {
    if let Some(virus) = tags.clone().find(|t| name(*t).starts_with(VIRUS_PREFIX)) {
        return Rule::Virus(virus);
    }
    if let Some(block) = tags
        .clone()
        .find(|t| [BL_USER, BL_GLOBAL].contains(&name(*t)))
    {
        return Rule::Block(block);
    }
    if let Some(allow) = tags.find(|t| [WL_USER, WL_GLOBAL, WL_ADDRESS_BOOK].contains(&name(*t))) {
        return Rule::Allow(allow);
    }
    if let Some(discard) = level.discard.filter(|d| score >= *d) {
        return Rule::Discard(discard);
    }
    if let Some(cut) = level.cut.filter(|c| score >= *c) {
        return Rule::Cut(cut);
    }
    Rule::Below
}

impl<T> Rule<T> {
    fn disposition(&self) -> Disposition {
        match self {
            Rule::Virus(_) => Disposition::Quarantine,
            Rule::Block(_) | Rule::Discard(_) => Disposition::Discard,
            Rule::Allow(_) | Rule::Below => Disposition::Inbox,
            Rule::Cut(_) => Disposition::Spam,
        }
    }
}

/// Decides one recipient's disposition. Pure: the live `score` stage and `pampa replay`
/// call this same rule (replay through [`disposition`], which skips the words). The
/// order is the product's promise: a virus is quarantined; a blocked sender is
/// discarded; an allowed sender goes to the inbox; otherwise the score against the
/// level's cut and discard decides.
pub fn decide(
    message_tags: &[Tag],
    recipient_tags: &[Tag],
    score: f64,
    level: &LevelSnapshot,
) -> Decision {
    let tags = message_tags.iter().chain(recipient_tags);
    let chosen = rule(tags, |t: &Tag| t.name.as_str(), score, level);
    let disposition = chosen.disposition();
    let reason = match chosen {
        Rule::Virus(virus) => format!("virus {}", &virus.name[VIRUS_PREFIX.len()..]),
        Rule::Block(tag) | Rule::Allow(tag) => format!("{} ({})", tag.name, tag.evidence),
        Rule::Discard(discard) => {
            format!("score {score:.1} >= discard {discard:.1} of {}", level.name)
        }
        Rule::Cut(cut) => format!("score {score:.1} >= cut {cut:.1} of {}", level.name),
        Rule::Below => format!("score {score:.1} below the cut of {}", level.name),
    };
    Decision {
        disposition,
        reason,
    }
}

/// [`decide`]'s disposition without its reason, from tag names alone (the message's,
/// then the recipient's): what a replay over millions of decisions needs, with no
/// allocation.
pub fn disposition<'a>(
    tag_names: impl Iterator<Item = &'a str> + Clone,
    score: f64,
    level: &LevelSnapshot,
) -> Disposition {
    rule(tag_names, |name| name, score, level).disposition()
}

/// One recipient's part of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientAnalysis {
    /// The recipient.
    pub address: String,
    /// Tags about this recipient only (lists, address book).
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The recipient's level when the message arrived.
    #[serde(default)]
    pub level: Option<LevelSnapshot>,
    /// Set by `score`.
    #[serde(default)]
    pub decision: Option<Decision>,
}

/// A message on its way through the stages: what ingest received, plus every finding.
/// Each stage's output carries everything its input had, so `mail.scored` is
/// self-contained and replay needs no lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailAnalysis {
    /// What ingest recorded.
    pub received: MailReceived,
    /// Tags about the message (RBL, URIBL, virus, rule hits).
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// One entry per recipient, in the order of `received.recipients`.
    #[serde(default)]
    pub recipients: Vec<RecipientAnalysis>,
    /// The message score, set by `score`.
    #[serde(default)]
    pub score: Option<f64>,
    /// The stages this analysis went through, in order.
    #[serde(default)]
    pub stages: Vec<String>,
}

impl MailAnalysis {
    /// A fresh analysis of a received message, with each recipient's level as ingest
    /// recorded it.
    pub fn start(received: MailReceived) -> Self {
        let recipients = received
            .recipients
            .iter()
            .map(|address| RecipientAnalysis {
                address: address.clone(),
                tags: Vec::new(),
                level: received
                    .levels
                    .iter()
                    .find(|l| &l.address == address)
                    .map(|l| l.level.clone()),
                decision: None,
            })
            .collect();
        MailAnalysis {
            received,
            tags: Vec::new(),
            recipients,
            score: None,
            stages: Vec::new(),
        }
    }
}

/// Decodes the input of a stage or of deliver: a `mail.received` (which starts a fresh
/// analysis) or an earlier stage's analysis. Returns the envelope head too, for deriving
/// the next event from it.
pub fn decode_analysis(
    bytes: &[u8],
) -> Result<(crate::EnvelopeHead, MailAnalysis), crate::CodecError> {
    let head = crate::decode_head(bytes)?;
    let analysis = if MailReceived::is_event_type(&head.event_type) {
        MailAnalysis::start(crate::decode::<MailReceived>(bytes)?.payload)
    } else {
        crate::decode::<MailAnalysis>(bytes)?.payload
    };
    Ok((head, analysis))
}

/// The event types an analysis travels as: one per stage, named after it, and
/// [`RECOVERED_EVENT_TYPE`].
pub const ANALYSIS_EVENT_TYPES: [&str; 8] = [
    "mail.rbl",
    "mail.whitelist",
    "mail.antivirus",
    "mail.auth",
    "mail.scored",
    RECOVERED_EVENT_TYPE,
    OUTBOUND_ANTIVIRUS_EVENT_TYPE,
    OUTBOUND_EVENT_TYPE,
];

/// `mail.outbound_antivirus`: submitted mail after the outbound virus scan.
pub const OUTBOUND_ANTIVIRUS_EVENT_TYPE: &str = "mail.outbound_antivirus";

/// `mail.outbound`: submitted mail after the outbound checks, scored; the relay's input.
pub const OUTBOUND_EVENT_TYPE: &str = "mail.outbound";

/// `mail.recovered`: an operator asked for a discarded or quarantined copy to be
/// delivered to the inbox after all (`pampa recover`). It is the scored analysis with
/// only that recipient, whose decision is now the inbox, so deliver handles it as any
/// other analysis.
pub const RECOVERED_EVENT_TYPE: &str = "mail.recovered";

impl Event for MailAnalysis {
    /// The final form; the intermediate ones are in [`ANALYSIS_EVENT_TYPES`].
    const EVENT_TYPE: &'static str = "mail.scored";
    const SCHEMA_VERSION: u16 = 1;

    fn is_event_type(event_type: &str) -> bool {
        ANALYSIS_EVENT_TYPES.contains(&event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(cut: Option<f64>, discard: Option<f64>) -> LevelSnapshot {
        LevelSnapshot {
            name: "normal".into(),
            cut,
            discard,
        }
    }

    #[test]
    fn the_order_is_virus_block_allow_then_score() {
        let normal = level(Some(5.0), Some(12.0));
        let virus = Tag::new("VIRUS:Eicar-Test-Signature", "clamd");
        let block = Tag::new(BL_USER, "spam@x");
        let allow = Tag::new(WL_ADDRESS_BOOK, "friend@x");
        assert_eq!(
            decide(&[virus.clone()], &[allow.clone()], 0.0, &normal).disposition,
            Disposition::Quarantine
        );
        assert_eq!(
            decide(&[], &[block.clone(), allow.clone()], 0.0, &normal).disposition,
            Disposition::Discard
        );
        assert_eq!(
            decide(&[], &[allow], 50.0, &normal).disposition,
            Disposition::Inbox
        );
        assert_eq!(
            decide(&[], &[], 4.9, &normal).disposition,
            Disposition::Inbox
        );
        assert_eq!(
            decide(&[], &[], 5.0, &normal).disposition,
            Disposition::Spam
        );
        assert_eq!(
            decide(&[], &[], 11.9, &normal).disposition,
            Disposition::Spam
        );
        assert_eq!(
            decide(&[], &[], 12.0, &normal).disposition,
            Disposition::Discard
        );
        let d = decide(&[], &[block], 0.0, &normal);
        assert!(
            d.reason.contains("BL_USER") && d.reason.contains("spam@x"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_off_level_never_files_as_spam() {
        let off = level(None, None);
        assert_eq!(
            decide(&[], &[], 1000.0, &off).disposition,
            Disposition::Inbox
        );
        let virus = Tag::new("VIRUS:X", "");
        assert_eq!(
            decide(&[virus], &[], 0.0, &off).disposition,
            Disposition::Quarantine
        );
    }

    #[test]
    fn disposition_agrees_with_decide_everywhere() {
        let tags = [
            Tag::new("VIRUS:X", ""),
            Tag::new(BL_GLOBAL, ""),
            Tag::new(WL_USER, ""),
            Tag::new("RULE", ""),
        ];
        let levels = [
            level(Some(5.0), Some(12.0)),
            level(Some(3.0), None),
            level(None, None),
        ];
        for mask in 0..16u32 {
            let chosen: Vec<Tag> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| tags[i].clone())
                .collect();
            let (message, recipient) = chosen.split_at(chosen.len() / 2);
            for level in &levels {
                for score in [-2.0, 0.0, 3.0, 4.99, 5.0, 11.0, 12.0, 40.0] {
                    let names = message.iter().chain(recipient).map(|t| t.name.as_str());
                    assert_eq!(
                        disposition(names, score, level),
                        decide(message, recipient, score, level).disposition,
                        "{chosen:?} {score} {level:?}"
                    );
                }
            }
        }
    }
}
