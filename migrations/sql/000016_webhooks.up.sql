-- Webhook endpoints as the log configured them (webhook.endpoint_created, _updated, _deleted,
-- webhook.secret_rotated). secret is sealed (never in clear); previous_secret, the one rotated
-- out, still signs deliveries for a while after rotated_at. Generations as in 000002.
CREATE TABLE rm_webhooks (
    generation      integer     NOT NULL,
    endpoint_id     uuid        NOT NULL,
    org_id          uuid        NOT NULL,
    name            text        NOT NULL,
    url             text        NOT NULL,
    types           text[]      NOT NULL DEFAULT '{}', -- empty: every notification type
    secret          text        NOT NULL,
    previous_secret text,
    rotated_at      timestamptz,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    version         bigint      NOT NULL,
    position        bigint      NOT NULL,
    created_position bigint     NOT NULL, -- where its deliveries start
    PRIMARY KEY (generation, endpoint_id)
);
CREATE INDEX rm_webhooks_org ON rm_webhooks (generation, org_id, endpoint_id);

CREATE VIEW webhooks AS SELECT endpoint_id, org_id, name, url, types, secret, previous_secret, rotated_at, created_by, created_at,
    updated_at, deleted_at, version, position, created_position
    FROM rm_webhooks WHERE generation = (SELECT generation FROM projection_state WHERE name = 'webhooks');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_webhooks TO tunnelplane_app;
GRANT SELECT ON webhooks TO tunnelplane_app;

-- Each endpoint's deliverer: the next log position to look at (moved only after the receiver
-- answered 2xx for every matching record before it) and what it did, so that any control plane
-- instance reports it. An endpoint created later starts at the log position of its creation.
CREATE TABLE webhook_cursors (
    endpoint_id       uuid        PRIMARY KEY,
    position          bigint      NOT NULL,
    delivered         bigint      NOT NULL DEFAULT 0, -- messages the receiver took (2xx)
    retried           bigint      NOT NULL DEFAULT 0, -- messages that needed more than one try
    failed            bigint      NOT NULL DEFAULT 0, -- tries that failed (an error or not 2xx)
    last_error        text,
    last_error_at     timestamptz,
    last_delivered_at timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_cursors TO tunnelplane_app;
