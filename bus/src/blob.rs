//! Claim checks for message bodies, and the file store for the embedded log's bodies
//! that are too large to keep in the log itself (see `embedded::INLINE_BODY_MAX`; older
//! logs kept every body here, and are still read).
//!
//! Bodies are written to a temporary file, fsynced, renamed into place and the directory
//! fsynced, so a body that ingest acknowledged survives power loss.

use std::path::{Path, PathBuf};

use pampa_schemas::BlobRef;
use sha2::{Digest, Sha256};

use crate::BusError;

/// Computes the claim check of `bytes` under `key`.
pub fn blob_ref(key: &str, bytes: &[u8]) -> BlobRef {
    BlobRef {
        key: key.to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// Checks bytes read back against their claim check.
pub fn verify(blob: &BlobRef, bytes: &[u8]) -> Result<(), BusError> {
    let found = hex::encode(Sha256::digest(bytes));
    if found != blob.sha256 {
        return Err(BusError::BlobCorrupt {
            key: blob.key.clone(),
            expected: format!("sha256 {}", blob.sha256),
            found: format!("sha256 {found}"),
        });
    }
    Ok(())
}

/// Bodies as files under one directory, fanned out by the first bytes of the key.
#[derive(Debug, Clone)]
pub struct FileBlobStore {
    root: PathBuf,
}

impl FileBlobStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileBlobStore { root: root.into() }
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, BusError> {
        // Keys come from our own ids, but a key must never climb out of the store.
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BusError::Config(format!("invalid blob key {key:?}")));
        }
        let fan = &key[key.len().saturating_sub(2)..];
        Ok(self.root.join(fan).join(key))
    }

    /// Writes a body durably; writing the same key again replaces it atomically.
    ///
    /// The whole write is one blocking task: as seven `tokio::fs` calls (each its own
    /// hand-off to the blocking pool and back) it spent a fifth of ingest's CPU on
    /// thread hand-offs under load (perf, `ops/bench/smtp.sh`).
    pub async fn put(&self, blob: &BlobRef, bytes: &[u8]) -> Result<(), BusError> {
        let path = self.path_of(&blob.key)?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let tmp = dir.join(format!(".{}.tmp", blob.key));
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&dir)?;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            // The data and the size; the rename and the directory's fsync make the name.
            file.sync_data()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("blob write task failed: {e}")))??;
        Ok(())
    }

    /// Reads a body.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, BusError> {
        match tokio::fs::read(self.path_of(key)?).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(BusError::BlobMissing(key.to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes bodies last written before `cutoff`; returns how many went.
    pub async fn purge_older_than(&self, cutoff: std::time::SystemTime) -> Result<u64, BusError> {
        let root = self.root.clone();
        let purged = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut purged = 0;
            let Ok(fans) = std::fs::read_dir(&root) else {
                return Ok(0);
            };
            for fan in fans.flatten() {
                for entry in std::fs::read_dir(fan.path())?.flatten() {
                    if entry.metadata()?.modified()? < cutoff {
                        std::fs::remove_file(entry.path())?;
                        purged += 1;
                    }
                }
            }
            Ok(purged)
        })
        .await
        .map_err(|e| BusError::Unavailable(format!("blob purge task failed: {e}")))??;
        Ok(purged)
    }
}
