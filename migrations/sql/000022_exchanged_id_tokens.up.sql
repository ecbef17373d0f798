-- ID tokens of the identity provider exchanged for user tokens (POST /api/v1/auth/oidc/token):
-- each is exchanged once, so a token seen on the way (a log, a proxy, a shared terminal) cannot
-- mint more. Kept, by a hash of the token, until the token is too old to be exchanged anyway.
CREATE TABLE exchanged_id_tokens (
    token_hash bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    expires_at timestamptz NOT NULL
);
CREATE INDEX exchanged_id_tokens_expires_at ON exchanged_id_tokens (expires_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON exchanged_id_tokens TO tunnelplane_app;
