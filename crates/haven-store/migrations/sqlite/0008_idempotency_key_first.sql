-- Haven schema 8: the unique index on messages' idempotency keys leads with the key, then the
-- sender and the conversation, instead of conversation, sender, key. Both answer the same exact
-- lookups, but clients' keys grow with time (the web client's do, and the API documents why),
-- so new entries now go to the end of one index instead of to the end of each sender's part of
-- it: a commit of a batch of sends writes one or two of its pages instead of one per sender.
-- SQLite cannot change a table's UNIQUE constraint in place, so the table is rebuilt; it runs
-- with foreign keys off (message_versions refers to it), and every reference is checked
-- before it commits.
CREATE TABLE messages_rebuilt (
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
    UNIQUE (idempotency_key, sender_id, conversation_id)
);
INSERT INTO messages_rebuilt (id, conversation_id, org_id, seq, sender_id, idempotency_key, priority,
    content_type, version, data_key, attachments, expires_at, created_at, edited_at, recalled_at, expired_at)
SELECT id, conversation_id, org_id, seq, sender_id, idempotency_key, priority,
    content_type, version, data_key, attachments, expires_at, created_at, edited_at, recalled_at, expired_at
FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_rebuilt RENAME TO messages;
CREATE INDEX messages_expiring ON messages (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;
