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

/// Parses master keys: `VERSION:BASE64` entries (a bare base64 entry is version 1), one per
/// line or separated by commas.
pub fn parse_masters(text: &str, what: &str) -> anyhow::Result<Vec<(u32, MasterKey)>> {
    let mut out: Vec<(u32, MasterKey)> = Vec::new();
    for entry in text.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty() && !e.starts_with('#')) {
        let (version, key) = match entry.split_once(':') {
            Some((v, k)) => {
                (v.trim().parse::<u32>().with_context(|| format!("{what}: {v:?} is not a key version"))?, k)
            }
            None => (1, entry),
        };
        if version == 0 || out.iter().any(|(v, _)| *v == version) {
            bail!("{what}: key version {version} is zero or given twice");
        }
        out.push((version, MasterKey::from_bytes(decode(key, what)?)));
    }
    if out.is_empty() {
        bail!("{what}: no master key");
    }
    Ok(out)
}

fn master_file(conf: &Conf, data_dir: &Path) -> PathBuf {
    conf.keys.master_key_file.clone().unwrap_or_else(|| data_dir.join("master.key"))
}

/// The master keys, from the environment or the key file (created on first start).
pub fn load_masters(conf: &Conf, data_dir: &Path) -> anyhow::Result<Vec<(u32, MasterKey)>> {
    if let Some(k) = conf.keys.master_key.as_deref() {
        return parse_masters(k, "keys.master_key");
    }
    let file = master_file(conf, data_dir);
    if !file.exists() {
        load_or_generate(None, "keys.master_key", file.clone(), "keys.master_key_file")?;
    }
    check_private(&file, "keys.master_key_file")?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("keys.master_key_file: cannot read {}", file.display()))?;
    parse_masters(&text, "keys.master_key_file")
}

fn check_private(file: &Path, name: &str) -> anyhow::Result<()> {
    let mode = std::fs::metadata(file)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!("{name}: {} is readable by other users (mode {mode:o}); run chmod 600 on it", file.display());
    }
    Ok(())
}

/// Adds a new master-key version to the key file (rewritten atomically, mode 0600) and returns
/// its number. Refused when the keys come from the environment: the operator adds the version
/// there.
pub fn add_master_version(conf: &Conf, data_dir: &Path) -> anyhow::Result<u32> {
    if conf.keys.master_key.is_some() {
        bail!(
            "the master keys come from keys.master_key (HAVEN_KEYS_MASTER_KEY): add a new entry \
             `N:BASE64` there (N above every existing version), restart, then run \
             `haven keys rotate --rewrap-only`"
        );
    }
    let file = master_file(conf, data_dir);
    let existing = load_masters(conf, data_dir)?;
    let version = existing.iter().map(|(v, _)| *v).max().unwrap_or(0) + 1;
    let mut key = [0u8; 32];
    haven_app::OsEntropy.fill(&mut key);
    let old = std::fs::read_to_string(&file)?;
    let mut text = String::new();
    for line in old.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // Bare legacy lines become explicit version 1.
        if line.contains(':') || line.starts_with('#') {
            text.push_str(line);
        } else {
            text.push_str(&format!("1:{line}"));
        }
        text.push('\n');
    }
    text.push_str(&format!("{version}:{}\n", BASE64.encode(&key)));
    let tmp = file.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(version)
}

/// Where the master keys come from, kept by a running server to re-read them after a rotation.
#[derive(Debug, Clone)]
pub struct KeySource {
    inline: Option<String>,
    file: Option<PathBuf>,
}

impl From<&Conf> for KeySource {
    fn from(c: &Conf) -> Self {
        Self { inline: c.keys.master_key.clone(), file: c.keys.master_key_file.clone() }
    }
}

impl KeySource {
    /// Binds the source to the data directory (where the default key file is).
    pub fn in_dir(mut self, data_dir: &Path) -> Self {
        self.file.get_or_insert_with(|| data_dir.join("master.key"));
        self
    }
}

impl haven_crypto::envelope::KeyProvider for KeySource {
    /// The master keys as they are now (an error keeps the ones the server has).
    fn master_keys(&self) -> Result<Vec<(u32, MasterKey)>, haven_crypto::CryptoError> {
        let text = match (&self.inline, &self.file) {
            (Some(t), _) => t.clone(),
            (None, Some(f)) => {
                std::fs::read_to_string(f).map_err(|_| haven_crypto::CryptoError::OpenFailed)?
            }
            (None, None) => return Err(haven_crypto::CryptoError::OpenFailed),
        };
        parse_masters(&text, "master keys").map_err(|_| haven_crypto::CryptoError::OpenFailed)
    }
}

/// Loads (or, for missing key files, creates) the server's keys.
pub fn load(conf: &Conf, data_dir: &Path) -> anyhow::Result<haven_app::Keys> {
    let masters = load_masters(conf, data_dir)?;
    let audit = load_or_generate(
        conf.keys.audit_signing_key.as_deref(),
        "keys.audit_signing_key",
        conf.keys.audit_signing_key_file.clone().unwrap_or_else(|| data_dir.join("audit-signing.key")),
        "keys.audit_signing_key_file",
    )?;
    let audit_signer = NoteSigner::new(&conf.audit.origin, &audit).map_err(|_| {
        anyhow::anyhow!("audit.origin: {:?} must be non-empty, without spaces or '+'", conf.audit.origin)
    })?;
    Ok(haven_app::Keys { masters, audit_signer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_entries_parse_with_versions() {
        let k = BASE64.encode(&[1u8; 32]);
        assert_eq!(parse_masters(&k, "x").unwrap().len(), 1);
        assert_eq!(parse_masters(&k, "x").unwrap()[0].0, 1);
        let two = parse_masters(&format!("1:{k}\n2:{k}\n"), "x").unwrap();
        assert_eq!(two.iter().map(|(v, _)| *v).collect::<Vec<_>>(), [1, 2]);
        assert!(parse_masters(&format!("1:{k},1:{k}"), "x").is_err(), "duplicate version");
        assert!(parse_masters("2:short", "x").is_err());
        assert!(parse_masters("", "x").is_err());
    }
}
