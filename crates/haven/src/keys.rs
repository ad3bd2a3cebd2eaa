//! The master key: from `keys.master_key` (environment), or from a key file that is generated
//! with mode 0600 on first start. It never enters the database.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use data_encoding::BASE64;
use haven_crypto::seal::MasterKey;
use haven_domain::Entropy;

use crate::config::Conf;

fn decode(text: &str, what: &str) -> anyhow::Result<MasterKey> {
    let bytes = BASE64.decode(text.trim().as_bytes()).with_context(|| format!("{what}: not base64"))?;
    let key: [u8; 32] =
        bytes.try_into().map_err(|_| anyhow::anyhow!("{what}: must decode to exactly 32 bytes"))?;
    Ok(MasterKey::from_bytes(key))
}

/// Loads (or, for a missing key file, creates) the master key.
pub fn master_key(conf: &Conf, data_dir: &Path) -> anyhow::Result<MasterKey> {
    if let Some(k) = &conf.keys.master_key {
        return decode(k, "keys.master_key");
    }
    let path = conf.keys.master_key_file.clone().unwrap_or_else(|| data_dir.join("master.key"));
    if path.exists() {
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "keys.master_key_file: {} is readable by other users (mode {mode:o}); run chmod 600 on it",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("keys.master_key_file: cannot read {}", path.display()))?;
        return decode(&text, "keys.master_key_file");
    }
    let mut key = [0u8; 32];
    haven_app::OsEntropy.fill(&mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create the master key file {}", path.display()))?;
    writeln!(f, "{}", BASE64.encode(&key))?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "generated a new master key; back it up");
    Ok(MasterKey::from_bytes(key))
}
