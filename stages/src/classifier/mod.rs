//! The statistical classifier: naive Bayes over message tokens, in the manner of
//! SpamAssassin's Bayes and SpamBayes (Graham's idea, Robinson's token probabilities and
//! chi-squared combining).
//!
//! The model is a count per token of the ham and the spam messages it appeared in, plus
//! the number of messages of each class. [`Classifier::probability`] turns a message into
//! a spam probability; [`bayes_tag`] turns that into the band tag (`BAYES_00` …
//! `BAYES_99`) that `score` weighs like any rule hit, so the classifier stays one signal
//! among many.
//!
//! # Training
//! `pampa train --ham DIR --spam DIR --out MODEL` trains from folders. Training from user
//! feedback later uses the very same [`Classifier::train`] call, one message at a time:
//! a message the user moves out of Spam is trained as ham (`is_spam = false`), one moved
//! into Spam as spam. If that message had already been trained the other way (an
//! auto-learn, or a user changing their mind), call [`Classifier::forget`] with the old
//! label first, so it is not counted twice.
//!
//! # File format
//! One MessagePack map (`rmp_serde::to_vec_named`, so field names are written and a
//! reader skips fields it does not know):
//! `{format: "pampa-bayes", version: 1, ham_messages: u32, spam_messages: u32,
//! tokens: [[token, ham_count, spam_count], …]}`, with the tokens sorted so equal
//! models give equal files. A reader checks `format` and `version` before anything else;
//! a change of meaning bumps [`FORMAT_VERSION`].

mod tokenize;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use tokenize::{strip_mbox_from, tokenize, Tokens, MAX_RAW_BYTES, MAX_TEXT_BYTES};

/// The `format` field of a model file.
pub const FORMAT_NAME: &str = "pampa-bayes";
/// The version of the model file format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Below this many messages of either class the classifier does not answer, like
/// SpamAssassin's `bayes_min_ham_num` / `bayes_min_spam_num`: with fewer, its
/// probabilities are noise.
pub const MIN_MESSAGES: u32 = 50;

/// Robinson's strength of the prior (`s`): how many messages' worth of evidence the
/// unknown-token probability is worth. SpamBayes' tuned default.
const PRIOR_STRENGTH: f64 = 0.45;
/// Robinson's prior probability (`x`) of a token seen too rarely to judge.
const PRIOR_PROBABILITY: f64 = 0.5;
/// A token whose probability is closer than this to 0.5 says nothing and is left out
/// (SpamBayes' `minimum_prob_strength`).
const MIN_STRENGTH: f64 = 0.1;
/// At most this many of the most telling tokens are combined (SpamAssassin's
/// `N_SIGNIFICANT_TOKENS`), so a long message does not drown the score in weak evidence.
const MAX_CLUES: usize = 150;

/// What can go wrong loading or saving a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifierError {
    /// The model file could not be read.
    #[error("cannot read the model {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model file could not be written.
    #[error("cannot write the model {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a model, or is damaged.
    #[error("{path} is not a pampa classifier model: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What did not decode.
        reason: String,
    },
    /// The model was written by a version of pampa with another file format.
    #[error(
        "the model {path} has format version {found}, and this pampa reads version {supported}"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u16,
        /// The version this code reads.
        supported: u16,
    },
    /// The model could not be encoded.
    #[error("cannot encode the model: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// How many messages of each class a token appeared in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Ham messages.
    pub ham: u32,
    /// Spam messages.
    pub spam: u32,
}

/// A naive Bayes spam classifier: token counts and message counts.
#[derive(Debug, Clone)]
pub struct Classifier {
    ham_messages: u32,
    spam_messages: u32,
    tokens: HashMap<String, TokenCounts>,
    min_ham: u32,
    min_spam: u32,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new()
    }
}

impl Classifier {
    /// An empty model that answers once it has [`MIN_MESSAGES`] of each class.
    pub fn new() -> Self {
        Classifier {
            ham_messages: 0,
            spam_messages: 0,
            tokens: HashMap::new(),
            min_ham: MIN_MESSAGES,
            min_spam: MIN_MESSAGES,
        }
    }

    /// Sets how many ham and spam messages the model needs before it answers. Not
    /// stored in the model file: it is a policy of the reader, not a fact of the data.
    pub fn with_min_messages(mut self, ham: u32, spam: u32) -> Self {
        self.min_ham = ham;
        self.min_spam = spam;
        self
    }

