//! Organisation keys and patient records. Patient details are sealed under the record's own
//! data key; the MRN is found through a blind index, so the database holds no readable PHI.

use haven_crypto::envelope::{self, DataKey, WrappedKey};
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::patient::{PatientDetails, check_patient};
use haven_domain::roles::Permission;
use haven_domain::{OrgId, PatientId};
use haven_store::{StoredOrgKey, StoredPatient};
use serde::{Deserialize, Serialize};

use crate::{App, AppError, AppResult, Principal};

const PATIENT: &str = "patient-record";

/// A patient as shown to staff allowed to see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PatientView {
    /// Patient id.
    pub id: PatientId,
    /// Medical record number.
    pub mrn: String,
    /// Full name.
    pub name: String,
    /// Date of birth (YYYY-MM-DD).
    pub date_of_birth: String,
    /// Mobile number (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Preferred language (BCP 47 primary tag).
    pub language: String,
    /// IANA time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// ISO 3166-2 region, e.g. `US-FL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The sealed form of a patient's details.
#[derive(Serialize, Deserialize)]
struct SealedDetails {
    mrn: String,
    name: String,
    date_of_birth: String,
    phone: Option<String>,
    language: String,
    time_zone: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

fn scope(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{kind}:{id}")
}

impl App {
    /// The organisation's key, created (and wrapped by the master key) on first use and kept
    /// in memory after the first unwrap.
    pub(crate) async fn org_key(&self, org: OrgId) -> AppResult<DataKey> {
        if let Some(k) = self.org_keys.read().expect("org key cache").get(&org) {
            return Ok(k.clone());
        }
        let stored = match self.store.org_key(org).await? {
            Some(k) => k,
            None => {
                let key = DataKey::from_random(self.random());
                let ring = self.keyring.read().expect("keyring").clone();
                let w = envelope::wrap_org_key(&ring, &org.to_string(), &key, self.random());
                let fresh = StoredOrgKey { org_id: org, master_version: w.version, wrapped: w.sealed };
                self.store.ensure_org_key(&fresh, self.now()).await?
            }
        };
        let wrapped = WrappedKey { version: stored.master_version, sealed: stored.wrapped };
        let key = self.unwrap_org(&org.to_string(), &wrapped).map_err(|_| {
            AppError::Internal(format!(
                "the key of organisation {org} cannot be unwrapped (master key version {} missing or wrong)",
                wrapped.version
            ))
        })?;
        self.org_keys.write().expect("org key cache").insert(org, key.clone());
        Ok(key)
    }

    /// A fresh data key for `scope`, and its wrapped form.
    pub(crate) fn new_data_key(
        &self,
        org_key: &DataKey,
        org: OrgId,
        kind: &str,
        id: impl std::fmt::Display,
    ) -> (DataKey, Vec<u8>) {
        let key = DataKey::from_random(self.random());
        let wrapped =
            envelope::wrap_data_key(org_key, &org.to_string(), &scope(kind, id), &key, self.random());
        (key, wrapped)
    }

    /// Unwraps a data key; a failure means corrupt or misplaced data, never a user error.
    pub(crate) fn open_data_key(
        org_key: &DataKey,
        org: OrgId,
        kind: &str,
        id: impl std::fmt::Display,
        wrapped: &[u8],
    ) -> AppResult<DataKey> {
        envelope::unwrap_data_key(org_key, &org.to_string(), &scope(kind, &id), wrapped)
            .map_err(|_| AppError::Internal(format!("the data key of {kind} {id} does not open")))
    }

    fn mrn_index(org_key: &DataKey, org: OrgId, mrn: &str) -> [u8; 32] {
        envelope::blind_index(org_key, &org.to_string(), "mrn", &mrn.trim().to_ascii_uppercase())
    }

