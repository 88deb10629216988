//! Maildir++ quota (the `maildirsize` file that Dovecot and Courier also keep): the
//! first line is the limit (`314572800S`), each further line a change in bytes and
//! messages (`4096 1`). The sum of the lines is the mailbox's use, so a delivery costs
//! one appended line instead of a walk over every file.
//!
//! The file is a cache: when it is missing, or was written for another limit, it is
//! rebuilt from the folders. Two deliveries at once can both pass the check and go a
//! little over, as in every Maildir++ implementation; the next one is refused.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::Path,
};

/// The file's name in the Maildir root.
const FILE: &str = "maildirsize";

/// Past this size the file is rebuilt (Maildir++ says 5120 bytes), so it stays quick to
/// read.
const REBUILD_ABOVE: u64 = 5120;

/// The storage limit a `maildirsize` header line states: `314572800S`, or with a
/// message limit as Dovecot and Courier may write it, `314572800S,10000C`.
fn header_bytes(header: &str) -> Option<u64> {
    header
        .trim()
        .split(',')
        .find_map(|part| part.strip_suffix('S')?.parse().ok())
}

/// Bytes used in the Maildir at `root`, per its `maildirsize` for `limit` (rebuilt
/// when missing, too long, or written for another limit).
pub fn used_bytes(root: &Path, limit: u64) -> io::Result<u64> {
    let path = root.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return rebuild(root, limit),
        Err(e) => return Err(e),
    };
    let mut lines = text.lines();
    if text.len() as u64 > REBUILD_ABOVE || header_bytes(lines.next().unwrap_or("")) != Some(limit)
    {
        return rebuild(root, limit);
    }
    let used = lines
        .filter_map(|line| line.split_whitespace().next()?.parse::<i64>().ok())
        .sum::<i64>();
    Ok(used.max(0) as u64)
}

/// Whether a copy of `bytes` fits. Over the limit, a `maildirsize` older than 15
/// minutes is rebuilt first, as Maildir++ asks: mail deleted by a reader that does
/// not keep the file (not every IMAP server does) then counts as gone.
pub fn fits(root: &Path, limit: u64, bytes: u64) -> io::Result<bool> {
    if used_bytes(root, limit)? + bytes <= limit {
        return Ok(true);
    }
    let stale = fs::metadata(root.join(FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age.as_secs() >= 15 * 60);
    if stale {
        return Ok(rebuild(root, limit)? + bytes <= limit);
    }
    Ok(false)
}

/// Records a delivered copy of `bytes`.
pub fn add(root: &Path, bytes: u64) -> io::Result<()> {
    // Created if missing: a file without its header line is rebuilt on the next read.
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(root.join(FILE))?;
    // One write of one short line: appends of this size do not interleave.
    file.write_all(format!("{bytes} 1\n").as_bytes())
}

/// Walks the folders and writes a fresh file; returns the use.
fn rebuild(root: &Path, limit: u64) -> io::Result<u64> {
    let (mut bytes, mut count) = (0u64, 0u64);
    let mut folders = vec![root.to_path_buf()];
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') && entry.path().is_dir() {
                folders.push(entry.path());
            }
        }
    }
    for folder in folders {
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(folder.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    if meta.is_file() {
                        bytes += meta.len();
                        count += 1;
                    }
                }
            }
        }
    }
    // A name of its own, so two rebuilds at once never write the same file.
    static REBUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REBUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = root.join(format!("{FILE}.{}.{n}.tmp", std::process::id()));
    fs::write(&tmp, format!("{limit}S\n{bytes} {count}\n"))?;
    fs::rename(&tmp, root.join(FILE))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_is_summed_and_rebuilt_for_a_new_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["new", "cur", ".Spam/new"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("new/a"), vec![b'x'; 100]).unwrap();
        fs::write(root.join(".Spam/new/b"), vec![b'x'; 50]).unwrap();
        assert_eq!(used_bytes(root, 1000).unwrap(), 150);
        add(root, 25).unwrap();
        assert_eq!(used_bytes(root, 1000).unwrap(), 175);
        // Another limit: the file is rebuilt from the folders (the 25 was never written).
        assert_eq!(used_bytes(root, 2000).unwrap(), 150);
        assert!(fs::read_to_string(root.join(FILE))
            .unwrap()
            .starts_with("2000S\n"));
    }
}
