//! Patient texting: each organisation's gateway and templates, the append-only consent ledger,
//! the durable outbox and inbound texts. Every send decision that depends on consent reads the
//! ledger inside the transaction that commits it (queueing, claiming for the gateway, answering
//! a keyword), so an opt-out committed first always wins.

use std::collections::HashMap;

use haven_domain::audit::AuditRecord;
use haven_domain::sms::{ConsentSource, ConsentState, ConsentStatus, Purpose, TextKind, TextStatus};
use haven_domain::{ConsentId, ConversationId, InboundTextId, OrgId, PatientId, TextId, UserId};
use jiff::{SignedDuration, Timestamp};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::rows::{flag, get, id, ms, ts};
use crate::script::Script;
use crate::{Store, StoreError, StoreResult};

/// An organisation's gateway as stored (settings sealed under the organisation key).
#[derive(Debug, Clone)]
pub struct StoredGateway {
    /// Organisation.
    pub org_id: OrgId,
    /// `twilio` or `smpp`.
    pub provider: String,
    /// Our number (E.164) or sender id.
    pub from_number: String,
    /// The number HELP replies give patients.
    pub help_phone: String,
    /// The sealed settings (credentials included).
    pub config_sealed: Vec<u8>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One consent ledger entry.
#[derive(Debug, Clone)]
pub struct ConsentRow {
    /// Id.
    pub id: ConsentId,
    /// Organisation.
    pub org_id: OrgId,
    /// Blind index of the number.
    pub phone_index: Vec<u8>,
    /// The number, sealed.
    pub phone_sealed: Vec<u8>,
    /// The patient, when known.
    pub patient_id: Option<PatientId>,
    /// The purpose, or `None` for every purpose (STOP/START).
    pub purpose: Option<Purpose>,
    /// New state.
    pub state: ConsentState,
    /// Where it came from.
    pub source: ConsentSource,
    /// The exact wording shown or said to the patient (or the keyword's meaning).
    pub wording: String,
    /// The staff member who recorded it (none for keywords and the system).
    pub recorded_by: Option<UserId>,
    /// When.
    pub recorded_at: Timestamp,
}

/// A text to queue.
#[derive(Debug, Clone)]
pub struct NewText {
    /// Id.
    pub id: TextId,
    /// Organisation.
    pub org_id: OrgId,
    /// What it is.
    pub kind: TextKind,
    /// Its purpose (consent and caps), for non-exempt kinds.
    pub purpose: Option<Purpose>,
    /// Blind index of the recipient's number.
    pub phone_index: Vec<u8>,
    /// Recipient and body, sealed.
    pub sealed: Vec<u8>,
    /// The patient, when known.
    pub patient_id: Option<PatientId>,
    /// The conversation it is about, if any.
    pub conversation_id: Option<ConversationId>,
    /// The patient's IANA zone (for quiet hours when it is claimed).
    pub time_zone: Option<String>,
    /// The patient's ISO 3166-2 region (a stricter window may apply there).
    pub region: Option<String>,
    /// Urgent texts are not held for quiet hours.
    pub urgent: bool,
    /// Not before (quiet hours, caps).
    pub not_before: Timestamp,
    /// Who queued it (none for system replies).
    pub created_by: Option<UserId>,
    /// When.
    pub created_at: Timestamp,
}

/// A text in the outbox.
#[derive(Debug, Clone)]
pub struct StoredText {
    /// Id.
    pub id: TextId,
    /// Organisation.
    pub org_id: OrgId,
    /// What it is.
    pub kind: TextKind,
    /// Its purpose.
    pub purpose: Option<Purpose>,
    /// Blind index of the recipient's number.
    pub phone_index: Vec<u8>,
    /// Recipient and body, sealed.
    pub sealed: Vec<u8>,
    /// The patient, when known.
    pub patient_id: Option<PatientId>,
    /// The conversation, if any.
    pub conversation_id: Option<ConversationId>,
    /// The patient's zone.
    pub time_zone: Option<String>,
    /// The patient's region.
    pub region: Option<String>,
    /// Urgent.
    pub urgent: bool,
    /// Status.
    pub status: TextStatus,
    /// Not before.
    pub not_before: Timestamp,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When a worker first handed it to the gateway (for reconciliation after a crash).
    pub claimed_at: Option<Timestamp>,
    /// The provider's id once accepted.
    pub provider_id: Option<String>,
    /// The last error code.
    pub error_code: Option<String>,
    /// Queued at.
    pub created_at: Timestamp,
    /// Accepted by the provider at.
    pub sent_at: Option<Timestamp>,
}

impl StoredText {
    /// True when a worker's lease ran out while it was sending: the provider may already have
    /// the text, so it must be looked up before any new attempt.
    pub fn uncertain(&self) -> bool {
        self.status == TextStatus::Sending
    }
}

/// An inbound text to record.
#[derive(Debug, Clone)]
pub struct NewInbound {
    /// Id.
    pub id: InboundTextId,
    /// Organisation.
    pub org_id: OrgId,
    /// Provider.
    pub provider: String,
    /// The provider's message id (de-duplication key).
    pub provider_id: String,
    /// Blind index of the sender's number.
    pub phone_index: Vec<u8>,
    /// Sender and body, sealed.
    pub sealed: Vec<u8>,
    /// What it was classified as (`opt-out`, `help`, `opt-in`, `flagged`, `message`).
    pub keyword: String,
    /// The patient with that number, if exactly one.
    pub patient_id: Option<PatientId>,
    /// Needs a person to look at it (it only looks like an opt-out).
    pub flagged: bool,
    /// When.
    pub received_at: Timestamp,
}

/// A secure link, stored with the text that carries it.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// Id.
    pub id: haven_domain::LinkId,
    /// SHA-256 of the token (the token itself is only in the sealed text).
    pub token_hash: Vec<u8>,
    /// Organisation.
    pub org_id: OrgId,
    /// The patient who must prove who they are.
    pub patient_id: PatientId,
    /// The conversation it opens.
    pub conversation_id: ConversationId,
    /// Who sent it.
    pub created_by: UserId,
    /// When.
    pub created_at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// What answering an inbound text writes, decided from the number's consent at that moment.
#[derive(Debug, Default)]
pub struct InboundPlan {
    /// Consent entries to append.
    pub consent: Vec<ConsentRow>,
    /// Replies to queue.
    pub texts: Vec<NewText>,
    /// Audit records (the inbound text itself, consent changes, replies).
    pub audits: Vec<AuditRecord>,
    /// The text as a message of the patient's thread (free text from a known patient).
    pub patient_message: Option<crate::patient_thread::NewPatientMessage>,
}

const SCOPE_ALL: &str = "all";

fn purpose_col(p: Option<Purpose>) -> &'static str {
    p.map(Purpose::as_str).unwrap_or(SCOPE_ALL)
}

