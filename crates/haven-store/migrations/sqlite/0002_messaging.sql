-- Haven schema 2: organisation keys, patients, conversations, messages, receipts, attachments.
-- Nothing readable is stored: names, titles, bodies and file names are sealed (AES-256-GCM)
-- under per-item data keys, which are wrapped by the organisation's key, itself wrapped by the
-- master key. Setting a data_key column to NULL destroys what it sealed (crypto-shredding).

CREATE TABLE org_keys (
    org_id TEXT PRIMARY KEY REFERENCES organizations(id),
    master_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    rewrapped_at INTEGER
);

CREATE TABLE patients (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    -- HMAC-SHA-256 of the normalised MRN under a key derived from the organisation key: exact
    -- lookup without storing the MRN.
    mrn_index BLOB NOT NULL,
    data_key BLOB NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (org_id, mrn_index)
);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    kind TEXT NOT NULL,
    patient_id TEXT REFERENCES patients(id),
    data_key BLOB,
    title_sealed BLOB,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    -- The last sequence number handed out; incremented in the writing transaction, so the
    -- sequence is gap-free and the row lock orders concurrent writers.
    last_seq INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_org ON conversations (org_id);

-- A member sees the events from joined_seq to left_seq (inclusive; NULL while a member).
CREATE TABLE conversation_members (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    org_id TEXT NOT NULL,
    joined_seq INTEGER NOT NULL,
    left_seq INTEGER,
    delivered_seq INTEGER NOT NULL,
    read_seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON conversation_members (user_id);

CREATE TABLE conversation_events (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor_id TEXT,
    message_id TEXT,
    subject_id TEXT,
    priority TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    org_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL REFERENCES users(id),
    idempotency_key TEXT NOT NULL,
    priority TEXT NOT NULL,
    content_type TEXT NOT NULL,
    version INTEGER NOT NULL,
    data_key BLOB,
    attachments TEXT NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    edited_at INTEGER,
    recalled_at INTEGER,
    expired_at INTEGER,
    UNIQUE (conversation_id, sender_id, idempotency_key)
);
CREATE INDEX messages_expiring ON messages (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;

CREATE TABLE message_versions (
    message_id TEXT NOT NULL REFERENCES messages(id),
    version INTEGER NOT NULL,
    body_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, version)
);

CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    uploader_id TEXT NOT NULL REFERENCES users(id),
    message_id TEXT,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    data_key BLOB,
    name_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX attachments_by_message ON attachments (message_id);
