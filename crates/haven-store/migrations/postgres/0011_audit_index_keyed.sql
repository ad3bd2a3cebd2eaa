-- Haven schema 11: the audit log's search index is keyed by what it is searched by
-- (organisation, kind, reference, entry): its primary key replaces the lookup index, and it is
-- no longer checked against audit_log (which it is derived from, and whose rows are never
-- deleted). Searches always name the organisation, so rows of entries without one (system
-- events, found by their sequence number or time) were never read: they are not kept. On SQLite
-- the same change makes the table and its index one B-tree.
DELETE FROM audit_index WHERE org_id IS NULL;
DELETE FROM audit_index a USING audit_index b
WHERE a.ctid < b.ctid AND a.org_id = b.org_id AND a.kind = b.kind AND a.ref_id = b.ref_id AND a.seq = b.seq;
ALTER TABLE audit_index DROP CONSTRAINT audit_index_seq_fkey;
DROP INDEX audit_index_lookup;
ALTER TABLE audit_index ADD PRIMARY KEY (org_id, kind, ref_id, seq);
