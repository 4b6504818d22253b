-- TrackHrs database roles: least privilege for each process.
--
-- Run once per database, connected to it as a superuser (or the database's
-- owner with CREATEROLE), before anything else:
--   psql -d trackhrs -v ON_ERROR_STOP=1 -f infra/postgres/roles.sql
-- then give each role a password (ALTER ROLE ... PASSWORD ...) or a
-- certificate, and:
--   trackhrs migrate --grant-gateway trackhrs_gateway --grant-projections trackhrs_projections
-- as trackhrs_migrate (TRACKHRS_DATABASE_URL=...user=trackhrs_migrate...).
--
--   trackhrs_migrate      owns the credential schema `auth` (`trackhrs migrate`).
--   trackhrs_projections  owns the read models: the catalog and every
--                         proj_<name>_v<version> schema, which it creates
--                         while it runs (`trackhrs projections run`, rebuild,
--                         dlq). Of `auth` it may only revoke tokens.
--   trackhrs_gateway      reads and writes `auth` (`trackhrs gateway`); reads
--                         and writes rows of the read models (queries, dead-
--                         letter replays) but owns none: it cannot drop or
--                         alter them.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trackhrs_migrate') THEN
        CREATE ROLE trackhrs_migrate LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trackhrs_projections') THEN
        CREATE ROLE trackhrs_projections LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'trackhrs_gateway') THEN
        CREATE ROLE trackhrs_gateway LOGIN;
    END IF;
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO trackhrs_migrate, trackhrs_projections, trackhrs_gateway',
                   current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO trackhrs_migrate, trackhrs_projections',
                   current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- The credential schema belongs to the migration role from the start, so no
-- other role that may create schemas (the projections') can create it first
-- and own the credentials.
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION trackhrs_migrate;

-- What the projections role creates, the gateway may read and write rows
-- of, never drop or alter.
ALTER DEFAULT PRIVILEGES FOR ROLE trackhrs_projections
    GRANT USAGE ON SCHEMAS TO trackhrs_gateway;
ALTER DEFAULT PRIVILEGES FOR ROLE trackhrs_projections
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO trackhrs_gateway;
