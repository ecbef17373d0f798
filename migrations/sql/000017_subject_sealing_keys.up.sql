-- The subjects' sealing key pairs (compliance/pii): X25519, so that nodes, which hold no data
-- keys, can seal personal data (agent.connected's remote_addr) to the public half of the subject
-- it is about. The private half is wrapped by the key-encryption key like the data keys; erasing
-- a subject destroys it (crypto-shredding). The public half stays: it is no secret, and nodes
-- may still hold it.
CREATE TABLE subject_sealing_keys (
    subject     text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 256),
    generation  integer     NOT NULL CHECK (generation >= 1),
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    wrapped_key bytea,
    kek_id      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    PRIMARY KEY (subject, generation),
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);

GRANT SELECT, INSERT, UPDATE ON subject_sealing_keys TO tunnelplane_app;
