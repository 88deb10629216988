//! The MIME path: what the score stage and the rbl stage do with a raw message.
//! mail-parser as pampa-stages calls it, the rule engine's message view through the
//! built-in default rule set (`Score::examine`), the classifier's tokenizer and a trained
//! classifier's probability, the verdict, and the rbl stage's link extraction (with a
//! resolver that answers "not listed" at once).
#![no_main]

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use libfuzzer_sys::fuzz_target;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use pampa_schemas::{BlobRef, ClientInfo, MailAnalysis, MailReceived};
use pampa_stages::{
    classifier::{self, Classifier},
    rbl::{Answer, ListConfig, ListKind, Rbl, RblConfig, Resolve},
    rules::RuleSet,
    score::{Score, ScoreConfig},
    Body, Stage,
};

const HAM: &[u8] = b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: lunch\r\n\r\nShall we meet at noon at the usual place?\r\n";
const SPAM: &[u8] = b"From: winner@lottery.example\r\nTo: bob@example.net\r\nSubject: You WON $1,000,000\r\nContent-Type: text/html\r\n\r\n<html><a href=\"http://claim.example.com/x\">CLAIM NOW</a> viagra free money</html>\r\n";

struct NotListed;

impl Resolve for NotListed {
    async fn lookup_a(&self, _name: &str) -> Answer {
        Answer::NotListed
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    score: Score,
    rbl: Rbl<NotListed>,
    analysis: MailAnalysis,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = ScoreConfig::default();
        let (rules, _report) = pampa_stages::score::load_rules(&config).expect("default rules");
        let mut model = Classifier::new().with_min_messages(1, 1);
        model.train(HAM, false);
        model.train(SPAM, true);
        let score = Score::with_parts(&config, Arc::new(rules), Some(Arc::new(model)));
        let rbl = runtime.block_on(async {
            Rbl::with_resolver(
                RblConfig {
                    timeout_ms: 50,
                    lists: vec![
                        ListConfig::new("zen.example", ListKind::Ip),
                        ListConfig::new("dbl.example", ListKind::Uri),
                    ],
                    ..RblConfig::default()
                },
                NotListed,
            )
            .expect("rbl config")
        });
        let analysis = MailAnalysis::start(MailReceived {
            message_id: "fuzz".into(),
            client: ClientInfo {
                ip: "192.0.2.7".into(),
                helo: "client.example".into(),
                tls: false,
            },
            mail_from: "a@example.org".into(),
            recipients: vec!["b@example.net".into()],
            blob: BlobRef {
                key: "fuzz".into(),
                size: 0,
                sha256: String::new(),
            },
            header_message_id: None,
            received_by: "mx.example.net".into(),
            received_at: Utc::now(),
            levels: Vec::new(),
        });
        Fixture {
            runtime,
            score,
            rbl,
            analysis,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();

    // The classifier's tokenizer.
    let tokens = classifier::tokenize(data);
    let _ = classifier::tokenize(classifier::strip_mbox_from(data));
    let _ = tokens;

    // The score stage: the default rules over the message view, the classifier, and the
    // verdict; what `Score::process` does without the bus.
    let scored = f.score.score(&f.analysis, data);
    assert!(scored.verdict.score.is_finite());
    if let Some(p) = scored.probability {
        assert!((0.0..=1.0).contains(&p), "probability {p}");
    }

    // The rbl stage's link extraction from the body.
    let body = Body::new(data.to_vec());
    let _ = f.runtime.block_on(f.rbl.process(&f.analysis, &body));

    // mail-parser directly, as the rbl stage calls it: walk every part. (After pampa's
    // own calls, so a crash inside mail-parser shows which pampa path reaches it.)
    // Through the stages' own guarded entry (pampa_stages::mime), as the stages parse.
    if let Some(message) = pampa_stages::mime::parse(&MessageParser::new().with_mime_headers(), data) {
        for part in message.parts.iter() {
            let _ = part.content_type();
            let _ = part.attachment_name();
            match &part.body {
                PartType::Text(t) | PartType::Html(t) => {
                    let _ = t.len();
                }
                PartType::Binary(b) | PartType::InlineBinary(b) => {
                    let _ = b.len();
                }
                PartType::Message(m) => {
                    let _ = m.subject();
                }
                PartType::Multipart(children) => {
                    let _ = children.len();
                }
            }
        }
        let _ = message.subject();
        let _ = message.from();
        let _ = message.body_text(0);
        let _ = message.body_html(0);
    }
    let _ = MessageParser::new().parse_headers(data);

    // An empty rule set must not hit anything.
    static EMPTY: OnceLock<RuleSet> = OnceLock::new();
    let empty = EMPTY.get_or_init(|| RuleSet::from_text("", std::path::Path::new("<none>")).0);
    assert!(empty.check(data).is_empty());
});