    /// The number of ham and spam messages trained.
    pub fn message_counts(&self) -> (u32, u32) {
        (self.ham_messages, self.spam_messages)
    }

    /// The number of distinct tokens in the model.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// The counts of one token, if the model has seen it.
    pub fn token(&self, token: &str) -> Option<TokenCounts> {
        self.tokens.get(token).copied()
    }

    /// Learns one raw RFC 5322 message (a leading mbox `From ` line is skipped) as spam
    /// or ham. Used alike by `pampa train` and by training from user feedback.
    pub fn train(&mut self, raw: &[u8], is_spam: bool) {
        self.train_tokens(&tokenize(raw), is_spam);
    }

    /// Learns a message already tokenized with [`tokenize`], so a caller that scores and
    /// trains the same message (or cross-validates) tokenizes it once.
    pub fn train_tokens(&mut self, tokens: &Tokens, is_spam: bool) {
        bump(if is_spam {
            &mut self.spam_messages
        } else {
            &mut self.ham_messages
        });
        for token in tokens {
            // Not `entry`: it would allocate a key for every token already known, and
            // most are.
            if let Some(counts) = self.tokens.get_mut(token.as_str()) {
                bump(if is_spam {
                    &mut counts.spam
                } else {
                    &mut counts.ham
                });
            } else {
                let counts = if is_spam {
                    TokenCounts { ham: 0, spam: 1 }
                } else {
                    TokenCounts { ham: 1, spam: 0 }
                };
                self.tokens.insert(token.clone(), counts);
            }
        }
    }

    /// Unlearns a message trained earlier with the same label, so a relabelled message
    /// (auto-learnt as spam, then moved out of Spam by its user) can be trained again
    /// the right way. Counts never go below zero, so forgetting a message that was never
    /// trained does no harm beyond blurring the counts a little.
    pub fn forget(&mut self, raw: &[u8], was_spam: bool) {
        self.forget_tokens(&tokenize(raw), was_spam);
    }

    /// [`Classifier::forget`] for a message already tokenized.
    pub fn forget_tokens(&mut self, tokens: &Tokens, was_spam: bool) {
        let messages = if was_spam {
            &mut self.spam_messages
        } else {
            &mut self.ham_messages
        };
        *messages = messages.saturating_sub(1);
        for token in tokens {
            if let Some(counts) = self.tokens.get_mut(token.as_str()) {
                let count = if was_spam {
                    &mut counts.spam
                } else {
                    &mut counts.ham
                };
                *count = count.saturating_sub(1);
                if counts.ham == 0 && counts.spam == 0 {
                    self.tokens.remove(token.as_str());
                }
            }
        }
    }

    /// Whether the model has seen enough messages of both classes to answer.
    pub fn is_ready(&self) -> bool {
        self.ham_messages >= self.min_ham && self.spam_messages >= self.min_spam
    }

    /// The probability, from 0 to 1, that a raw message is spam; `None` while the model
    /// has too few messages of either class (see [`Classifier::with_min_messages`]).
    pub fn probability(&self, raw: &[u8]) -> Option<f64> {
        if !self.is_ready() {
            return None;
        }
        self.probability_of_tokens(&tokenize(raw))
    }

    /// [`Classifier::probability`] for a message already tokenized.
    pub fn probability_of_tokens(&self, tokens: &Tokens) -> Option<f64> {
        if !self.is_ready() {
            return None;
        }
        let mut clues: Vec<(f64, &str)> = tokens
            .iter()
            .filter_map(|t| {
                let p = self.token_probability(self.tokens.get(t.as_str())?);
                ((p - 0.5).abs() >= MIN_STRENGTH).then_some((p, t.as_str()))
            })
            .collect();
        // Strongest first; the token breaks ties so the answer does not depend on the
        // hash set's order.
        clues.sort_by(|a, b| {
            (b.0 - 0.5)
                .abs()
                .total_cmp(&(a.0 - 0.5).abs())
                .then_with(|| a.1.cmp(b.1))
        });
        clues.truncate(MAX_CLUES);
        Some(chi_squared_combine(clues.iter().map(|c| c.0)))
    }