    /// Seals a patient's details under the record's data key, bound to the patient.
    fn seal_details(
        &self,
        key: &DataKey,
        org: OrgId,
        id: PatientId,
        d: &PatientDetails,
    ) -> AppResult<Vec<u8>> {
        let sealed = SealedDetails {
            mrn: d.mrn.clone(),
            name: d.name.clone(),
            date_of_birth: d.date_of_birth.to_string(),
            phone: d.phone.clone(),
            language: d.language.clone(),
            time_zone: d.time_zone.clone(),
            region: d.region.clone(),
        };
        let plain = serde_json::to_vec(&sealed).map_err(|e| AppError::Internal(e.to_string()))?;
        let ctx = envelope::ContentContext {
            org: &org.to_string(),
            conversation: "",
            item: &id.to_string(),
            version: 0,
        };
        Ok(envelope::seal_content(key, &ctx, self.random(), &plain))
    }

    /// Registers a patient. The MRN is unique within the organisation.
    pub async fn create_patient(&self, p: &Principal, details: PatientDetails) -> AppResult<PatientView> {
        p.require(Permission::PatientRegister)?;
        let now = self.now();
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        let d = check_patient(details, today)?;
        let org = p.org();
        let id = self.new_id(|r| PatientId::random(r));
        let org_key = self.org_key(org).await?;
        let (key, wrapped) = self.new_data_key(&org_key, org, "patient", id);
        let phone_index = d.phone.as_deref().map(|ph| Self::phone_index(&org_key, org, ph));
        let record = StoredPatient {
            id,
            org_id: org,
            data_key: wrapped,
            sealed: self.seal_details(&key, org, id, &d)?,
            created_at: now,
        };
        let rec = self
            .record(Some(org), PATIENT, "patient-create", AuditAction::C, AuditOutcome::Success, p.agent())
            .entity("patient", id);
        self.store
            .create_patient(
                &record,
                &Self::mrn_index(&org_key, org, &d.mrn),
                phone_index.as_ref().map(|i| i.as_slice()),
                &rec,
            )
            .await
            .map_err(|e| match e {
                haven_store::StoreError::Conflict(_) => {
                    AppError::Conflict("mrn_taken", "a patient with this MRN is already registered".into())
                }
                e => e.into(),
            })?;
        self.open_patient(&org_key, &record)
    }

    /// Changes a patient's mobile number (or removes it). Consent belongs to a number: every
    /// purpose's consent for the old number ends (source `number-changed`) in the same
    /// transaction, so nothing queued for it goes out, and the new number must be asked anew.
    pub async fn change_patient_phone(
        &self,
        p: &Principal,
        id: PatientId,
        phone: Option<String>,
    ) -> AppResult<PatientView> {
        p.require(Permission::PatientRegister)?;
        let org = p.org();
        let org_key = self.org_key(org).await?;
        let stored = self.store.patient(org, id).await?;
        let view = self.open_patient(&org_key, &stored)?;
        let now = self.now();
        let details = PatientDetails {
            mrn: view.mrn.clone(),
            name: view.name.clone(),
            date_of_birth: view
                .date_of_birth
                .parse()
                .map_err(|_| AppError::Internal("stored date of birth".into()))?,
            phone,
            language: view.language.clone(),
            time_zone: view.time_zone.clone(),
            region: view.region.clone(),
        };
        let d = check_patient(details, now.to_zoned(jiff::tz::TimeZone::UTC).date())?;
        if d.phone == view.phone {
            return Ok(view);
        }
        let key = Self::open_data_key(&org_key, org, "patient", id, &stored.data_key)?;
        let record = StoredPatient { sealed: self.seal_details(&key, org, id, &d)?, ..stored };
        let mut audits = vec![
            self.record(
                Some(org),
                PATIENT,
                "patient-phone-change",
                AuditAction::U,
                AuditOutcome::Success,
                p.agent(),
            )
            .entity("patient", id),
        ];
        let mut ended = Vec::new();
        if let Some(old) = &view.phone {
            let index = Self::phone_index(&org_key, org, old).to_vec();
            for purpose in haven_domain::sms::Purpose::ALL {
                let cid = self.new_id(|r| haven_domain::ConsentId::random(r));
                audits.push(
                    self.record(
                        Some(org),
                        crate::texting::TEXTING,
                        "consent-change",
                        AuditAction::C,
                        AuditOutcome::Success,
                        p.agent(),
                    )
                    .entity("patient", id)
                    .entity("consent", cid),
                );
                ended.push(haven_store::ConsentRow {
                    id: cid,
                    org_id: org,
                    phone_index: index.clone(),
                    phone_sealed: self.seal_org(&org_key, org, "consent", &cid.to_string(), old.as_bytes()),
                    patient_id: Some(id),
                    purpose: Some(purpose),
                    state: haven_domain::sms::ConsentState::Revoked,
                    source: haven_domain::sms::ConsentSource::NumberChanged,
                    wording: "the patient's mobile number changed".into(),
                    recorded_by: Some(p.user.id),
                    recorded_at: now,
                });
            }
        }
        let new_index = d.phone.as_deref().map(|ph| Self::phone_index(&org_key, org, ph));
        self.store
            .change_patient_phone(
                org,
                id,
                &record.sealed,
                new_index.as_ref().map(|i| i.as_slice()),
                &ended,
                &audits,
                now,
            )
            .await?;
        self.open_patient(&org_key, &record)
    }

