-- Per-call access records (access.calls_recorded batches of the tunnels whose access log is
-- "calls"): who called which route of a tunnel, when, with what result. One row per call,
-- keyed by the batch's log position and the call's index in it; read a tunnel's calls in time
-- order (keyset paging on at, position, idx). Generations as in 000002.
CREATE TABLE rm_access_calls (
    generation  integer     NOT NULL,
    position    bigint      NOT NULL,
    idx         integer     NOT NULL,
    org_id      uuid        NOT NULL,
    tunnel_id   uuid        NOT NULL,
    node_id     text        NOT NULL,
    at          timestamptz NOT NULL,
    caller_kind text        NOT NULL,
    caller_id   text        NOT NULL,
    method      text        NOT NULL,
    route       text        NOT NULL,
    status      integer     NOT NULL,
    bytes_in    bigint      NOT NULL,
    bytes_out   bigint      NOT NULL,
    duration_us bigint      NOT NULL,
    PRIMARY KEY (generation, position, idx)
);
CREATE INDEX rm_access_calls_tunnel ON rm_access_calls (generation, tunnel_id, at, position, idx);

CREATE VIEW access_calls AS SELECT position, idx, org_id, tunnel_id, node_id, at, caller_kind, caller_id, method, route, status,
    bytes_in, bytes_out, duration_us
    FROM rm_access_calls WHERE generation = (SELECT generation FROM projection_state WHERE name = 'access_calls');

-- A tunnel's access-log setting (tunnel.access_log_set), shown with the tunnel.
ALTER TABLE rm_tunnels ADD COLUMN access_log text NOT NULL DEFAULT 'windows';
CREATE OR REPLACE VIEW tunnels AS SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position,
    access_log FROM rm_tunnels WHERE generation = (SELECT generation FROM projection_state WHERE name = 'tunnels');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_access_calls TO tunnelplane_app;
GRANT SELECT ON access_calls TO tunnelplane_app;
