-- Haven schema 9: the audit log's index on time alone is dropped. Every query of the log reads
-- it by sequence number or by organisation (and time: audit_by_org_time), so nothing read it,
-- yet every audited transaction wrote a page of it.
DROP INDEX audit_by_time;
