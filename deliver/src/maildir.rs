//! The Maildir++ store.
//!
//! Files are written with LF line endings, as Dovecot's LDA and Postfix's local(8) write
//! them. The write is the classic safe sequence: create in `tmp/`, fsync, hard-link into
//! `new/` (which fails rather than overwrite an existing copy), remove the `tmp/` name,
//! and fsync `new/`, so an acknowledged copy survives power loss.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// The Maildir++ folders pampa delivers to, besides the inbox.
pub const SUBFOLDERS: [&str; 2] = [".Spam", ".Quarantine"];

/// What happened to one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written now, at this path.
    New(PathBuf),
    /// An earlier try wrote it already, at this path.
    AlreadyThere(PathBuf),
}

/// A user's Maildir root.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

fn create_dirs(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Maildir {
    /// The Maildir at `root` (created on first delivery).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Maildir { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a folder: the root for the inbox, `.Name` for the others.
    pub fn folder_dir(&self, folder: &str) -> PathBuf {
        if folder.eq_ignore_ascii_case("INBOX") {
            self.root.clone()
        } else {
            self.root.join(format!(".{folder}"))
        }
    }

    /// Creates the Maildir and its subfolders if they are missing.
    pub fn ensure(&self) -> io::Result<()> {
        if self.root.join("new").is_dir() {
            return Ok(());
        }
        for base in
            std::iter::once(self.root.clone()).chain(SUBFOLDERS.iter().map(|f| self.root.join(f)))
        {
            for sub in ["tmp", "new", "cur"] {
                create_dirs(&base.join(sub))?;
            }
        }
        // Maildir++ marks subfolders as mail folders with this file.
        for folder in SUBFOLDERS {
            let marker = self.root.join(folder).join("maildirfolder");
            if !marker.exists() {
                File::create(marker)?;
            }
        }
        if let Some(parent) = self.root.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Finds a copy named `name` that an earlier try left in `new/` or that a reader has
    /// since moved to `cur/` (as `name:2,FLAGS`).
    pub fn find(&self, folder: &str, name: &str) -> io::Result<Option<PathBuf>> {
        let dir = self.folder_dir(folder);
        let in_new = dir.join("new").join(name);
        if in_new.exists() {
            return Ok(Some(in_new));
        }
        let cur = dir.join("cur");
        let entries = match fs::read_dir(&cur) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name == name
                || file_name
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(':'))
            {
                return Ok(Some(entry.path()));
            }
        }
        Ok(None)
    }

    /// Writes `body` as `name` into `folder`. With `check_first`, a copy an earlier try
    /// wrote is found and left alone.
    pub fn write(
        &self,
        folder: &str,
        name: &str,
        body: &[u8],
        check_first: bool,
    ) -> io::Result<Written> {
        self.ensure()?;
        if check_first {
            if let Some(existing) = self.find(folder, name)? {
                return Ok(Written::AlreadyThere(existing));
            }
        }
        let dir = self.folder_dir(folder);
        let tmp = dir.join("tmp").join(name);
        let new = dir.join("new").join(name);
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(body)?;
            file.sync_all()?;
        }
        let linked = fs::hard_link(&tmp, &new);
        fs::remove_file(&tmp)?;
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(Written::AlreadyThere(new))
            }
            Err(e) => return Err(e),
        }
        sync_dir(&dir.join("new"))?;
        Ok(Written::New(new))
    }
}

/// Converts CRLF line endings to LF, the Maildir convention.
pub fn to_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_finds_copies_moved_to_cur() {
        let tmp = tempfile::tempdir().unwrap();
        let maildir = Maildir::new(tmp.path().join("example.org/alice"));
        let first = maildir
            .write("INBOX", "1.M1.host", b"hello\n", false)
            .unwrap();
        let Written::New(path) = first else {
            panic!("first write must be new")
        };
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");
        assert!(maildir.root().join(".Spam/new").is_dir());
        assert!(maildir.root().join(".Quarantine/maildirfolder").exists());
        assert_eq!(fs::read_dir(maildir.root().join("tmp")).unwrap().count(), 0);

        // Even without the check, an existing copy in new/ is never overwritten.
        let again = maildir
            .write("INBOX", "1.M1.host", b"other\n", false)
            .unwrap();
        assert!(matches!(again, Written::AlreadyThere(_)));
        assert_eq!(fs::read(&path).unwrap(), b"hello\n");

        // A reader moved it to cur/ with flags: a retry still finds it.
        fs::rename(&path, maildir.root().join("cur/1.M1.host:2,S")).unwrap();
        let retry = maildir
            .write("INBOX", "1.M1.host", b"hello\n", true)
            .unwrap();
        assert!(matches!(retry, Written::AlreadyThere(p) if p.ends_with("cur/1.M1.host:2,S")));
        assert_eq!(fs::read_dir(maildir.root().join("new")).unwrap().count(), 0);

        let spam = maildir.write("Spam", "2.M2.host", b"buy\n", false).unwrap();
        assert!(matches!(spam, Written::New(p) if p.starts_with(maildir.root().join(".Spam/new"))));
    }

    #[test]
    fn crlf_becomes_lf() {
        assert_eq!(to_lf(b"a\r\nb\r\n\r\nc\rd"), b"a\nb\n\nc\rd");
    }
}
