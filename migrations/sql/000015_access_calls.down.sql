DROP VIEW IF EXISTS access_calls;
DROP TABLE IF EXISTS rm_access_calls;
DELETE FROM projection_state WHERE name = 'access_calls';
DROP VIEW IF EXISTS tunnels;
CREATE VIEW tunnels AS SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position FROM rm_tunnels
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'tunnels');
GRANT SELECT ON tunnels TO tunnelplane_app;
ALTER TABLE rm_tunnels DROP COLUMN IF EXISTS access_log;
