-- Node enrollment tokens as the log issued, used and revoked them (enrollment_token.issued, .used,
-- .revoked). Never the token, nor its hash. Generations as in 000002.
CREATE TABLE rm_enrollment_tokens (
    generation    integer     NOT NULL,
    token_id      uuid        NOT NULL,
    issued_by     text        NOT NULL,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    max_uses      integer     NOT NULL,
    nodes         text[]      NOT NULL DEFAULT '{}',
    revoked_at    timestamptz,
    revoke_reason text,
    position      bigint      NOT NULL,
    PRIMARY KEY (generation, token_id)
);
CREATE INDEX rm_enrollment_tokens_issued ON rm_enrollment_tokens (generation, issued_at, token_id);

CREATE VIEW enrollment_tokens AS SELECT token_id, issued_by, issued_at, expires_at, max_uses, nodes, revoked_at, revoke_reason, position
    FROM rm_enrollment_tokens WHERE generation = (SELECT generation FROM projection_state WHERE name = 'enrollment_tokens');

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_enrollment_tokens TO tunnelplane_app;
GRANT SELECT ON enrollment_tokens TO tunnelplane_app;