/// A ledger row's scope: one purpose, or `None` for every purpose.
fn scope(purpose: &str) -> StoreResult<Option<Purpose>> {
    if purpose == SCOPE_ALL {
        Ok(None)
    } else {
        Purpose::parse(purpose).map(Some).ok_or(StoreError::Corrupt("purpose"))
    }
}

fn consent_state(row: &AnyRow) -> StoreResult<ConsentState> {
    ConsentState::parse(&get::<String>(row, "state")?).ok_or(StoreError::Corrupt("consent state"))
}

fn opt_id<T: std::str::FromStr>(v: Option<String>) -> StoreResult<Option<T>> {
    v.map(|s| id(&s)).transpose()
}

fn consent_row(row: &AnyRow) -> StoreResult<ConsentRow> {
    Ok(ConsentRow {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        phone_index: get(row, "phone_index")?,
        phone_sealed: get(row, "phone_sealed")?,
        patient_id: opt_id(get(row, "patient_id")?)?,
        purpose: scope(&get::<String>(row, "purpose")?)?,
        state: consent_state(row)?,
        source: ConsentSource::parse(&get::<String>(row, "source")?)
            .ok_or(StoreError::Corrupt("consent source"))?,
        wording: get(row, "wording")?,
        recorded_by: opt_id(get(row, "recorded_by")?)?,
        recorded_at: ts(get(row, "recorded_at")?)?,
    })
}

