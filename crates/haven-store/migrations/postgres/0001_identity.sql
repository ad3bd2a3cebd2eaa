-- Haven schema 1: organisations, users, MFA, sessions, throttling, the audit log.
-- Times are milliseconds since the Unix epoch. Ids are UUID text.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    mfa_required BIGINT NOT NULL,
    inactivity_timeout_seconds BIGINT NOT NULL,
    session_lifetime_seconds BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    status TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_sealed BYTEA,
    totp_pending_sealed BYTEA,
    totp_last_step BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX users_by_org ON users (org_id, username);

CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT,
    address TEXT,
    user_agent TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id, ended_at);

CREATE TABLE auth_throttle (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    window_start BIGINT NOT NULL
);

-- The audit log. Sequence numbers come from audit_head, incremented in the same transaction as
-- the row (its row lock orders concurrent writers), so they are gap-free. Rows can be neither
-- updated nor deleted, nor the table truncated.
-- The head of the Merkle log: its size and the roots of its perfect subtrees (the compact
-- frontier, 32 bytes each, largest first), from which the tree head follows.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    -- The time of the newest entry: entries never go back in time, even if the clock does.
    last_time BIGINT NOT NULL,
    frontier BYTEA NOT NULL
);
INSERT INTO audit_head (id, size, last_time, frontier) VALUES (1, 0, 0, ''::bytea);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    org_id TEXT,
    recorded_at BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    subtype TEXT NOT NULL,
    outcome TEXT NOT NULL,
    agent_user_id TEXT,
    -- The canonical entry: the exact bytes the leaf hash is computed over.
    entry TEXT NOT NULL,
    leaf_hash BYTEA NOT NULL
);
CREATE INDEX audit_by_org_time ON audit_log (org_id, recorded_at);
CREATE INDEX audit_by_time ON audit_log (recorded_at);

-- What each audit entry is about (its agent and entities), for search by user, patient,
-- conversation…; written with the entry, append-only like it.
CREATE TABLE audit_index (
    seq BIGINT NOT NULL REFERENCES audit_log(seq),
    org_id TEXT,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL
);
CREATE INDEX audit_index_lookup ON audit_index (org_id, kind, ref_id, seq);

-- How far each forwarder (e.g. the syslog collector) has been sent the log; the log itself is
-- the durable buffer, so nothing is lost while a collector is down.
CREATE TABLE audit_forward_cursor (
    name TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

-- Signed checkpoints (C2SP signed notes) of the log, kept for auditors and for consistency.
CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    root_hash BYTEA NOT NULL,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE FUNCTION haven_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION haven_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION haven_audit_append_only();
