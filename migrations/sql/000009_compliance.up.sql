-- The compliance read model (projection "compliance", report/compliance and docs/compliance.md):
-- what compliance reports count and list, kept as the log is appended so that a report reads a
-- window of indexed rows instead of scanning the log. Generations as in 000002.

-- Every event a report may name (all types but usage.recorded and the name reservations), with
-- the few fields its rules read. org_id is the payload's or the metadata's organization ('*' for
-- platform roles, NULL for platform events); weight is how many requests an aggregated audit
-- event stands for (1 otherwise).
CREATE TABLE rm_compliance_events (
    generation  integer     NOT NULL,
    position    bigint      NOT NULL,
    recorded_at timestamptz NOT NULL,
    type        text        NOT NULL,
    org_id      text,
    actor       text,
    subject     text,
    detail      text,
    weight      bigint      NOT NULL DEFAULT 1,
    attrs       jsonb,
    PRIMARY KEY (generation, position)
);
CREATE INDEX rm_compliance_events_type ON rm_compliance_events (generation, type, recorded_at);
CREATE INDEX rm_compliance_events_org ON rm_compliance_events (generation, org_id, type, recorded_at);

-- Credentials and signing keys with their lifetimes: agent tokens, access keys, and the log's
-- keys ($log: genesis, added, rotated, revoked) by purpose.
CREATE TABLE rm_compliance_credentials (
    generation    integer     NOT NULL,
    kind          text        NOT NULL,
    credential_id text        NOT NULL,
    org_id        text,
    tunnel_id     text,
    issued_by     text,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    position      bigint      NOT NULL,
    PRIMARY KEY (generation, kind, credential_id)
);
CREATE INDEX rm_compliance_credentials_org ON rm_compliance_credentials (generation, org_id, issued_at);

-- The projection's own copy of who holds which role, and whose last role in an organization was
-- withdrawn (and when): the state the rule "access after withdrawal" is checked against, in log
-- order.
CREATE TABLE rm_compliance_roles (
    generation integer NOT NULL,
    org_id     text    NOT NULL,
    user_id    text    NOT NULL,
    role       text    NOT NULL,
    PRIMARY KEY (generation, org_id, user_id, role)
);
CREATE TABLE rm_compliance_withdrawn (
    generation   integer     NOT NULL,
    org_id       text        NOT NULL,
    user_id      text        NOT NULL,
    role         text        NOT NULL,
    withdrawn_at timestamptz NOT NULL,
    position     bigint      NOT NULL,
    PRIMARY KEY (generation, org_id, user_id)
);

-- Exceptions that depend on the order of the log (found as each event is applied).
CREATE TABLE rm_compliance_exceptions (
    generation         integer     NOT NULL,
    position           bigint      NOT NULL,
    rule               text        NOT NULL,
    recorded_at        timestamptz NOT NULL,
    org_id             text,
    subject            text        NOT NULL,
    detail             text        NOT NULL,
    weight             bigint      NOT NULL DEFAULT 1,
    since              timestamptz,
    since_position     bigint,
    PRIMARY KEY (generation, position, rule)
);
CREATE INDEX rm_compliance_exceptions_rule ON rm_compliance_exceptions (generation, rule, recorded_at);

-- Hourly rollup of the same events (UTC hours): counts and requests per organization ('' none)
-- and type; keyed further by subject and reason for failed authentications and by node and
-- protocol|cipher|kex for agent sessions, the groupings the rules read. A report reads the
-- window's whole hours here and only its partial first and last hours from rm_compliance_events.
CREATE TABLE rm_compliance_hourly (
    generation     integer     NOT NULL,
    hour           timestamptz NOT NULL,
    org_id         text        NOT NULL,
    type           text        NOT NULL,
    subject        text        NOT NULL,
    detail         text        NOT NULL,
    events         bigint      NOT NULL,
    weight         bigint      NOT NULL,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL,
    PRIMARY KEY (generation, hour, org_id, type, subject, detail)
);
CREATE INDEX rm_compliance_hourly_org ON rm_compliance_hourly (generation, org_id, hour);

CREATE VIEW compliance_hourly AS SELECT hour, org_id, type, subject, detail, events, weight, first_position, last_position FROM rm_compliance_hourly
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'compliance');
CREATE VIEW compliance_events AS SELECT position, recorded_at, type, org_id, actor, subject, detail, weight, attrs FROM rm_compliance_events
    WHERE generation = (SELECT generation FROM projection_state WHERE name = 'compliance');
CREATE VIEW compliance_credentials AS SELECT kind, credential_id, org_id, tunnel_id, issued_by, issued_at, expires_at, revoked_at, position
    FROM rm_compliance_credentials WHERE generation = (SELECT generation FROM projection_state WHERE name = 'compliance');
CREATE VIEW compliance_exceptions AS SELECT position, rule, recorded_at, org_id, subject, detail, weight, since, since_position
    FROM rm_compliance_exceptions WHERE generation = (SELECT generation FROM projection_state WHERE name = 'compliance');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_compliance_events, rm_compliance_hourly, rm_compliance_credentials, rm_compliance_roles, rm_compliance_withdrawn,
    rm_compliance_exceptions TO tunnelplane_app;
GRANT SELECT ON compliance_events, compliance_hourly, compliance_credentials, compliance_exceptions TO tunnelplane_app;
