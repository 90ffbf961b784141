-- Least privilege on PostgreSQL: the migration Job owns the schema, the serving pods only read and
-- write rows. Run once per database as its owner or a superuser, e.g.
--   psql "$ADMIN_URL" -f deploy/postgres-roles.sql
-- then set each role's password out of band (ALTER ROLE ... PASSWORD, or your cloud's IAM login).
-- tests/store/test_roles.py runs this file (with its own role and schema names) against PostgreSQL.

-- cds_migrator: `cds-service migrate` (deploy/k8s/base/migrate-job.yaml). Owns the schema and every
-- table it creates, so CREATE, ALTER and DROP are its alone.
CREATE ROLE cds_migrator LOGIN;
-- cds_app: the serving pods (`cds-service serve`, CDS_MIGRATE_AT_START=false) and `cds-service
-- prune` / `report`. No CREATE on any schema: a statement changing the schema fails.
CREATE ROLE cds_app LOGIN;

CREATE SCHEMA cds AUTHORIZATION cds_migrator;
REVOKE ALL ON SCHEMA cds FROM PUBLIC;
GRANT USAGE ON SCHEMA cds TO cds_app;
-- Rows of the tables the migrator creates now and later: read, insert, update (the jti upsert),
-- delete (prune); the sequence of feedback's id. Nothing else (no TRUNCATE, REFERENCES, TRIGGER).
ALTER DEFAULT PRIVILEGES FOR ROLE cds_migrator IN SCHEMA cds
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO cds_app;
ALTER DEFAULT PRIVILEGES FOR ROLE cds_migrator IN SCHEMA cds
    GRANT USAGE, SELECT ON SEQUENCES TO cds_app;
-- Tables made before this script (a database the service migrated itself): the same rows rights.
-- Their owner should then become cds_migrator (ALTER TABLE ... OWNER TO cds_migrator).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA cds TO cds_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA cds TO cds_app;

-- Both find the tables without a search_path in CDS_DATABASE_URL.
ALTER ROLE cds_migrator SET search_path = cds;
ALTER ROLE cds_app SET search_path = cds;
-- PostgreSQL 14 and older let every role create tables in `public`: take that away too.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