    /// Robinson's f(w): the share of spam among the messages with this token, corrected
    /// for the class sizes and pulled towards 0.5 when the token is rare.
    fn token_probability(&self, counts: &TokenCounts) -> f64 {
        let ham_ratio = f64::from(counts.ham) / f64::from(self.ham_messages.max(1));
        let spam_ratio = f64::from(counts.spam) / f64::from(self.spam_messages.max(1));
        if ham_ratio + spam_ratio == 0.0 {
            return PRIOR_PROBABILITY;
        }
        let p = spam_ratio / (ham_ratio + spam_ratio);
        let n = f64::from(counts.ham) + f64::from(counts.spam);
        (PRIOR_STRENGTH * PRIOR_PROBABILITY + n * p) / (PRIOR_STRENGTH + n)
    }

    /// The model as the bytes of a model file (see the module's doc for the format).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ClassifierError> {
        let mut tokens: Vec<(&str, u32, u32)> = self
            .tokens
            .iter()
            .map(|(t, c)| (t.as_str(), c.ham, c.spam))
            .collect();
        tokens.sort_unstable();
        let file = ModelFile {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            ham_messages: self.ham_messages,
            spam_messages: self.spam_messages,
            tokens,
        };
        Ok(rmp_serde::to_vec_named(&file)?)
    }

    /// Writes the model to `path`. It writes a temporary file beside it and renames it,
    /// so a reader (a running `score` stage) never sees half a model.
    pub fn save(&self, path: &Path) -> Result<(), ClassifierError> {
        let bytes = self.to_bytes()?;
        let write_error = |source| ClassifierError::Write {
            path: path.to_owned(),
            source,
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            // Best effort: the error that matters is the write's, reported below.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_error)
    }

    /// Reads a model written by [`Classifier::save`].
    pub fn load(path: &Path) -> Result<Self, ClassifierError> {
        let bytes = std::fs::read(path).map_err(|source| ClassifierError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Decodes the bytes of a model file; `path` only names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ClassifierError> {
        let format_error = |reason: String| ClassifierError::Format {
            path: path.to_owned(),
            reason,
        };
        // One pass when the file decodes as this version's model. The header alone is
        // decoded only to say why a file does not (a future version may change the rest
        // beyond decoding): decoding it first walks the whole token list an extra time,
        // a third of the load.
        let file: OwnedModelFile = match rmp_serde::from_slice(bytes) {
            Ok(file) => file,
            Err(full) => {
                let header: ModelHeader =
                    rmp_serde::from_slice(bytes).map_err(|e| format_error(e.to_string()))?;
                check_header(&header.format, header.version, path)?;
                return Err(format_error(full.to_string()));
            }
        };
        check_header(&file.format, file.version, path)?;
        let tokens = file
            .tokens
            .into_iter()
            .map(|(token, ham, spam)| (token, TokenCounts { ham, spam }))
            .collect();
        Ok(Classifier {
            ham_messages: file.ham_messages,
            spam_messages: file.spam_messages,
            tokens,
            ..Classifier::new()
        })
    }
}

/// Refuses a file of another format or version.
fn check_header(format: &str, version: u16, path: &Path) -> Result<(), ClassifierError> {
    if format != FORMAT_NAME {
        return Err(ClassifierError::Format {
            path: path.to_owned(),
            reason: format!("its format is {format:?}, not {FORMAT_NAME:?}"),
        });
    }
    if version != FORMAT_VERSION {
        return Err(ClassifierError::Version {
            path: path.to_owned(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Adds one, saturating: a count stuck at 4 billion still says what it must.
fn bump(count: &mut u32) {
    *count = count.saturating_add(1);
}

#[derive(Serialize)]
struct ModelFile<'a> {
    format: String,
    version: u16,
    ham_messages: u32,
    spam_messages: u32,
    tokens: Vec<(&'a str, u32, u32)>,
}

#[derive(Deserialize)]
struct ModelHeader {
    format: String,
    version: u16,
}

#[derive(Deserialize)]
struct OwnedModelFile {
    format: String,
    version: u16,
    ham_messages: u32,
    spam_messages: u32,
    tokens: Vec<(String, u32, u32)>,
}

/// Fisher's method as Robinson applied it to spam: how unlikely the token probabilities
/// are if the message were ham (`S`) and if it were spam (`H`), combined into
/// `(1 + S - H) / 2`. Unlike a plain product it says "unsure" (near 0.5) when the
/// evidence points both ways, instead of swinging to 0 or 1. No clues: 0.5.
pub fn chi_squared_combine(probabilities: impl IntoIterator<Item = f64>) -> f64 {
    let mut n = 0usize;
    let mut ln_spam = 0.0;
    let mut ln_ham = 0.0;
    for p in probabilities {
        // f(w) is never exactly 0 or 1 while the prior has weight; the clamp guards the
        // logarithms against a caller's extreme values.
        let p = p.clamp(1e-9, 1.0 - 1e-9);
        ln_spam += p.ln();
        ln_ham += (1.0 - p).ln();
        n += 1;
    }
    if n == 0 {
        return 0.5;
    }
    let spamminess = 1.0 - chi2_q(-2.0 * ln_ham, 2 * n);
    let hamminess = 1.0 - chi2_q(-2.0 * ln_spam, 2 * n);
    ((1.0 + spamminess - hamminess) / 2.0).clamp(0.0, 1.0)
}

/// The chi-squared survival function Q(x² | v) for even `v`, summed in log space so
/// the large x² of a long, clear-cut message does not underflow to 0.
fn chi2_q(x2: f64, v: usize) -> f64 {
    let m = x2 / 2.0;
    if m <= 0.0 {
        return 1.0;
    }
    // Q = e^-m · Σ_{i<v/2} m^i / i!
    let ln_m = m.ln();
    let mut ln_term = -m;
    let mut ln_terms = Vec::with_capacity(v / 2);
    ln_terms.push(ln_term);
    for i in 1..v / 2 {
        ln_term += ln_m - (i as f64).ln();
        ln_terms.push(ln_term);
    }
    let max = ln_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = ln_terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// SpamAssassin's Bayes bands, as (lower bound, tag), from the top. Each band holds
/// `lower <= p < upper`; the top one includes 1.0.
const BANDS: [(f64, &str); 9] = [
    (0.99, "BAYES_99"),
    (0.95, "BAYES_95"),
    (0.80, "BAYES_80"),
    (0.60, "BAYES_60"),
    (0.40, "BAYES_50"),
    (0.20, "BAYES_40"),
    (0.05, "BAYES_20"),
    (0.01, "BAYES_05"),
    (0.0, "BAYES_00"),
];

/// From this probability [`bayes_tags`] adds `BAYES_999` on top of `BAYES_99`, as
/// SpamAssassin does.
pub const BAYES_999_FROM: f64 = 0.999;

/// The band tag of a spam probability, as SpamAssassin names them: `BAYES_00` for
/// 0 ≤ p < 0.01, `BAYES_05` for 0.01 ≤ p < 0.05, then `BAYES_20`, `BAYES_40`, `BAYES_50`,
/// `BAYES_60`, `BAYES_80`, `BAYES_95`, and `BAYES_99` for 0.99 ≤ p ≤ 1. Out-of-range
/// values are clamped; NaN counts as unsure (`BAYES_50`).
pub fn bayes_tag(probability: f64) -> &'static str {
    if probability.is_nan() {
        return "BAYES_50";
    }
    let p = probability.clamp(0.0, 1.0);
    BANDS
        .iter()
        .find(|(lower, _)| p >= *lower)
        .map_or("BAYES_00", |(_, tag)| tag)
}

/// Every tag a probability hits: its band from [`bayes_tag`], plus `BAYES_999` from
/// [`BAYES_999_FROM`] up. In SpamAssassin both `BAYES_99` and `BAYES_999` hit there and
/// their scores add up; rule files written for it expect that.
pub fn bayes_tags(probability: f64) -> &'static [&'static str] {
    match bayes_tag(probability) {
        "BAYES_99" if probability >= BAYES_999_FROM => &["BAYES_99", "BAYES_999"],
        "BAYES_99" => &["BAYES_99"],
        "BAYES_95" => &["BAYES_95"],
        "BAYES_80" => &["BAYES_80"],
        "BAYES_60" => &["BAYES_60"],
        "BAYES_50" => &["BAYES_50"],
        "BAYES_40" => &["BAYES_40"],
        "BAYES_20" => &["BAYES_20"],
        "BAYES_05" => &["BAYES_05"],
        _ => &["BAYES_00"],
    }
}
