-- Haven schema 3: patient texting. Phone numbers and texts are sealed under the organisation
-- key (bound to their row); numbers are found through a blind index, like MRNs.

ALTER TABLE patients ADD COLUMN phone_index BYTEA;
CREATE INDEX patients_by_phone ON patients (org_id, phone_index);

-- One gateway per organisation; its settings (credentials included) are sealed.
CREATE TABLE sms_gateways (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id),
    provider TEXT NOT NULL,
    from_number TEXT NOT NULL,
    help_phone TEXT NOT NULL,
    config_sealed BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (provider, from_number)
);

-- Secure-message templates per language, checked on save to hold no PHI placeholder.
CREATE TABLE sms_templates (
    org_id TEXT NOT NULL REFERENCES organizations(id),
    language TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, language)
);

-- The consent ledger: append-only evidence per number and purpose ('all' for STOP/START).
CREATE TABLE consent_ledger (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    phone_index BYTEA NOT NULL,
    phone_sealed BYTEA NOT NULL,
    patient_id TEXT REFERENCES patients(id),
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    wording TEXT NOT NULL,
    recorded_by TEXT REFERENCES users(id),
    recorded_at BIGINT NOT NULL
);
CREATE INDEX consent_by_phone ON consent_ledger (org_id, phone_index, seq);
CREATE INDEX consent_by_patient ON consent_ledger (org_id, patient_id, seq);
CREATE FUNCTION haven_consent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_ledger is append-only';
END;
$$;
CREATE TRIGGER consent_ledger_no_update BEFORE UPDATE OR DELETE ON consent_ledger
    FOR EACH ROW EXECUTE FUNCTION haven_consent_append_only();
CREATE TRIGGER consent_ledger_no_truncate BEFORE TRUNCATE ON consent_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION haven_consent_append_only();

-- The durable outbox. A row is committed with what caused it (a staff send, an inbound STOP)
-- and leaves only through the worker: queued -> sending (leased) -> sent/failed/cancelled.
CREATE TABLE sms_outbox (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    kind TEXT NOT NULL,
    purpose TEXT,
    phone_index BYTEA NOT NULL,
    sealed BYTEA NOT NULL,
    patient_id TEXT,
    conversation_id TEXT,
    time_zone TEXT,
    urgent BIGINT NOT NULL,
    status TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    lease_until BIGINT,
    claimed_at BIGINT,
    provider TEXT,
    provider_id TEXT,
    error_code TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    status_at BIGINT NOT NULL
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
    phone_index BYTEA NOT NULL,
    sealed BYTEA NOT NULL,
    keyword TEXT NOT NULL,
    patient_id TEXT,
    flagged BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (org_id, provider, provider_id)
);
CREATE INDEX sms_inbound_by_org ON sms_inbound (org_id, received_at);

-- Secure links: the token (128 bits) is stored only as its SHA-256; a GET never consumes it.
CREATE TABLE secure_links (
    id TEXT PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    failed_attempts BIGINT NOT NULL,
    locked_at BIGINT,
    verified_at BIGINT,
    -- The one-time code sent to the phone on record, as SHA-256 bound to the link.
    code_hash BYTEA,
    code_expires_at BIGINT,
    code_sent_at BIGINT
);

-- A patient's session on the secure page, after the identity check: short, ended on inactivity.
CREATE TABLE patient_sessions (
    token_hash BYTEA PRIMARY KEY,
    link_id TEXT NOT NULL REFERENCES secure_links(id),
    org_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT
);
