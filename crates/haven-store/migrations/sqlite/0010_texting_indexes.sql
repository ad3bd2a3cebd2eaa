-- Haven schema 10: texting's indexes no longer lead with the organisation. Every query names the
-- organisation, so an index led by it matches them all; a planner without statistics (a new
-- database, a server whose autovacuum is off, or tables that filled faster than they were
-- analysed) takes `org_id = ?` for a narrow condition and reads such an index for lookups it
-- barely narrows: every row of the organisation, for each text queued or claimed. Led by the
-- phone's blind index (unique to a number within an organisation) or the patient, the indexes
-- narrow at once, and the queries still require the organisation.
DROP INDEX sms_outbox_by_patient;
CREATE INDEX sms_outbox_by_patient ON sms_outbox (patient_id, created_at);
DROP INDEX sms_outbox_by_phone;
CREATE INDEX sms_outbox_by_phone ON sms_outbox (phone_index, org_id, purpose);
DROP INDEX consent_by_phone;
CREATE INDEX consent_by_phone ON consent_ledger (phone_index, org_id, seq);
-- No query reads the consent ledger by patient (consent follows the number).
DROP INDEX consent_by_patient;
