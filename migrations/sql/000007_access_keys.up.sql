-- Tunnel access keys as the log issued and revoked them (access_key.issued, access_key.revoked).
-- The secret is never here: only its SHA-256, which the log holds too. Generations as in 000002.
CREATE TABLE rm_access_keys (
    generation    integer     NOT NULL,
    key_id        uuid        NOT NULL,
    org_id        uuid        NOT NULL,
    tunnel_id     uuid        NOT NULL,
    secret_hash   text        NOT NULL,
    cidrs         text[]      NOT NULL DEFAULT '{}',
    rate_tier     text,
    issued_by     text        NOT NULL,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text,
    position      bigint      NOT NULL,
    PRIMARY KEY (generation, key_id)
);
CREATE INDEX rm_access_keys_org ON rm_access_keys (generation, org_id, issued_at, key_id);

CREATE VIEW access_keys AS SELECT key_id, org_id, tunnel_id, secret_hash, cidrs, rate_tier, issued_by, issued_at, expires_at, revoked_at,
    revoke_reason, position
    FROM rm_access_keys WHERE generation = (SELECT generation FROM projection_state WHERE name = 'access_keys');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_access_keys TO tunnelplane_app;
GRANT SELECT ON access_keys TO tunnelplane_app;
