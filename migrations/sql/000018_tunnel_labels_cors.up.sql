-- A tunnel's labels and CORS setting (tunnel.created, tunnel.updated), shown with the tunnel, and
-- access keys scoped by a label selector instead of one tunnel (access_key.issued: selector, no
-- tunnel_id).
ALTER TABLE rm_tunnels ADD COLUMN labels jsonb NOT NULL DEFAULT '{}', ADD COLUMN cors jsonb;
CREATE OR REPLACE VIEW tunnels AS SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position,
    access_log, labels, cors FROM rm_tunnels WHERE generation = (SELECT generation FROM projection_state WHERE name = 'tunnels');

ALTER TABLE rm_access_keys ALTER COLUMN tunnel_id DROP NOT NULL, ADD COLUMN selector jsonb;
CREATE OR REPLACE VIEW access_keys AS SELECT key_id, org_id, tunnel_id, secret_hash, cidrs, rate_tier, issued_by, issued_at, expires_at, revoked_at,
    revoke_reason, position, selector
    FROM rm_access_keys WHERE generation = (SELECT generation FROM projection_state WHERE name = 'access_keys');