const CONSENT_COLUMNS: &str = "id, org_id, phone_index, phone_sealed, patient_id, purpose, state, source, wording, recorded_by, recorded_at";

pub(crate) const TEXT_COLUMNS: &str = "id, org_id, kind, purpose, phone_index, sealed, patient_id, conversation_id, time_zone, \
     region, urgent, status, not_before, attempts, claimed_at, provider_id, error_code, created_at, sent_at, lease_until";

pub(crate) fn text_row(row: &AnyRow) -> StoreResult<StoredText> {
    let purpose: Option<String> = get(row, "purpose")?;
    let opt_ts =
        |c: &str| -> StoreResult<Option<Timestamp>> { get::<Option<i64>>(row, c)?.map(ts).transpose() };
    Ok(StoredText {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        kind: TextKind::parse(&get::<String>(row, "kind")?).ok_or(StoreError::Corrupt("text kind"))?,
        purpose: purpose.map(|p| Purpose::parse(&p).ok_or(StoreError::Corrupt("purpose"))).transpose()?,
        phone_index: get(row, "phone_index")?,
        sealed: get(row, "sealed")?,
        patient_id: opt_id(get(row, "patient_id")?)?,
        conversation_id: opt_id(get(row, "conversation_id")?)?,
        time_zone: get(row, "time_zone")?,
        region: get(row, "region")?,
        urgent: get::<i64>(row, "urgent")? != 0,
        status: TextStatus::parse(&get::<String>(row, "status")?)
            .ok_or(StoreError::Corrupt("text status"))?,
        not_before: ts(get(row, "not_before")?)?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?).map_err(|_| StoreError::Corrupt("attempts"))?,
        claimed_at: opt_ts("claimed_at")?,
        provider_id: get(row, "provider_id")?,
        error_code: get(row, "error_code")?,
        created_at: ts(get(row, "created_at")?)?,
        sent_at: opt_ts("sent_at")?,
    })
}

/// The number's consent as of now, read inside the caller's transaction.
async fn consent_status(c: &mut AnyConnection, org: OrgId, phone_index: &[u8]) -> StoreResult<ConsentStatus> {
    let mut one = consent_statuses(c, [(org, phone_index)]).await?;
    Ok(one.remove(&(org, phone_index.to_vec())).unwrap_or_default())
}

/// The consent of each of several numbers as of now, read in one statement inside the
/// caller's transaction; a number with no entries has the default (never asked).
pub(crate) async fn consent_statuses<'a>(
    c: &mut AnyConnection,
    numbers: impl IntoIterator<Item = (OrgId, &'a [u8])>,
) -> StoreResult<HashMap<(OrgId, Vec<u8>), ConsentStatus>> {
    let mut numbers: Vec<(OrgId, &[u8])> = numbers.into_iter().collect();
    numbers.sort();
    numbers.dedup();
    if numbers.is_empty() {
        return Ok(HashMap::new());
    }
    let mut read = Script::for_connection(c);
    read.statement(|m| {
        format!(
            "SELECT org_id, phone_index, purpose, state FROM consent_ledger WHERE {} ORDER BY seq",
            m.repeat(numbers.len(), "(org_id = ? AND phone_index = ?)", " OR ")
        )
    });
    for (org, phone) in &numbers {
        read.bind(org.to_string()).bind(phone.to_vec());
    }
    let mut entries: HashMap<(OrgId, Vec<u8>), Vec<_>> = HashMap::new();
    for row in read.fetch_all(c).await? {
        let key = (id(&get::<String>(&row, "org_id")?)?, get::<Vec<u8>>(&row, "phone_index")?);
        entries
            .entry(key)
            .or_default()
            .push((scope(&get::<String>(&row, "purpose")?)?, consent_state(&row)?));
    }
    Ok(entries.into_iter().map(|(k, e)| (k, ConsentStatus::fold(e))).collect())
}

