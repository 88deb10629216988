//! The classifier on small synthetic messages written for this test: training,
//! persistence, the minimum counts and the band tags. Plus, ignored by default, a 5-fold
//! cross-validation over a labelled corpus on disk (see `cross_validate_corpus`).

use std::path::{Path, PathBuf};

use pampa_stages::classifier::{
    bayes_tag, bayes_tags, tokenize, Classifier, ClassifierError, Tokens, FORMAT_VERSION,
    MIN_MESSAGES,
};

const HAM_WORDS: &[&str] = &[
    "meeting",
    "agenda",
    "review",
    "patch",
    "kernel",
    "thanks",
    "lunch",
    "tomorrow",
    "draft",
    "minutes",
    "release",
    "build",
    "notes",
    "project",
    "schedule",
    "question",
    "attached",
    "regards",
    "colleague",
    "weekend",
];
const SPAM_WORDS: &[&str] = &[
    "viagra",
    "winner",
    "lottery",
    "million",
    "guaranteed",
    "free!!!",
    "casino",
    "mortgage",
    "refinance",
    "unsubscribe",
    "limited",
    "offer",
    "pills",
    "bonus",
    "cash",
    "investment",
    "prize",
    "credit",
    "discount",
    "urgent",
];
const SHARED_WORDS: &[&str] = &["hello", "today", "please", "information", "email", "time"];

/// A deterministic pseudo-random sequence, so the test messages vary without a crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }

    fn words(&mut self, from: &[&str], count: usize) -> Vec<String> {
        (0..count)
            .map(|_| from[self.next(from.len())].to_owned())
            .collect()
    }
}

fn message(rng: &mut Lcg, spam: bool) -> Vec<u8> {
    let (own, domain) = if spam {
        (SPAM_WORDS, "promo-blast.example")
    } else {
        (HAM_WORDS, "work.example")
    };
    let subject = rng.words(own, 3).join(" ");
    let mut body = rng.words(own, 12);
    body.extend(rng.words(SHARED_WORDS, 6));
    let link = if spam {
        "\r\nVisit http://www.deals.promo-blast.example/now\r\n"
    } else {
        "\r\n"
    };
    format!(
        "From: sender@{domain}\r\nTo: you@example.org\r\nSubject: {subject}\r\n\r\n{}{link}",
        body.join(" ")
    )
    .into_bytes()
}

fn trained(ham: usize, spam: usize) -> Classifier {
    let mut rng = Lcg(7);
    let mut model = Classifier::new();
    for _ in 0..ham {
        model.train(&message(&mut rng, false), false);
    }
    for _ in 0..spam {
        model.train(&message(&mut rng, true), true);
    }
    model
}

#[test]
fn a_trained_model_tells_fresh_spam_from_ham() {
    let model = trained(60, 60);
    assert_eq!(model.message_counts(), (60, 60));
    assert!(model.token_count() > 40);
    let mut rng = Lcg(12345);
    for _ in 0..10 {
        let spam = model.probability(&message(&mut rng, true)).expect("ready");
        let ham = model.probability(&message(&mut rng, false)).expect("ready");
        assert!(spam >= 0.99, "spam scored {spam}");
        assert!(ham <= 0.01, "ham scored {ham}");
    }
    // A message with nothing the model knows is unsure.
    let unknown = model
        .probability(b"Subject: zyxw\r\n\r\nqwerty asdfgh zxcvbn\r\n")
        .expect("ready");
    assert!((unknown - 0.5).abs() < 1e-9, "{unknown}");
}

#[test]
fn feedback_training_moves_a_message_towards_its_new_label() {
    let mut model = trained(60, 60);
    // A ham newsletter that talks like spam: the user moves it out of Spam, twice.
    let newsletter = b"From: news@work.example\r\nSubject: limited offer bonus\r\n\r\n\
        limited offer bonus discount meeting agenda\r\n";
    let before = model.probability(newsletter).expect("ready");
    model.train(newsletter, false);
    model.train(newsletter, false);
    let after = model.probability(newsletter).expect("ready");
    assert!(after < before, "{before} -> {after}");
    // Relabelling: forget the old label, learn the new one; counts stay consistent.
    model.forget(newsletter, false);
    model.train(newsletter, true);
    assert_eq!(model.message_counts(), (61, 61));
}

