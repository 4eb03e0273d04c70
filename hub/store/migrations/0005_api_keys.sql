-- API keys of the HTTP API. A token is never stored: only the sha256 of it (tokens are 32
-- random bytes, so a fast hash is as good as a slow one) and a short public prefix, which
-- finds the row (unique index) and names the key in lists and logs without revealing it.
CREATE TABLE {schema}.api_key (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    prefix       text        NOT NULL UNIQUE,
    hash         text        NOT NULL,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
