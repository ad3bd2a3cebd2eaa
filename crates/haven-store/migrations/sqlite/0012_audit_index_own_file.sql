-- Haven schema 12: the audit log's search index moves to a database file of its own, beside
-- this one (haven.db-audit-index, attached as audit_index_db while migrations run). Written in
-- this file, its transactions took the one write lock that every send's group commit waits
-- for; in its own file they have a lock of their own (see audit_index.rs).
-- The index's head now also keeps the leaf hash of the last entry it covers, so an index that
-- was not built from this log (a restored backup of one file without the other) is noticed
-- and built again. Emptied first: if a crash stopped this migration after the index file's
-- commit and before this file's, it runs again from the start.
DELETE FROM audit_index_db.audit_index;
INSERT INTO audit_index_db.audit_index (org_id, kind, ref_id, seq)
SELECT org_id, kind, ref_id, seq FROM main.audit_index;
UPDATE audit_index_db.audit_index_head
SET indexed_seq = (SELECT indexed_seq FROM main.audit_index_head WHERE id = 1),
    leaf = (SELECT l.leaf_hash FROM main.audit_log l
            JOIN main.audit_index_head h ON h.id = 1 AND l.seq = h.indexed_seq)
WHERE id = 1;
DROP TABLE main.audit_index;
DROP TABLE main.audit_index_head;
