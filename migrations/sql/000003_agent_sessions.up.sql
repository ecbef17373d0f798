-- Agent sessions: every agent connection a node reported (agent.connected, agent.disconnected),
-- so that operators see which tunnels have an agent now, on which node, since when, and how each
-- earlier session ended. Generations as in 000002.

CREATE TABLE rm_agent_sessions (
    generation    integer     NOT NULL,
    session_id    uuid        NOT NULL,
    node_id       uuid        NOT NULL,
    org_id        uuid        NOT NULL,
    tunnel_id     uuid        NOT NULL,
    token_id      uuid        NOT NULL,
    agent_version text        NOT NULL,
    protocol      text        NOT NULL,
    remote_addr   text        NOT NULL,
    kex           text        NOT NULL,
    cipher        text        NOT NULL,
    connected_at  timestamptz NOT NULL,
    ended_at      timestamptz,            -- NULL while the node reports the session open
    end_reason    text,
    bytes_in      bigint,                 -- agent → node, reported at the end
    bytes_out     bigint,
    duration_ms   bigint,
    position      bigint      NOT NULL,
    PRIMARY KEY (generation, session_id)
);
CREATE INDEX rm_agent_sessions_org ON rm_agent_sessions (generation, org_id, connected_at DESC, session_id DESC);
CREATE INDEX rm_agent_sessions_tunnel ON rm_agent_sessions (generation, tunnel_id, connected_at DESC);
CREATE INDEX rm_agent_sessions_open ON rm_agent_sessions (generation, node_id, tunnel_id) WHERE ended_at IS NULL;

CREATE VIEW agent_sessions AS SELECT session_id, node_id, org_id, tunnel_id, token_id, agent_version, protocol, remote_addr, kex, cipher,
    connected_at, ended_at, end_reason, bytes_in, bytes_out, duration_ms, position FROM rm_agent_sessions
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'agent_sessions');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_agent_sessions TO tunnelplane_app;
GRANT SELECT ON agent_sessions TO tunnelplane_app;
