-- SIEM sinks as the log configured them (siem.sink_configured, siem.sink_updated,
-- siem.sink_removed, siem.delivery_skipped). spec holds secrets only sealed or referenced.
-- Generations as in 000002.
CREATE TABLE rm_siem_sinks (
    generation    integer     NOT NULL,
    sink_id       uuid        NOT NULL,
    org_id        uuid,                    -- NULL: a platform sink
    name          text        NOT NULL,
    spec          jsonb       NOT NULL,
    skipped       bigint[]    NOT NULL DEFAULT '{}', -- positions an operator skipped
    configured_by text        NOT NULL,
    configured_at timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    removed_at    timestamptz,
    version       bigint      NOT NULL,
    position      bigint      NOT NULL,
    PRIMARY KEY (generation, sink_id)
);
CREATE INDEX rm_siem_sinks_org ON rm_siem_sinks (generation, org_id, name);

CREATE VIEW siem_sinks AS SELECT sink_id, org_id, name, spec, skipped, configured_by, configured_at, updated_at, removed_at, version, position
    FROM rm_siem_sinks WHERE generation = (SELECT generation FROM projection_state WHERE name = 'siem_sinks');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_siem_sinks TO tunnelplane_app;
GRANT SELECT ON siem_sinks TO tunnelplane_app;

-- What a sink's forwarder did, beside its cursor, so that any control plane instance reports it.
ALTER TABLE siem_cursors
    ADD COLUMN delivered      bigint      NOT NULL DEFAULT 0,
    ADD COLUMN retries        bigint      NOT NULL DEFAULT 0,
    ADD COLUMN last_error     text,
    ADD COLUMN last_error_at  timestamptz,
    ADD COLUMN refused        boolean     NOT NULL DEFAULT false,
    ADD COLUMN stuck_position bigint;     -- the record the receiver refuses, once isolated
