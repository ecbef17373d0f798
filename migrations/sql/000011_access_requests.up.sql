-- Access requests to tunnels (access.requested, access.approved, access.denied, and the
-- grant.created that completes one). The tunnel's sharing stream decides; this lists them across
-- an organization and finds a request's tunnel. Generations as in 000002.
CREATE TABLE rm_access_requests (
    generation       integer     NOT NULL,
    request_id       uuid        NOT NULL,
    org_id           uuid        NOT NULL,
    tunnel_id        uuid        NOT NULL,
    requester        text        NOT NULL,
    duration_seconds bigint      NOT NULL,
    reason           text        NOT NULL,
    state            text        NOT NULL,
    approvers        text[]      NOT NULL DEFAULT '{}',
    grant_id         uuid,
    denied_by        text,
    denial           text,
    requested_at     timestamptz NOT NULL,
    decided_at       timestamptz,
    position         bigint      NOT NULL,
    PRIMARY KEY (generation, request_id)
);
CREATE INDEX rm_access_requests_org ON rm_access_requests (generation, org_id, requested_at, request_id);

CREATE VIEW access_requests AS SELECT request_id, org_id, tunnel_id, requester, duration_seconds, reason, state, approvers, grant_id,
    denied_by, denial, requested_at, decided_at, position
    FROM rm_access_requests WHERE generation = (SELECT generation FROM projection_state WHERE name = 'access_requests');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_access_requests TO tunnelplane_app;
GRANT SELECT ON access_requests TO tunnelplane_app;
