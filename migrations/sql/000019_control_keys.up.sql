-- The control plane's private keys when its replicas share them (--key-encryption-key-file):
-- the log's and the tokens' Ed25519 seeds, the subjects' key-encryption key and the key SIEM
-- sinks' and webhooks' secrets are sealed with, each sealed
-- (AES-256-GCM) by the key-encryption key every replica is given, bound to its purpose and id.
-- Rows are only added: a rotated key stays, so that a replica that missed the rotation finds
-- the key in force.
CREATE TABLE control_keys (
    purpose    text        NOT NULL CHECK (purpose IN ('log', 'token', 'subjects-kek', 'siem')),
    key_id     text        NOT NULL CHECK (length(key_id) BETWEEN 1 AND 128),
    kek_id     text        NOT NULL,
    sealed     bytea       NOT NULL CHECK (length(sealed) BETWEEN 16 AND 256),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose, key_id)
);

GRANT SELECT, INSERT ON control_keys TO tunnelplane_app;
