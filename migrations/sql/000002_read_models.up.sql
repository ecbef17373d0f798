-- Read models (projections of the event log) and command idempotency.
--
-- Every read-model table carries a generation: a projection is rebuilt into generation g+1 while
-- g serves reads, then the state row is switched to g+1 in one transaction. Readers use the
-- views, which show the current generation only, so a rebuild needs no DDL and no downtime.

CREATE TABLE projection_state (
    name            text        PRIMARY KEY,
    generation      integer     NOT NULL DEFAULT 1,
    position        bigint      NOT NULL DEFAULT -1,  -- last applied global position
    rebuilding      integer,                          -- generation being rebuilt, if any
    rebuild_position bigint,
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rm_orgs (
    generation  integer     NOT NULL,
    org_id      uuid        NOT NULL,
    name        text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, org_id),
    UNIQUE (generation, name)
);

CREATE TABLE rm_tunnels (
    generation  integer     NOT NULL,
    tunnel_id   uuid        NOT NULL,
    org_id      uuid        NOT NULL,
    name        text        NOT NULL,
    owner       text        NOT NULL,
    upstream    text        NOT NULL,
    protocol    text        NOT NULL,
    state       text        NOT NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, tunnel_id)
);
CREATE INDEX rm_tunnels_org ON rm_tunnels (generation, org_id, name);

CREATE TABLE rm_nodes (
    generation           integer     NOT NULL,
    node_id              uuid        NOT NULL,
    name                 text        NOT NULL,
    state                text        NOT NULL,
    lost                 boolean     NOT NULL DEFAULT false,
    host_key             text        NOT NULL,
    host_key_fingerprint text        NOT NULL,
    event_key_id         text        NOT NULL,
    agent_url            text        NOT NULL,
    ingress_url          text        NOT NULL,
    enrolled_at          timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    version              bigint      NOT NULL,
    position             bigint      NOT NULL,
    PRIMARY KEY (generation, node_id)
);

CREATE TABLE rm_agent_tokens (
    generation  integer     NOT NULL,
    token_id    uuid        NOT NULL,
    org_id      uuid        NOT NULL,
    tunnel_id   uuid        NOT NULL,
    key_id      text        NOT NULL,
    issued_by   text        NOT NULL,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoke_reason text,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, token_id)
);
CREATE INDEX rm_agent_tokens_tunnel ON rm_agent_tokens (generation, tunnel_id);

-- The RBAC view: the casbin policy reads it; it changes only through role events.
CREATE TABLE rm_role_assignments (
    generation  integer     NOT NULL,
    org_id      text        NOT NULL,  -- an organization id, or '*' for platform roles
    user_id     text        NOT NULL,
    role        text        NOT NULL,
    assigned_at timestamptz NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, org_id, user_id, role)
);
CREATE INDEX rm_role_assignments_user ON rm_role_assignments (generation, user_id);

-- The audit index: one row per event, searchable by actor, type, stream, time and correlation id.
CREATE TABLE rm_audit (
    generation     integer     NOT NULL,
    position       bigint      NOT NULL,
    recorded_at    timestamptz NOT NULL,
    event_id       uuid        NOT NULL,
    type           text        NOT NULL,
    stream_id      text        NOT NULL,
    actor          text,
    org_id         text,
    correlation_id text,
    causation_id   text,
    request_id     text,
    client_ip      text,
    user_agent     text,
    PRIMARY KEY (generation, position)
);
CREATE INDEX rm_audit_actor ON rm_audit (generation, actor, position);
CREATE INDEX rm_audit_type ON rm_audit (generation, type, position);
CREATE INDEX rm_audit_stream ON rm_audit (generation, stream_id, position);
CREATE INDEX rm_audit_time ON rm_audit (generation, recorded_at);
CREATE INDEX rm_audit_correlation ON rm_audit (generation, correlation_id);
CREATE INDEX rm_audit_org ON rm_audit (generation, org_id, position);

CREATE VIEW orgs AS SELECT org_id, name, created_by, created_at, position FROM rm_orgs
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'orgs');
CREATE VIEW tunnels AS SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position FROM rm_tunnels
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'tunnels');
CREATE VIEW nodes AS SELECT node_id, name, state, lost, host_key, host_key_fingerprint, event_key_id, agent_url, ingress_url, enrolled_at, updated_at, version, position FROM rm_nodes
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'nodes');
CREATE VIEW agent_tokens AS SELECT token_id, org_id, tunnel_id, key_id, issued_by, issued_at, expires_at, revoked_at, revoke_reason, position FROM rm_agent_tokens
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'agent_tokens');
CREATE VIEW role_assignments AS SELECT org_id, user_id, role, assigned_at, position FROM rm_role_assignments
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'role_assignments');
CREATE VIEW audit AS SELECT position, recorded_at, event_id, type, stream_id, actor, org_id, correlation_id, causation_id, request_id, client_ip, user_agent FROM rm_audit
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'audit');

-- Idempotency: the first response to (actor, key) is replayed for repeats.
CREATE TABLE idempotency_keys (
    actor        text        NOT NULL,
    key          text        NOT NULL,
    command      text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON projection_state, rm_orgs, rm_tunnels, rm_nodes, rm_agent_tokens,
    rm_role_assignments, rm_audit, idempotency_keys TO tunnelplane_app;
GRANT SELECT ON orgs, tunnels, nodes, agent_tokens, role_assignments, audit TO tunnelplane_app;
