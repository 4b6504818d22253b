-- Credentials live here, outside the immutable event log, so they can be
-- replaced and erased. Only hashes of secrets are stored.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.accounts (
    org_id        text NOT NULL,
    person_id     text NOT NULL,
    email_lower   text NOT NULL,
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, person_id),
    UNIQUE (org_id, email_lower)
);

CREATE TABLE IF NOT EXISTS auth.invitations (
    org_id      text NOT NULL,
    person_id   text NOT NULL,
    email_lower text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (org_id, person_id)
);

CREATE TABLE IF NOT EXISTS auth.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    org_id     text NOT NULL,
    person_id  text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS refresh_tokens_by_person ON auth.refresh_tokens (org_id, person_id);
-- The chain of tokens refreshed from one log-in: a spent token presented
-- again revokes the whole chain.
ALTER TABLE auth.refresh_tokens ADD COLUMN IF NOT EXISTS family bytea;
-- A token issued before families were kept starts its own.
UPDATE auth.refresh_tokens SET family = token_hash WHERE family IS NULL;
ALTER TABLE auth.refresh_tokens ALTER COLUMN family SET NOT NULL;
CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON auth.refresh_tokens (family);

CREATE TABLE IF NOT EXISTS auth.device_tokens (
    org_id     text NOT NULL,
    device_id  text NOT NULL,
    person_id  text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    PRIMARY KEY (org_id, device_id)
);
CREATE INDEX IF NOT EXISTS device_tokens_by_person ON auth.device_tokens (org_id, person_id);

CREATE TABLE IF NOT EXISTS auth.signing_keys (
    kid        text PRIMARY KEY,
    secret     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at timestamptz
);

-- Log-in attempts per account and client and per client, in fixed windows;
-- a key over its limit is blocked until blocked_until, for longer with each
-- strike. Keys are keyed hashes (HMAC under auth.secrets' throttle secret),
-- so no e-mail address, nor a digest computable from one, is kept here.
CREATE TABLE IF NOT EXISTS auth.login_throttle (
    key          text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL
);
ALTER TABLE auth.login_throttle ADD COLUMN IF NOT EXISTS strikes integer NOT NULL DEFAULT 0;
ALTER TABLE auth.login_throttle ADD COLUMN IF NOT EXISTS blocked_until timestamptz;

-- Secrets of the credential store itself (the throttle's hash key), wrapped
-- under the key-encryption key like the signing keys.
CREATE TABLE IF NOT EXISTS auth.secrets (
    name   text PRIMARY KEY,
    secret bytea NOT NULL
);