pub(crate) async fn insert_consent(c: &mut AnyConnection, r: &ConsentRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO consent_ledger (id, org_id, phone_index, phone_sealed, patient_id, purpose, state, source,
            wording, recorded_by, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(r.id.to_string())
    .bind(r.org_id.to_string())
    .bind(r.phone_index.clone())
    .bind(r.phone_sealed.clone())
    .bind(r.patient_id.map(|p| p.to_string()))
    .bind(purpose_col(r.purpose))
    .bind(r.state.as_str())
    .bind(r.source.as_str())
    .bind(r.wording.clone())
    .bind(r.recorded_by.map(|u| u.to_string()))
    .bind(ms(r.recorded_at))
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn insert_text(c: &mut AnyConnection, t: &NewText) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sms_outbox (id, org_id, kind, purpose, phone_index, sealed, patient_id, conversation_id,
            time_zone, urgent, status, not_before, attempts, created_by, created_at, status_at, region)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11, 0, $12, $13, $13, $14)",
    )
    .bind(t.id.to_string())
    .bind(t.org_id.to_string())
    .bind(t.kind.as_str())
    .bind(t.purpose.map(Purpose::as_str))
    .bind(t.phone_index.clone())
    .bind(t.sealed.clone())
    .bind(t.patient_id.map(|p| p.to_string()))
    .bind(t.conversation_id.map(|p| p.to_string()))
    .bind(t.time_zone.clone())
    .bind(flag(t.urgent))
    .bind(ms(t.not_before))
    .bind(t.created_by.map(|u| u.to_string()))
    .bind(ms(t.created_at))
    .bind(t.region.clone())
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Why a text may not go to a number now, if it may not.
pub(crate) fn refusal(
    status: &ConsentStatus,
    kind: TextKind,
    purpose: Option<Purpose>,
) -> Option<&'static str> {
    if kind.exempt() {
        return None;
    }
    if status.opted_out {
        return Some("opted_out");
    }
    match purpose {
        Some(p) if status.allows(p) => None,
        // A consent request may go to a number that is waiting for its YES.
        Some(p) if kind == TextKind::ConsentRequest && status.state(p) == Some(ConsentState::Pending) => None,
        _ => Some("no_consent"),
    }
}

