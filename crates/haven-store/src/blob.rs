//! Blob storage for attachments. Blobs arrive already sealed: the store never sees plaintext.
//! The trait lets object storage replace the file system later; [`FsBlobStore`] keeps blobs
//! under the data directory, written to a temporary file, fsynced, then renamed into place, so
//! a blob is either whole or absent after a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Blob storage errors.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob under that key.
    #[error("blob not found")]
    NotFound,
    /// The key is not a plain identifier.
    #[error("invalid blob key")]
    InvalidKey,
    /// The storage failed.
    #[error("blob storage failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where sealed blobs live.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores a blob durably under `key` (replacing none: keys are fresh random ids).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError>;
    /// Reads a blob.
    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError>;
    /// Deletes a blob; deleting an absent blob is not an error.
    fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// Blobs as files under a directory, fanned out by the first two characters of the key.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store rooted at `root` (created if missing, mode 0700).
    pub fn new(root: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self { root: root.to_path_buf() })
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let plain = key.len() >= 8 && key.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !plain {
            return Err(BlobError::InvalidKey);
        }
        Ok(self.root.join(&key[..2]).join(key))
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("a blob path has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{key}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        match std::fs::read(self.path(key)?) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, key: &str) -> Result<(), BlobError> {
        match std::fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_keys_stay_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("haven-blob-{}", std::process::id()));
        let store = FsBlobStore::new(&dir).unwrap();
        let key = "0f1e2d3c-0000-4000-8000-000000000001";
        store.put(key, b"sealed bytes").unwrap();
        assert_eq!(store.get(key).unwrap(), b"sealed bytes");
        store.delete(key).unwrap();
        assert!(matches!(store.get(key), Err(BlobError::NotFound)));
        store.delete(key).unwrap();
        assert!(matches!(store.put("../../etc/passwd", b"x"), Err(BlobError::InvalidKey)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
