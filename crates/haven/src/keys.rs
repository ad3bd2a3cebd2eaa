//! Keys kept outside the database: the master key and the audit-log signing key. Each comes
//! from its environment setting, or from a key file that is generated with mode 0600 on first
//! start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use data_encoding::BASE64;
use haven_audit::checkpoint::NoteSigner;
use haven_crypto::seal::MasterKey;
use haven_domain::Entropy;

use crate::config::Conf;

fn decode(text: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = BASE64.decode(text.trim().as_bytes()).with_context(|| format!("{what}: not base64"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("{what}: must decode to exactly 32 bytes"))
}

/// 32 key bytes from `inline` (setting `inline_name`), else from `file` (setting `file_name`),
/// generating the file when it does not exist.
fn load_or_generate(
    inline: Option<&str>,
    inline_name: &str,
    file: PathBuf,
    file_name: &str,
) -> anyhow::Result<[u8; 32]> {
    if let Some(k) = inline {
        return decode(k, inline_name);
    }
    if file.exists() {
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{file_name}: {} is readable by other users (mode {mode:o}); run chmod 600 on it",
                file.display()
            );
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("{file_name}: cannot read {}", file.display()))?;
        return decode(&text, file_name);
    }
    let mut key = [0u8; 32];
    haven_app::OsEntropy.fill(&mut key);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("cannot create the key file {}", file.display()))?;
    writeln!(f, "{}", BASE64.encode(&key))?;
    f.sync_all()?;
    tracing::info!(path = %file.display(), "generated a new key; back it up");
    Ok(key)
}

/// Loads (or, for missing key files, creates) the server's keys.
pub fn load(conf: &Conf, data_dir: &Path) -> anyhow::Result<haven_app::Keys> {
    let master = load_or_generate(
        conf.keys.master_key.as_deref(),
        "keys.master_key",
        conf.keys.master_key_file.clone().unwrap_or_else(|| data_dir.join("master.key")),
        "keys.master_key_file",
    )?;
    let audit = load_or_generate(
        conf.keys.audit_signing_key.as_deref(),
        "keys.audit_signing_key",
        conf.keys.audit_signing_key_file.clone().unwrap_or_else(|| data_dir.join("audit-signing.key")),
        "keys.audit_signing_key_file",
    )?;
    let audit_signer = NoteSigner::new(&conf.audit.origin, &audit).map_err(|_| {
        anyhow::anyhow!("audit.origin: {:?} must be non-empty, without spaces or '+'", conf.audit.origin)
    })?;
    Ok(haven_app::Keys { master: MasterKey::from_bytes(master), audit_signer })
}
