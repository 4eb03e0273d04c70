-- Sessions of the web console. The browser holds a random 32-byte token; only its sha256 is
-- stored (a high-entropy token needs no slow hash), so a copy of this table opens nothing.
-- A session speaks for the API key it was opened with, and ends with it: revoking the key
-- refuses the session at its next request (the lookup joins the key), deleting the key
-- deletes its sessions. expires_at is absolute (HUB_CONSOLE_SESSION_HOURS from login);
-- idle_expires_at moves forward when the session is seen (HUB_CONSOLE_IDLE_MINUTES), which
-- is written at most every few seconds, not on every request. csrf is the session's own
-- random form token. Ended rows (revoked, expired, their key revoked) are purged in bounded
-- batches by the housekeeping purge.
CREATE TABLE {schema}.console_session (
    id              uuid        PRIMARY KEY,
    token_hash      text        NOT NULL,
    api_key_id      uuid        NOT NULL REFERENCES {schema}.api_key (id) ON DELETE CASCADE,
    csrf            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    revoked_at      timestamptz,
    user_agent      text,
    remote_addr     text
);
-- every console request finds its session by the hash of its cookie
CREATE UNIQUE INDEX console_session_token_hash ON {schema}.console_session (token_hash);
-- the key's sessions: the cascade of a deleted key, the purge of a revoked key's sessions
CREATE INDEX console_session_api_key ON {schema}.console_session (api_key_id);
