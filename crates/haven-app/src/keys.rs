//! Master keys by version, and their rotation. The highest version is current: it wraps new
//! organisation keys and seals new TOTP secrets; older versions only open what they sealed.
//! Rotation adds a version (the binary writes it next to the others), then re-wraps every
//! organisation key and re-seals every TOTP secret under it; data keys and content never
//! change, so rotation needs no downtime and nothing becomes unreadable. Once nothing uses an
//! old version, it can be removed from the key file.

use std::collections::BTreeMap;
use std::sync::Arc;

use haven_crypto::envelope::{self, KeyProvider, MasterKeyring, WrappedKey};
use haven_crypto::seal::{MasterKey, SealingKey};
use haven_crypto::{CryptoError, Secret};
use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome};
use haven_store::{SealedTotp, StoreError, StoredOrgKey};

use crate::{App, AppError, AppResult};

/// Re-reads the master keys (the key file may have gained a version since start).
pub type KeyReload = Arc<dyn KeyProvider>;

/// The keyring and the TOTP sealing keys (current first) of a set of master keys.
pub(crate) fn derive(masters: &[(u32, MasterKey)]) -> (MasterKeyring, Vec<SealingKey>) {
    let mut sorted: Vec<(u32, MasterKey)> = masters.to_vec();
    sorted.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let totp = sorted.iter().map(|(_, k)| k.subkey("totp-secret")).collect();
    let mut iter = sorted.into_iter();
    let current = iter.next().expect("at least one master key");
    (MasterKeyring::new(current, iter.collect()), totp)
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// The master-key version everything is now under.
    pub version: u32,
    /// Organisation keys re-wrapped.
    pub org_keys: usize,
    /// Users whose TOTP secrets were re-sealed.
    pub totp_secrets: usize,
}

/// Which master-key versions are in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The current version.
    pub current: u32,
    /// Organisation keys per master-key version.
    pub org_keys_by_version: BTreeMap<u32, usize>,
}

impl App {
    /// Re-reads the master keys through the reload hook; true if the keyring changed.
    pub(crate) fn reload_keys(&self) -> bool {
        let Some(reload) = &self.key_reload else { return false };
        let Ok(masters) = reload.master_keys() else { return false };
        if masters.is_empty() {
            return false;
        }
        let (ring, totp) = derive(&masters);
        let changed = ring.current_version() != self.keyring.read().expect("keyring").current_version();
        *self.keyring.write().expect("keyring") = ring;
        *self.totp_keys.write().expect("totp keys") = totp;
        changed
    }

    /// Seals a TOTP secret under the current master key, bound to `aad` (the user id).
    pub(crate) fn seal_totp(&self, aad: &[u8], secret: &[u8]) -> Vec<u8> {
        let key = self.totp_keys.read().expect("totp keys")[0].clone();
        key.seal(self.random::<12>(), aad, secret)
    }

