//! `pampa train`: trains the statistical classifier from folders of ham and spam and
//! writes the model file that `stages.score.classifier` names.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use pampa_stages::classifier::{strip_mbox_from, Classifier, MIN_MESSAGES};

use crate::config::Config;

mod feedback;

#[derive(Args)]
pub struct TrainArgs {
    /// A folder of ham (good mail), one raw message per file, read recursively
    /// (Maildir folders work). May be given more than once.
    #[arg(long, value_name = "DIR", required_unless_present = "from_feedback")]
    ham: Vec<PathBuf>,
    /// A folder of spam, one raw message per file, read recursively. May be given more
    /// than once.
    #[arg(long, value_name = "DIR", required_unless_present = "from_feedback")]
    spam: Vec<PathBuf>,
    /// Train on the users' verdicts in the event log (`mail.feedback`, from `pampa
    /// feedback` or IMAP moves), reading each message's body from the log. Adds to the
    /// model at MODEL; messages it learned before are not counted twice, and a verdict
    /// that changed is unlearned first.
    #[arg(long)]
    from_feedback: bool,
    /// With --from-feedback: only verdicts given since (`30d`, or an RFC 3339 time).
    /// Default: every verdict the log still holds.
    #[arg(long, value_name = "AGE|TIME", requires = "from_feedback")]
    since: Option<String>,
    /// Where to write the model.
    #[arg(long, value_name = "MODEL")]
    out: PathBuf,
    /// Add to the model already at MODEL (if there is one) instead of starting from an
    /// empty one: how a site trains on more mail later without its old corpus.
    #[arg(long)]
    update: bool,
}

/// How often a long run reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

pub async fn train(config: &Config, args: &TrainArgs) -> Result<()> {
    let mut model = if (args.update || args.from_feedback) && args.out.exists() {
        Classifier::load(&args.out)?
    } else {
        Classifier::new()
    };
    if args.from_feedback {
        feedback::train(config, args.since.as_deref(), &mut model, &args.out).await?;
        if args.ham.is_empty() && args.spam.is_empty() {
            return finish(&model, &args.out);
        }
    }
    let mut ham = Vec::new();
    for dir in &args.ham {
        ham.extend(message_files(dir)?);
    }
    let mut spam = Vec::new();
    for dir in &args.spam {
        spam.extend(message_files(dir)?);
    }
    if ham.is_empty() && spam.is_empty() {
        bail!("found no message files in the --ham and --spam folders");
    }
    train_files(&mut model, &ham, &spam)?;
    finish(&model, &args.out)
}

/// Trains on message files, reporting progress on long runs.
fn train_files(model: &mut Classifier, ham: &[PathBuf], spam: &[PathBuf]) -> Result<()> {
    let total = ham.len() + spam.len();
    let started = Instant::now();
    let mut last_report = started;
    let labelled = ham
        .iter()
        .map(|p| (p, false))
        .chain(spam.iter().map(|p| (p, true)));
    for (done, (path, is_spam)) in labelled.enumerate() {
        let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        // The tokenizer skips the mbox line too; stripping it here keeps what is trained
        // exactly the message, whatever the tokenizer does later.
        model.train(strip_mbox_from(&raw), is_spam);
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            eprintln!("Trained {} of {total} messages…", done + 1);
        }
    }
    println!(
        "Trained {} ham and {} spam messages in {:.1?}.",
        ham.len(),
        spam.len(),
        started.elapsed()
    );
    Ok(())
}

/// Saves the model and says what it holds.
fn finish(model: &Classifier, out: &Path) -> Result<()> {
    model.save(out)?;
    let (ham_total, spam_total) = model.message_counts();
    println!(
        "The model at {} has {ham_total} ham and {spam_total} spam messages and {} tokens.",
        out.display(),
        model.token_count()
    );
    if !model.is_ready() {
        eprintln!(
            "Warning: the classifier answers only once it has {MIN_MESSAGES} messages of each \
             class; until then it adds no BAYES_* tag."
        );
    }
    Ok(())
}

/// Every regular file under `dir`, recursively, sorted so runs are reproducible.
/// Hidden entries are skipped: `.DS_Store` and the like, and a Maildir's `.Spam` and
/// other Maildir++ subfolders, so `--ham ~/Maildir` means the inbox and not the spam
/// beside it. So are a Maildir's `tmp/` (half-delivered messages) and the index files
/// mail servers keep beside `cur/`.
pub(crate) fn message_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || is_mail_server_file(&name) {
                continue;
            }
            // Follows symlinks, as a person pointing at a folder of links would expect.
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if meta.is_dir() {
                if name == "tmp" && path.with_file_name("cur").is_dir() {
                    continue;
                }
                stack.push(path);
            } else if meta.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Bookkeeping files that Dovecot and Courier keep in a Maildir: not messages.
fn is_mail_server_file(name: &str) -> bool {
    name.starts_with("dovecot")
        || name.starts_with("courier")
        || name == "maildirfolder"
        || name == "subscriptions"
}
