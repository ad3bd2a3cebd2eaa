-- Haven schema 11: the audit log's search index is one B-tree keyed by what it is searched by
-- (organisation, kind, reference, entry), instead of a table plus an index holding the same
-- four values. Each row was written twice, to a page of the table and to a page of the index,
-- and checked against audit_log (which it was derived from, and whose rows are never deleted).
-- Searches always name the organisation, so rows of entries without one (system events, found
-- by their sequence number or time) were never read: they are not kept. Nothing refers to this
-- table, so it is rebuilt with foreign keys on.
CREATE TABLE audit_index_keyed (
    org_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (org_id, kind, ref_id, seq)
) WITHOUT ROWID;
INSERT INTO audit_index_keyed (org_id, kind, ref_id, seq)
SELECT DISTINCT org_id, kind, ref_id, seq FROM audit_index WHERE org_id IS NOT NULL;
DROP TABLE audit_index;
ALTER TABLE audit_index_keyed RENAME TO audit_index;