#[test]
fn no_answer_until_enough_messages_of_each_class() {
    let short_of_spam = trained(MIN_MESSAGES as usize, MIN_MESSAGES as usize - 1);
    assert!(!short_of_spam.is_ready());
    assert_eq!(
        short_of_spam.probability(b"Subject: x\r\n\r\ncasino\r\n"),
        None
    );
    let short_of_ham = trained(MIN_MESSAGES as usize - 1, MIN_MESSAGES as usize);
    assert_eq!(
        short_of_ham.probability(b"Subject: x\r\n\r\ncasino\r\n"),
        None
    );
    let enough = trained(MIN_MESSAGES as usize, MIN_MESSAGES as usize);
    assert!(enough
        .probability(b"Subject: x\r\n\r\ncasino\r\n")
        .is_some());
    let lenient = trained(3, 3).with_min_messages(3, 3);
    assert!(lenient
        .probability(b"Subject: x\r\n\r\ncasino\r\n")
        .is_some());
}

#[test]
fn a_saved_model_loads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bayes.model");
    let model = trained(55, 52);
    model.save(&path).expect("save");
    let loaded = Classifier::load(&path).expect("load");
    assert_eq!(loaded.message_counts(), (55, 52));
    assert_eq!(loaded.token_count(), model.token_count());
    let mut rng = Lcg(99);
    for spam in [true, false, true, false] {
        let raw = message(&mut rng, spam);
        assert_eq!(loaded.probability(&raw), model.probability(&raw));
    }
    // Deterministic bytes: the same model saves to the same file.
    assert_eq!(
        std::fs::read(&path).expect("read"),
        loaded.to_bytes().expect("encode")
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("bayes.model")]);
}

#[test]
fn bad_model_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.model");
    let error = Classifier::load(&missing).expect_err("missing");
    assert!(matches!(error, ClassifierError::Read { .. }));
    assert!(error.to_string().contains("missing.model"), "{error}");

    let garbage = dir.path().join("garbage.model");
    std::fs::write(&garbage, b"not a model at all").expect("write");
    let error = Classifier::load(&garbage).expect_err("garbage");
    assert!(matches!(error, ClassifierError::Format { .. }), "{error}");
    assert!(error.to_string().contains("garbage.model"), "{error}");

    #[derive(serde::Serialize)]
    struct Header {
        format: &'static str,
        version: u16,
    }
    let future = dir.path().join("future.model");
    let bytes = rmp_serde::to_vec_named(&Header {
        format: "pampa-bayes",
        version: FORMAT_VERSION + 1,
    })
    .expect("encode");
    std::fs::write(&future, bytes).expect("write");
    let error = Classifier::load(&future).expect_err("future");
    assert!(
        matches!(error, ClassifierError::Version { found, .. } if found == FORMAT_VERSION + 1),
        "{error}"
    );

    let other = dir.path().join("other.model");
    let bytes = rmp_serde::to_vec_named(&Header {
        format: "something-else",
        version: FORMAT_VERSION,
    })
    .expect("encode");
    std::fs::write(&other, bytes).expect("write");
    assert!(matches!(
        Classifier::load(&other),
        Err(ClassifierError::Format { .. })
    ));
}

#[test]
fn probabilities_map_to_spamassassin_bands() {
    let cases = [
        (0.0, "BAYES_00"),
        (0.009, "BAYES_00"),
        (0.01, "BAYES_05"),
        (0.049, "BAYES_05"),
        (0.05, "BAYES_20"),
        (0.2, "BAYES_40"),
        (0.4, "BAYES_50"),
        (0.5, "BAYES_50"),
        (0.6, "BAYES_60"),
        (0.8, "BAYES_80"),
        (0.95, "BAYES_95"),
        (0.989, "BAYES_95"),
        (0.99, "BAYES_99"),
        (0.9995, "BAYES_99"),
        (1.0, "BAYES_99"),
        (1.5, "BAYES_99"),
        (-0.1, "BAYES_00"),
        (f64::NAN, "BAYES_50"),
    ];
    for (p, tag) in cases {
        assert_eq!(bayes_tag(p), tag, "p = {p}");
    }
    assert_eq!(bayes_tags(0.995), ["BAYES_99"]);
    assert_eq!(bayes_tags(0.999), ["BAYES_99", "BAYES_999"]);
    assert_eq!(bayes_tags(1.0), ["BAYES_99", "BAYES_999"]);
    assert_eq!(bayes_tags(0.3), ["BAYES_40"]);
}

