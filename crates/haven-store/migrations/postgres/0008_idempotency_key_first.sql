-- Haven schema 8: the unique index on messages' idempotency keys leads with the key, then the
-- sender and the conversation, instead of conversation, sender, key. Both answer the same exact
-- lookups, but clients' keys grow with time (the web client's do, and the API documents why),
-- so new entries now go to the end of one index instead of to the end of each sender's part of
-- it: a commit of a batch of sends dirties one or two of its pages instead of one per sender.
ALTER TABLE messages
    DROP CONSTRAINT messages_conversation_id_sender_id_idempotency_key_key,
    ADD CONSTRAINT messages_idempotency_key_first UNIQUE (idempotency_key, sender_id, conversation_id);
