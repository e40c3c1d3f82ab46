-- The registry of organization ids that have accounts, so maintenance
-- (`switchyard keys rewrap`) can visit every organization: under forced
-- row-level security nothing else can list them. It holds ids only, no
-- tenant data; the service role could act for any organization anyway, so
-- reading the ids gives it nothing new. Row-level security protects
-- against queries that forget their tenant, and this table has no rows of
-- a tenant to leak.

-- +goose Up
CREATE TABLE organizations (
  id          text PRIMARY KEY CHECK (id <> ''),
  create_time timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT ON organizations TO switchyard_app;

-- +goose StatementBegin
CREATE FUNCTION register_organization() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO organizations (id) VALUES (NEW.organization_id) ON CONFLICT (id) DO NOTHING;
  RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER accounts_register_organization AFTER INSERT ON accounts
  FOR EACH ROW EXECUTE FUNCTION register_organization();

-- Accounts created before this migration: the owner reads past row-level
-- security for the backfill only.
ALTER TABLE accounts NO FORCE ROW LEVEL SECURITY;
INSERT INTO organizations (id) SELECT DISTINCT organization_id FROM accounts ON CONFLICT (id) DO NOTHING;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;

-- +goose Down
DROP TRIGGER accounts_register_organization ON accounts;
DROP FUNCTION register_organization();
DROP TABLE organizations;
