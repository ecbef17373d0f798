-- The subjects' data keys (compliance/pii): personal data in the log is sealed with the key of the
-- subject it is about; erasing a subject destroys its keys (crypto-shredding). Keys are wrapped by
-- a key-encryption key kept outside the database. An erased key keeps its row, without the key,
-- so a reader can tell an erased value from one that was never sealed here.
CREATE TABLE subject_keys (
    subject     text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 256),
    generation  integer     NOT NULL CHECK (generation >= 1),
    wrapped_key bytea,
    kek_id      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    PRIMARY KEY (subject, generation),
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);

GRANT SELECT, INSERT, UPDATE ON subject_keys TO tunnelplane_app;