impl Store {
    /// The organisation's gateway, if one is set up.
    pub async fn sms_gateway(&self, org: OrgId) -> StoreResult<Option<StoredGateway>> {
        let row = sqlx::query(
            "SELECT org_id, provider, from_number, help_phone, config_sealed, updated_at FROM sms_gateways WHERE org_id = $1",
        )
        .bind(org.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(StoredGateway {
                org_id: id(&get::<String>(&r, "org_id")?)?,
                provider: get(&r, "provider")?,
                from_number: get(&r, "from_number")?,
                help_phone: get(&r, "help_phone")?,
                config_sealed: get(&r, "config_sealed")?,
                updated_at: ts(get(&r, "updated_at")?)?,
            })
        })
        .transpose()
    }

    /// Every organisation that has a gateway (connection-holding gateways start with the server).
    pub async fn sms_gateway_orgs(&self) -> StoreResult<Vec<OrgId>> {
        let rows =
            sqlx::query("SELECT org_id FROM sms_gateways ORDER BY org_id").fetch_all(&self.read).await?;
        rows.iter().map(|r| id(&get::<String>(r, "org_id")?)).collect()
    }

    /// Sets the organisation's gateway; Conflict("from_number") if another organisation
    /// already sends from that number.
    pub async fn set_sms_gateway(&self, g: &StoredGateway, audit_rec: &AuditRecord) -> StoreResult<()> {
        self.audited(audit_rec, g.updated_at, async |c| {
            sqlx::query(
                "INSERT INTO sms_gateways (org_id, provider, from_number, help_phone, config_sealed, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (org_id) DO UPDATE SET provider = $2, from_number = $3, help_phone = $4,
                    config_sealed = $5, updated_at = $6",
            )
            .bind(g.org_id.to_string())
            .bind(g.provider.clone())
            .bind(g.from_number.clone())
            .bind(g.help_phone.clone())
            .bind(g.config_sealed.clone())
            .bind(ms(g.updated_at))
            .execute(&mut *c)
            .await
            .map_err(crate::rows::conflict("from_number"))?;
            Ok(())
        })
        .await
    }

    /// The organisation's secure-message template in `language`, if it saved one.
    pub async fn sms_template(&self, org: OrgId, language: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT body FROM sms_templates WHERE org_id = $1 AND language = $2")
            .bind(org.to_string())
            .bind(language)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| get(&r, "body")).transpose()
    }

    /// Saves a (checked) template.
    pub async fn set_sms_template(
        &self,
        org: OrgId,
        language: &str,
        body: &str,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, now, async |c| {
            sqlx::query(
                "INSERT INTO sms_templates (org_id, language, body, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_id, language) DO UPDATE SET body = $3, updated_at = $4",
            )
            .bind(org.to_string())
            .bind(language)
            .bind(body)
            .bind(ms(now))
            .execute(&mut *c)
            .await?;
            Ok(())
        })
        .await
    }

    /// Appends consent entries (staff-recorded changes), with their audit records.
    pub async fn record_consent(
        &self,
        rows: &[ConsentRow],
        audits: &[AuditRecord],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.audited_many(audits, now, async |c| {
            for r in rows {
                insert_consent(c, r).await?;
            }
            Ok(())
        })
        .await
    }

    /// A number's ledger, oldest first.
    pub async fn consent_history(&self, org: OrgId, phone_index: &[u8]) -> StoreResult<Vec<ConsentRow>> {
        let sql = format!(
            "SELECT {CONSENT_COLUMNS} FROM consent_ledger WHERE org_id = $1 AND phone_index = $2 ORDER BY seq"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(phone_index.to_vec())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(consent_row).collect()
    }

    /// The organisation's ledger after position `after`, oldest first, with each entry's
    /// position (for paged export).
    pub async fn consent_ledger(
        &self,
        org: OrgId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, ConsentRow)>> {
        let sql = format!(
            "SELECT seq, {CONSENT_COLUMNS} FROM consent_ledger WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok((get::<i64>(r, "seq")?, consent_row(r)?))).collect()
    }

    /// Queues a text after checking the number's consent in the same transaction
    /// (Conflict("opted_out") or Conflict("no_consent") otherwise). `schedule` turns the send
    /// times of this purpose's texts to the number in the last week into the earliest time this
    /// one may go (caps and quiet hours); the chosen time is returned.
    pub async fn enqueue_text(
        &self,
        text: &NewText,
        link: Option<&NewLink>,
        schedule: impl FnOnce(&[Timestamp]) -> Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<Timestamp> {
        self.audited(audit_rec, text.created_at, async |c| enqueue_in(c, text, link, schedule).await).await
    }

    /// Records an inbound text and what answering it writes, in one transaction. `plan` sees
    /// the number's consent as committed at that moment. Returns `None`, writing nothing, if
    /// the provider's id was seen before (a retried or replayed webhook).
    pub async fn receive_text(
        &self,
        inbound: &NewInbound,
        plan: impl FnOnce(&ConsentStatus) -> InboundPlan,
    ) -> StoreResult<Option<(InboundPlan, Option<crate::patient_thread::PatientMessageSent>)>> {
        let mut tx = self.write.begin().await?;
        // The head first: a reply into the patient's thread takes its conversation's next
        // number (see `audit::lock_head`).
        let log = crate::audit::lock_head(&mut tx).await?;
        let done = sqlx::query(
            "INSERT INTO sms_inbound (id, org_id, provider, provider_id, phone_index, sealed, keyword, patient_id,
                flagged, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (org_id, provider, provider_id) DO NOTHING",
        )
        .bind(inbound.id.to_string())
        .bind(inbound.org_id.to_string())
        .bind(inbound.provider.clone())
        .bind(inbound.provider_id.clone())
        .bind(inbound.phone_index.clone())
        .bind(inbound.sealed.clone())
        .bind(inbound.keyword.clone())
        .bind(inbound.patient_id.map(|p| p.to_string()))
        .bind(flag(inbound.flagged))
        .bind(ms(inbound.received_at))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let status = consent_status(&mut tx, inbound.org_id, &inbound.phone_index).await?;
        let plan = plan(&status);
        for r in &plan.consent {
            insert_consent(&mut tx, r).await?;
        }
        for t in &plan.texts {
            insert_text(&mut tx, t).await?;
        }
        let thread = match &plan.patient_message {
            Some(m) => Some(crate::patient_thread::insert_patient_message(&mut tx, m).await?),
            None => None,
        };
        crate::audit::append_from(&mut tx, log, &plan.audits, inbound.received_at).await?;
        tx.commit().await?;
        Ok(Some((plan, thread)))
    }

    /// The organisation's texts, newest first (the delivery log staff and auditors see).
    pub async fn texts(
        &self,
        org: OrgId,
        patient: Option<PatientId>,
        limit: u32,
    ) -> StoreResult<Vec<StoredText>> {
        // Two statements rather than `($2 IS NULL OR patient_id = $2)`, which no index serves.
        let only = if patient.is_some() { "AND patient_id = $2" } else { "AND CAST($2 AS TEXT) IS NULL" };
        let sql = format!(
            "SELECT {TEXT_COLUMNS} FROM sms_outbox WHERE org_id = $1 {only} ORDER BY created_at DESC, id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(patient.map(|p| p.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(text_row).collect()
    }

    /// The patients of the organisation whose number has this blind index.
    pub async fn patients_by_phone(&self, org: OrgId, phone_index: &[u8]) -> StoreResult<Vec<PatientId>> {
        let rows =
            sqlx::query("SELECT id FROM patients WHERE org_id = $1 AND phone_index = $2 ORDER BY created_at")
                .bind(org.to_string())
                .bind(phone_index.to_vec())
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(|r| id(&get::<String>(r, "id")?)).collect()
    }
}

/// Queues a text (and its secure link) inside the caller's transaction: consent is checked
/// and the frequency caps applied there, so a text that may not go out writes nothing.
pub(crate) async fn enqueue_in(
    c: &mut AnyConnection,
    text: &NewText,
    link: Option<&NewLink>,
    schedule: impl FnOnce(&[Timestamp]) -> Timestamp,
) -> StoreResult<Timestamp> {
    let status = consent_status(c, text.org_id, &text.phone_index).await?;
    if let Some(why) = refusal(&status, text.kind, text.purpose) {
        return Err(StoreError::Conflict(why));
    }
    let mut earlier = Vec::new();
    if let Some(p) = text.purpose {
        let since = text.created_at - SignedDuration::from_hours(24 * 8);
        let rows = sqlx::query(
            "SELECT COALESCE(sent_at, not_before) AS at FROM sms_outbox
             WHERE org_id = $1 AND phone_index = $2 AND purpose = $3
               AND status IN ('queued', 'sending', 'sent', 'delivered') AND COALESCE(sent_at, not_before) > $4",
        )
        .bind(text.org_id.to_string())
        .bind(text.phone_index.clone())
        .bind(p.as_str())
        .bind(ms(since))
        .fetch_all(&mut *c)
        .await?;
        for r in &rows {
            earlier.push(ts(get(r, "at")?)?);
        }
    }
    let mut t = text.clone();
    t.not_before = schedule(&earlier).max(text.not_before);
    insert_text(c, &t).await?;
    if let Some(l) = link {
        sqlx::query(
            "INSERT INTO secure_links (id, token_hash, org_id, patient_id, conversation_id, created_by,
                created_at, expires_at, failed_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
        )
        .bind(l.id.to_string())
        .bind(l.token_hash.clone())
        .bind(l.org_id.to_string())
        .bind(l.patient_id.to_string())
        .bind(l.conversation_id.to_string())
        .bind(l.created_by.to_string())
        .bind(ms(l.created_at))
        .bind(ms(l.expires_at))
        .execute(&mut *c)
        .await?;
    }
    Ok(t.not_before)
}
