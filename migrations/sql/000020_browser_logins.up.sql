-- Browser logins under way (the authorization code flow with PKCE): created when a browser is
-- sent to the identity provider, deleted when it comes back (or found expired), so that any
-- control plane replica can finish a login and each finishes once. Keyed by a hash of the
-- state, never the state itself.
CREATE TABLE browser_logins (
    state_hash    bytea       PRIMARY KEY CHECK (length(state_hash) = 32),
    nonce         text        NOT NULL CHECK (length(nonce) BETWEEN 16 AND 128),
    code_verifier text        NOT NULL CHECK (length(code_verifier) BETWEEN 43 AND 128),
    origin        text        NOT NULL CHECK (length(origin) BETWEEN 1 AND 300),
    return_path   text        NOT NULL CHECK (length(return_path) BETWEEN 1 AND 2048),
    client_state  text        NOT NULL CHECK (length(client_state) <= 128),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX browser_logins_expires_at ON browser_logins (expires_at);

GRANT SELECT, INSERT, DELETE ON browser_logins TO tunnelplane_app;
