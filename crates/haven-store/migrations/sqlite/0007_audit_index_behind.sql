-- Haven schema 7: the audit log's search index (audit_index) is written behind the log, in
-- bulk, instead of inside every audited transaction (see audit_index.rs). This is how far it
-- has got; a search first brings it up to the log's head, so it never misses an entry.
-- Everything logged before this schema was indexed with its entry.
CREATE TABLE audit_index_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_seq INTEGER NOT NULL
);
INSERT INTO audit_index_head (id, indexed_seq) SELECT 1, size FROM audit_head;
