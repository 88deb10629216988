//! `pampa train`: trains the statistical classifier from folders of ham and spam and
//! writes the model file that `stages.score.classifier` names.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use pampa_stages::classifier::{strip_mbox_from, Classifier, MIN_MESSAGES};

#[derive(Args)]
pub struct TrainArgs {
    /// A folder of ham (good mail), one raw message per file, read recursively
    /// (Maildir folders work). May be given more than once.
    #[arg(long, value_name = "DIR", required = true)]
    ham: Vec<PathBuf>,
    /// A folder of spam, one raw message per file, read recursively. May be given more
    /// than once.
    #[arg(long, value_name = "DIR", required = true)]
    spam: Vec<PathBuf>,
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

pub fn train(args: &TrainArgs) -> Result<()> {
    let mut model = if args.update && args.out.exists() {
        Classifier::load(&args.out)?
    } else {
        Classifier::new()
    };
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
    model.save(&args.out)?;
    let (ham_total, spam_total) = model.message_counts();
    println!(
        "Trained {} ham and {} spam messages in {:.1?}.",
        ham.len(),
        spam.len(),
        started.elapsed()
    );
    println!(
        "The model at {} has {ham_total} ham and {spam_total} spam messages and {} tokens.",
        args.out.display(),
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
