//! Organisation keys (wrapped by the master key) and patient records (sealed, found by a
//! blind index of the MRN).

use haven_domain::audit::AuditRecord;
use haven_domain::{OrgId, PatientId};
use jiff::Timestamp;
use sqlx::any::AnyRow;

use crate::rows::{get, id, ms, ts};
use crate::{Store, StoreError, StoreResult, touched};

/// An organisation key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrgKey {
    /// Organisation.
    pub org_id: OrgId,
    /// Version of the master key that wrapped it.
    pub master_version: u32,
    /// The wrapped key.
    pub wrapped: Vec<u8>,
}

/// A patient record as stored: everything but the id is sealed.
#[derive(Debug, Clone)]
pub struct StoredPatient {
    /// Id.
    pub id: PatientId,
    /// Organisation.
    pub org_id: OrgId,
    /// The record's data key, wrapped by the organisation key.
    pub data_key: Vec<u8>,
    /// The sealed details.
    pub sealed: Vec<u8>,
    /// Created.
    pub created_at: Timestamp,
}

fn patient_row(row: &AnyRow) -> StoreResult<StoredPatient> {
    Ok(StoredPatient {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        data_key: get(row, "data_key")?,
        sealed: get(row, "sealed")?,
        created_at: ts(get(row, "created_at")?)?,
    })
}

fn org_key_row(row: &AnyRow) -> StoreResult<StoredOrgKey> {
    Ok(StoredOrgKey {
        org_id: id(&get::<String>(row, "org_id")?)?,
        master_version: u32::try_from(get::<i64>(row, "master_version")?)
            .map_err(|_| StoreError::Corrupt("master_version"))?,
        wrapped: get(row, "wrapped")?,
    })
}

impl Store {
    /// The organisation's key, if it has one yet.
    pub async fn org_key(&self, org: OrgId) -> StoreResult<Option<StoredOrgKey>> {
        let row = sqlx::query("SELECT org_id, master_version, wrapped FROM org_keys WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_optional(&self.write)
            .await?;
        row.as_ref().map(org_key_row).transpose()
    }

    /// Stores the organisation's key unless one exists; returns the one that is stored (so two
    /// nodes creating it at once agree on one key).
    pub async fn ensure_org_key(&self, key: &StoredOrgKey, now: Timestamp) -> StoreResult<StoredOrgKey> {
        sqlx::query(
            "INSERT INTO org_keys (org_id, master_version, wrapped, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id) DO NOTHING",
        )
        .bind(key.org_id.to_string())
        .bind(i64::from(key.master_version))
        .bind(key.wrapped.clone())
        .bind(ms(now))
        .execute(&self.write)
        .await?;
        self.org_key(key.org_id).await?.ok_or(StoreError::NotFound)
    }

    /// Every organisation key (for master-key rotation).
    pub async fn org_keys(&self) -> StoreResult<Vec<StoredOrgKey>> {
        let rows = sqlx::query("SELECT org_id, master_version, wrapped FROM org_keys ORDER BY org_id")
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(org_key_row).collect()
    }

    /// Replaces an organisation key's wrapping, if it is still `old` (a concurrent rotation
    /// wins, this one reports Conflict).
    pub async fn rewrap_org_key(
        &self,
        old: &StoredOrgKey,
        new: &StoredOrgKey,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, now, async |c| {
            let done = sqlx::query(
                "UPDATE org_keys SET master_version = $2, wrapped = $3, rewrapped_at = $4
                 WHERE org_id = $1 AND master_version = $5 AND wrapped = $6",
            )
            .bind(old.org_id.to_string())
            .bind(i64::from(new.master_version))
            .bind(new.wrapped.clone())
            .bind(ms(now))
            .bind(i64::from(old.master_version))
            .bind(old.wrapped.clone())
            .execute(&mut *c)
            .await?;
            touched(done).map_err(|_| StoreError::Conflict("org_key"))
        })
        .await
    }

    /// Stores a patient; Conflict("mrn") if the organisation already has that MRN.
    /// The phone's blind index lets inbound texts find the patient.
    pub async fn create_patient(
        &self,
        patient: &StoredPatient,
        mrn_index: &[u8],
        phone_index: Option<&[u8]>,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, patient.created_at, async |c| {
            sqlx::query(
                "INSERT INTO patients (id, org_id, mrn_index, data_key, sealed, created_at, updated_at, phone_index)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
            )
            .bind(patient.id.to_string())
            .bind(patient.org_id.to_string())
            .bind(mrn_index.to_vec())
            .bind(patient.data_key.clone())
            .bind(patient.sealed.clone())
            .bind(ms(patient.created_at))
            .bind(phone_index.map(<[u8]>::to_vec))
            .execute(&mut *c)
            .await
            .map_err(crate::rows::conflict("mrn"))?;
            Ok(())
        })
        .await
    }

    /// Replaces a patient's sealed record and phone index, and appends the consent entries
    /// the change ends (the old number's), with the audit records, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_patient_phone(
        &self,
        org: OrgId,
        patient: PatientId,
        sealed: &[u8],
        phone_index: Option<&[u8]>,
        ended: &[crate::ConsentRow],
        audit_recs: &[AuditRecord],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.audited_many(audit_recs, now, async |c| {
            let done = sqlx::query(
                "UPDATE patients SET sealed = $3, phone_index = $4, updated_at = $5 WHERE id = $1 AND org_id = $2",
            )
            .bind(patient.to_string())
            .bind(org.to_string())
            .bind(sealed.to_vec())
            .bind(phone_index.map(<[u8]>::to_vec))
            .bind(ms(now))
            .execute(&mut *c)
            .await?;
            crate::touched(done)?;
            for r in ended {
                crate::texting::insert_consent(c, r).await?;
            }
            Ok(())
        })
        .await
    }

    /// A patient of the organisation.
    pub async fn patient(&self, org: OrgId, patient: PatientId) -> StoreResult<StoredPatient> {
        let row = sqlx::query(
            "SELECT id, org_id, data_key, sealed, created_at FROM patients WHERE id = $1 AND org_id = $2",
        )
        .bind(patient.to_string())
        .bind(org.to_string())
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound)?;
        patient_row(&row)
    }

    /// The patient whose MRN has this blind index.
    pub async fn patient_by_mrn(&self, org: OrgId, mrn_index: &[u8]) -> StoreResult<StoredPatient> {
        let row = sqlx::query(
            "SELECT id, org_id, data_key, sealed, created_at FROM patients WHERE org_id = $1 AND mrn_index = $2",
        )
        .bind(org.to_string())
        .bind(mrn_index.to_vec())
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound)?;
        patient_row(&row)
    }
}
