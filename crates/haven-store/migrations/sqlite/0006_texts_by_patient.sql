-- Haven schema 6: a patient's texts are listed (staff's view of what was sent to whom) without
-- reading the whole outbox.
CREATE INDEX sms_outbox_by_patient ON sms_outbox (org_id, patient_id, created_at);
