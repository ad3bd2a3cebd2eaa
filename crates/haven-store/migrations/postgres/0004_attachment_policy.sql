-- Haven schema 4: each organisation's attachment policy (largest file, kinds allowed).

ALTER TABLE organizations ADD COLUMN max_attachment_bytes BIGINT NOT NULL DEFAULT 26214400;
ALTER TABLE organizations ADD COLUMN attachment_kinds TEXT NOT NULL DEFAULT 'image,pdf,office,text';
