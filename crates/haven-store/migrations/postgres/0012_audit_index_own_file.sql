-- Haven schema 12: on SQLite the audit log's search index moves to a database file of its own
-- (see the SQLite script). On PostgreSQL it stays here: an indexing transaction takes no lock a
-- send waits for. The head keeps the leaf hash of the last entry it covers on both backends;
-- only SQLite, whose index can come from another copy than its log, acts on it.
ALTER TABLE audit_index_head ADD COLUMN leaf BYTEA;
UPDATE audit_index_head
SET leaf = (SELECT leaf_hash FROM audit_log WHERE seq = audit_index_head.indexed_seq)
WHERE id = 1;