    /// Opens a TOTP secret sealed under any known master-key version.
    pub(crate) fn open_totp(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<(Secret<Vec<u8>>, bool), CryptoError> {
        for attempt in 0..2 {
            let keys = self.totp_keys.read().expect("totp keys").clone();
            for (i, k) in keys.iter().enumerate() {
                if let Ok(s) = k.open(aad, sealed) {
                    return Ok((s, i == 0));
                }
            }
            if attempt == 0 && !self.reload_keys() {
                break;
            }
        }
        Err(CryptoError::OpenFailed)
    }

    /// Unwraps an organisation key with whichever master-key version wrapped it, re-reading the
    /// key file once if that version is not loaded (another process rotated).
    pub(crate) fn unwrap_org(
        &self,
        org: &str,
        wrapped: &WrappedKey,
    ) -> Result<envelope::DataKey, CryptoError> {
        let ring = self.keyring.read().expect("keyring").clone();
        match envelope::unwrap_org_key(&ring, org, wrapped) {
            Err(_) if self.key_reload.is_some() => {
                self.reload_keys();
                let ring = self.keyring.read().expect("keyring").clone();
                envelope::unwrap_org_key(&ring, org, wrapped)
            }
            r => r,
        }
    }

    /// Re-wraps every organisation key and re-seals every TOTP secret under the current master
    /// key; each change is audited. `progress(done, total)` reports as it goes.
    pub async fn rewrap_all(&self, progress: &(dyn Fn(usize, usize) + Sync)) -> AppResult<RotationReport> {
        let ring = self.keyring.read().expect("keyring").clone();
        let version = ring.current_version();
        let org_keys = self.store.org_keys().await?;
        let secrets = self.store.totp_secrets().await?;
        let total = org_keys.len() + secrets.len();
        let mut report = RotationReport { version, ..Default::default() };
        let agent = AuditAgent { system: Some("cli".into()), ..AuditAgent::default() };
        for (i, k) in org_keys.iter().enumerate() {
            if k.master_version != version {
                let org = k.org_id.to_string();
                let old = WrappedKey { version: k.master_version, sealed: k.wrapped.clone() };
                let new = envelope::rewrap_org_key(&ring, &org, &old, self.random()).map_err(|_| {
                    AppError::Internal(format!("the key of organisation {org} does not open"))
                })?;
                let rec = self
                    .record(
                        Some(k.org_id),
                        "key-management",
                        "org-key-rewrap",
                        AuditAction::U,
                        AuditOutcome::Success,
                        agent.clone(),
                    )
                    .entity("organization", k.org_id)
                    .code(&format!("master_v{}_to_v{version}", k.master_version));
                let stored =
                    StoredOrgKey { org_id: k.org_id, master_version: new.version, wrapped: new.sealed };
                match self.store.rewrap_org_key(k, &stored, self.now(), &rec).await {
                    Ok(()) => report.org_keys += 1,
                    Err(StoreError::Conflict(_)) => {} // another rotation got there first
                    Err(e) => return Err(e.into()),
                }
            }
            progress(i + 1, total);
        }
        for (i, s) in secrets.iter().enumerate() {
            let aad = s.user_id.to_string();
            let reseal = |sealed: &Option<Vec<u8>>| -> AppResult<(Option<Vec<u8>>, bool)> {
                match sealed {
                    None => Ok((None, false)),
                    Some(b) => {
                        let (plain, current) = self.open_totp(aad.as_bytes(), b).map_err(|_| {
                            AppError::Internal(format!("the TOTP secret of user {} does not open", s.user_id))
                        })?;
                        if current {
                            Ok((Some(b.clone()), false))
                        } else {
                            Ok((Some(self.seal_totp(aad.as_bytes(), plain.expose())), true))
                        }
                    }
                }
            };
            let (enrolled, a) = reseal(&s.enrolled)?;
            let (pending, b) = reseal(&s.pending)?;
            if a || b {
                let new = SealedTotp { enrolled, pending, ..s.clone() };
                let rec = self
                    .record(
                        Some(s.org_id),
                        "key-management",
                        "totp-reseal",
                        AuditAction::U,
                        AuditOutcome::Success,
                        agent.clone(),
                    )
                    .entity("user", s.user_id)
                    .code(&format!("master_v{version}"));
                if self.store.reseal_totp(s, &new, &rec, self.now()).await? {
                    report.totp_secrets += 1;
                }
            }
            progress(org_keys.len() + i + 1, total);
        }
        self.org_keys.write().expect("org key cache").clear();
        Ok(report)
    }

    /// The current master-key version and the organisation keys under each version.
    pub async fn key_status(&self) -> AppResult<KeyStatus> {
        let current = self.keyring.read().expect("keyring").current_version();
        let mut by = BTreeMap::new();
        for k in self.store.org_keys().await? {
            *by.entry(k.master_version).or_insert(0) += 1;
        }
        Ok(KeyStatus { current, org_keys_by_version: by })
    }
}
