DROP VIEW IF EXISTS access_keys;
DELETE FROM rm_access_keys WHERE tunnel_id IS NULL;
ALTER TABLE rm_access_keys DROP COLUMN IF EXISTS selector, ALTER COLUMN tunnel_id SET NOT NULL;
CREATE VIEW access_keys AS SELECT key_id, org_id, tunnel_id, secret_hash, cidrs, rate_tier, issued_by, issued_at, expires_at, revoked_at,
    revoke_reason, position
    FROM rm_access_keys WHERE generation = (SELECT generation FROM projection_state WHERE name = 'access_keys');
GRANT SELECT ON access_keys TO tunnelplane_app;

DROP VIEW IF EXISTS tunnels;
CREATE VIEW tunnels AS SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position,
    access_log FROM rm_tunnels WHERE generation = (SELECT generation FROM projection_state WHERE name = 'tunnels');
GRANT SELECT ON tunnels TO tunnelplane_app;
ALTER TABLE rm_tunnels DROP COLUMN IF EXISTS labels, DROP COLUMN IF EXISTS cors;
