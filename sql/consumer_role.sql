-- A read-only role for the consumers (training code, feature store, analysts), separate from the
-- pipeline's own role. Run it once as the pipeline's role (the one in POSTGRES_USER), which owns the
-- tables: the default privileges then cover every table and monthly partition it creates later.
-- docker-compose.yml runs it at the server's first start. Logins are granted the role by a DBA:
--     CREATE ROLE alice LOGIN PASSWORD '…' IN ROLE streamflow_reader;
-- No password lives in this repository.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'streamflow_reader') THEN
        CREATE ROLE streamflow_reader NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO streamflow_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO streamflow_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO streamflow_reader;

-- Feast (streamflow feast-repo): its PostgreSQL offline store reads a DataFrame of entity rows from a
-- table it creates for the query and drops after it. That table goes into this schema of its own
-- (feature_store.yaml's db_schema), the only place streamflow_reader may create anything; the contract's
-- tables stay read-only. An entity frame given as SQL needs not even this (entity_select_mode: embed_query).
CREATE SCHEMA IF NOT EXISTS streamflow_feast;
GRANT USAGE, CREATE ON SCHEMA streamflow_feast TO streamflow_reader;