    /// Opens a stored patient record.
    pub(crate) fn open_patient(&self, org_key: &DataKey, s: &StoredPatient) -> AppResult<PatientView> {
        let key = Self::open_data_key(org_key, s.org_id, "patient", s.id, &s.data_key)?;
        let ctx = envelope::ContentContext {
            org: &s.org_id.to_string(),
            conversation: "",
            item: &s.id.to_string(),
            version: 0,
        };
        let plain = envelope::open_content(&key, &ctx, &s.sealed)
            .map_err(|_| AppError::Internal(format!("patient {} does not open", s.id)))?;
        let d: SealedDetails = serde_json::from_slice(plain.expose())
            .map_err(|_| AppError::Internal("patient record".into()))?;
        Ok(PatientView {
            id: s.id,
            mrn: d.mrn,
            name: d.name,
            date_of_birth: d.date_of_birth,
            phone: d.phone,
            language: d.language,
            time_zone: d.time_zone,
            region: d.region,
        })
    }

    /// A patient's record (audited as a read).
    pub async fn patient(&self, p: &Principal, id: PatientId) -> AppResult<PatientView> {
        p.require(Permission::PatientRead)?;
        let stored = self.store.patient(p.org(), id).await?;
        let view = self.open_patient(&self.org_key(p.org()).await?, &stored)?;
        let rec = self
            .record(Some(p.org()), PATIENT, "patient-read", AuditAction::R, AuditOutcome::Success, p.agent())
            .entity("patient", id);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(view)
    }

    /// Finds a patient by MRN (audited as a search, whether found or not; the MRN itself is
    /// not recorded).
    pub async fn find_patient_by_mrn(&self, p: &Principal, mrn: &str) -> AppResult<PatientView> {
        if !(p.user.roles.allows(Permission::PatientRead) || p.user.roles.allows(Permission::PatientRegister))
        {
            return Err(AppError::NotFound);
        }
        let org = p.org();
        let org_key = self.org_key(org).await?;
        let found = self.store.patient_by_mrn(org, &Self::mrn_index(&org_key, org, mrn)).await;
        let mut rec = self.record(
            Some(org),
            PATIENT,
            "patient-search",
            AuditAction::E,
            AuditOutcome::Success,
            p.agent(),
        );
        if let Ok(s) = &found {
            rec = rec.entity("patient", s.id);
        } else {
            rec = rec.code("not_found");
        }
        self.store.record_audit(&rec, self.now()).await?;
        self.open_patient(&org_key, &found?)
    }
}
