-- Haven schema 3: patient texting. Phone numbers and texts are sealed under the organisation
-- key (bound to their row); numbers are found through a blind index, like MRNs.

ALTER TABLE patients ADD COLUMN phone_index BLOB;
CREATE INDEX patients_by_phone ON patients (org_id, phone_index);

-- One gateway per organisation; its settings (credentials included) are sealed.
CREATE TABLE sms_gateways (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id),
    provider TEXT NOT NULL,
    from_number TEXT NOT NULL,
    help_phone TEXT NOT NULL,
    config_sealed BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (provider, from_number)
);

-- Secure-message templates per language, checked on save to hold no PHI placeholder.
CREATE TABLE sms_templates (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    language TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, language)
);

-- The consent ledger: append-only evidence per number and purpose ('all' for STOP/START).
CREATE TABLE consent_ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    phone_index BLOB NOT NULL,
    phone_sealed BLOB NOT NULL,
    patient_id TEXT REFERENCES patients(id),
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    wording TEXT NOT NULL,
    recorded_by TEXT REFERENCES users(id),
    recorded_at INTEGER NOT NULL
);
CREATE INDEX consent_by_phone ON consent_ledger (org_id, phone_index, seq);
CREATE INDEX consent_by_patient ON consent_ledger (org_id, patient_id, seq);
CREATE TRIGGER consent_ledger_no_update BEFORE UPDATE ON consent_ledger
BEGIN
    SELECT RAISE(ABORT, 'consent_ledger is append-only');
END;
CREATE TRIGGER consent_ledger_no_delete BEFORE DELETE ON consent_ledger
BEGIN
    SELECT RAISE(ABORT, 'consent_ledger is append-only');
END;

-- The durable outbox. A row is committed with what caused it (a staff send, an inbound STOP)
-- and leaves only through the worker: queued -> sending (leased) -> sent/failed/cancelled.
CREATE TABLE sms_outbox (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    kind TEXT NOT NULL,
    purpose TEXT,
    phone_index BLOB NOT NULL,
    sealed BLOB NOT NULL,
    patient_id TEXT,
    conversation_id TEXT,
    time_zone TEXT,
    urgent INTEGER NOT NULL,
    status TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    lease_until INTEGER,
    claimed_at INTEGER,
    provider TEXT,
    provider_id TEXT,
    error_code TEXT,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    status_at INTEGER NOT NULL
);
CREATE INDEX sms_outbox_due ON sms_outbox (status, not_before);
CREATE UNIQUE INDEX sms_outbox_provider_id ON sms_outbox (provider, provider_id);
CREATE INDEX sms_outbox_by_phone ON sms_outbox (org_id, phone_index, purpose);

-- Inbound texts, de-duplicated by the provider's id.
CREATE TABLE sms_inbound (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    provider TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    phone_index BLOB NOT NULL,
    sealed BLOB NOT NULL,
    keyword TEXT NOT NULL,
    patient_id TEXT,
    flagged INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (org_id, provider, provider_id)
);
CREATE INDEX sms_inbound_by_org ON sms_inbound (org_id, received_at);

-- Secure links: the token (128 bits) is stored only as its SHA-256; a GET never consumes it.
CREATE TABLE secure_links (
    id TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    locked_at INTEGER,
    verified_at INTEGER,
    -- The one-time code sent to the phone on record, as SHA-256 bound to the link.
    code_hash BLOB,
    code_expires_at INTEGER,
    code_sent_at INTEGER
);

-- A patient's session on the secure page, after the identity check: short, ended on inactivity.
CREATE TABLE patient_sessions (
    token_hash BLOB PRIMARY KEY,
    link_id TEXT NOT NULL REFERENCES secure_links(id),
    org_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER
);