/// Every regular file under `dir`, sorted, so fold membership is reproducible.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// 5-fold cross-validation over `$PAMPA_CORPUS/ham` and `$PAMPA_CORPUS/spam`: message
/// `i` (in sorted path order) is in fold `i % 5`; each fold is scored by a model trained
/// on the other four, so no message is scored by a model that saw it. Run with
///
/// ```text
/// PAMPA_CORPUS=../shared/corpus cargo test --release -p pampa-stages --test classifier \
///     -- --ignored --nocapture cross_validate_corpus
/// ```
#[test]
#[ignore = "needs a labelled corpus: set PAMPA_CORPUS"]
fn cross_validate_corpus() {
    const FOLDS: usize = 5;
    let Some(root) = std::env::var_os("PAMPA_CORPUS").map(PathBuf::from) else {
        eprintln!("PAMPA_CORPUS is not set; nothing to do");
        return;
    };
    let started = std::time::Instant::now();
    let load = |class: &str, spam: bool| -> Vec<(Tokens, bool)> {
        files(&root.join(class))
            .iter()
            .map(|path| {
                let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                (tokenize(&raw), spam)
            })
            .collect()
    };
    let ham = load("ham", false);
    let spam = load("spam", true);
    let tokenized = started.elapsed();
    let folded = |set: &[(Tokens, bool)]| -> Vec<(usize, Tokens, bool)> {
        set.iter()
            .enumerate()
            .map(|(i, (t, s))| (i % FOLDS, t.clone(), *s))
            .collect()
    };
    let mut all = folded(&ham);
    all.extend(folded(&spam));
    // (probability or None, is spam) for every message, each scored out of fold.
    let mut scored: Vec<(Option<f64>, bool)> = Vec::new();
    for fold in 0..FOLDS {
        let mut model = Classifier::new();
        for (f, tokens, is_spam) in &all {
            if *f != fold {
                model.train_tokens(tokens, *is_spam);
            }
        }
        for (f, tokens, is_spam) in &all {
            if *f == fold {
                scored.push((model.probability_of_tokens(tokens), *is_spam));
            }
        }
    }
    let n_ham = scored.iter().filter(|s| !s.1).count();
    let n_spam = scored.len() - n_ham;
    eprintln!(
        "{} ham, {} spam, {FOLDS} folds; tokenized in {:.1?}, total {:.1?}",
        n_ham,
        n_spam,
        tokenized,
        started.elapsed()
    );
    eprintln!("{:>9} {:>12} {:>12}", "p >=", "spam caught", "ham FP");
    for threshold in [0.5, 0.8, 0.9, 0.95, 0.99, 0.999] {
        let hit = |want_spam: bool| {
            scored
                .iter()
                .filter(|(p, s)| *s == want_spam && p.is_some_and(|p| p >= threshold))
                .count()
        };
        eprintln!(
            "{threshold:>9} {:>11.2}% {:>11.2}%",
            100.0 * hit(true) as f64 / n_spam as f64,
            100.0 * hit(false) as f64 / n_ham as f64
        );
    }
    eprintln!("bands (ham / spam):");
    for tag in [
        "BAYES_00", "BAYES_05", "BAYES_20", "BAYES_40", "BAYES_50", "BAYES_60", "BAYES_80",
        "BAYES_95", "BAYES_99",
    ] {
        let count = |want_spam: bool| {
            scored
                .iter()
                .filter(|(p, s)| *s == want_spam && p.is_some_and(|p| bayes_tag(p) == tag))
                .count()
        };
        eprintln!("  {tag}: {:>5} / {:>5}", count(false), count(true));
    }
    assert!(
        scored.iter().all(|(p, _)| p.is_some()),
        "every fold trains enough"
    );
}
