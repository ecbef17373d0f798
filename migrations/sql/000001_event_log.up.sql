-- The append-only, signed, hash-chained event log. See eventstore/doc.go and
-- docs/event-format.md for the byte layout of what is hashed and signed.

DO $$
BEGIN
    CREATE ROLE tunnelplane_app NOLOGIN;
EXCEPTION
    -- Roles are cluster-wide: another database (or a concurrent migration) may have made it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE events (
    global_position bigint      PRIMARY KEY CHECK (global_position >= 0),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    recorded_at     timestamptz NOT NULL,
    -- The exact bytes that are signed and hashed.
    payload         bytea       NOT NULL,
    metadata        bytea       NOT NULL,
    -- Copies for queries only; never hashed.
    payload_json    jsonb       NOT NULL,
    metadata_json   jsonb       NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    key_id          text        NOT NULL,
    -- The producer's Ed25519 signature over the Merkle root of the envelopes it submitted
    -- together, and this record's inclusion proof in that batch.
    signature       bytea       NOT NULL CHECK (length(signature) = 64),
    signature_proof bytea       NOT NULL,
    UNIQUE (stream_id, stream_version)
);
-- Only the keys every append needs: position, (stream, version), event id. Queries by type, time
-- or actor are served by projections, so the hot append path maintains no other index.

-- One signed RFC 6962 Merkle root per appended batch. The frontier (the compact-range hashes at
-- this size) lets a verifier start from a checkpoint instead of position 0.
CREATE TABLE checkpoints (
    size        bigint      PRIMARY KEY CHECK (size >= 1),
    root        bytea       NOT NULL CHECK (length(root) = 32),
    note        text        NOT NULL,
    key_id      text        NOT NULL,
    frontier    bytea       NOT NULL,
    created_at  timestamptz NOT NULL
);

-- The single head row every appender locks FOR UPDATE: it serialises position assignment so
-- commit order equals position order.
CREATE TABLE log_head (
    id            boolean     PRIMARY KEY DEFAULT true CHECK (id),
    next_position bigint      NOT NULL,
    head_hash     bytea       NOT NULL,
    frontier      bytea       NOT NULL,
    key_id        text        NOT NULL,
    origin        text        NOT NULL
);
INSERT INTO log_head (next_position, head_hash, frontier, key_id, origin)
VALUES (0, decode(repeat('00', 32), 'hex'), ''::bytea, '', '');

CREATE FUNCTION tunnelplane_reject_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tunnelplane: % on % is not allowed: the event log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tunnelplane_reject_mutation();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tunnelplane_reject_mutation();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION tunnelplane_reject_mutation();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION tunnelplane_reject_mutation();
CREATE TRIGGER log_head_no_delete BEFORE DELETE ON log_head
    FOR EACH ROW EXECUTE FUNCTION tunnelplane_reject_mutation();
CREATE TRIGGER log_head_no_truncate BEFORE TRUNCATE ON log_head
    FOR EACH STATEMENT EXECUTE FUNCTION tunnelplane_reject_mutation();

-- The services run as tunnelplane_app: INSERT and SELECT on the log, nothing else.
REVOKE ALL ON events, checkpoints, log_head FROM PUBLIC;
GRANT SELECT, INSERT ON events, checkpoints TO tunnelplane_app;
GRANT SELECT, UPDATE ON log_head TO tunnelplane_app;
