-- Haven schema 5: the patient's thread of a patient conversation, the shared inbox of
-- patient threads, and the patient's region on queued texts (regional sending windows).

-- Messages to the patient (read on the secure page after the identity check) and the
-- patient's replies (from the page or by text). Each is also an event of the conversation
-- (kind `patient_message`, message_id = this id), so staff get it in order and in real time.
CREATE TABLE patient_messages (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL REFERENCES organizations(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    seq INTEGER NOT NULL,
    -- to_patient | from_patient
    direction TEXT NOT NULL,
    -- secure_page | sms
    channel TEXT NOT NULL,
    -- The staff member who wrote it; NULL when the patient did.
    author_id TEXT REFERENCES users(id),
    -- Sealed under the organisation key, bound to this row.
    body_sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX patient_messages_by_conversation ON patient_messages (conversation_id, created_at);

-- One row per patient conversation the patient has written in: open until staff mark it
-- done; a new message from the patient opens it again.
CREATE TABLE patient_inbox (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations(id),
    org_id TEXT NOT NULL REFERENCES organizations(id),
    patient_id TEXT NOT NULL REFERENCES patients(id),
    -- open | done
    status TEXT NOT NULL,
    assignee_id TEXT REFERENCES users(id),
    last_from_patient_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX patient_inbox_by_org ON patient_inbox (org_id, status, last_from_patient_at);

-- The patient's ISO 3166-2 region (e.g. US-FL), for a stricter sending window there.
ALTER TABLE sms_outbox ADD COLUMN region TEXT;
