-- AccountPool schema: organization settings, accounts (keys as AES-256-GCM
-- ciphertext only) and the usage ledger. Every table holds one
-- organization's rows and has row-level security enabled and forced.

-- +goose Up

-- The role the services connect as: it owns nothing, cannot bypass
-- row-level security, and gets only the grants below. Roles are
-- cluster-wide, so another schema or database may have created it already.
-- +goose StatementBegin
DO $$
BEGIN
  CREATE ROLE switchyard_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO switchyard_app', current_schema());
END
$$;
-- +goose StatementEnd

GRANT SELECT ON goose_accountpool_version TO switchyard_app;

CREATE TABLE organization_settings (
  organization_id    text PRIMARY KEY CHECK (organization_id <> ''),
  selection_strategy text NOT NULL,
  update_time        timestamptz NOT NULL
);

CREATE TABLE accounts (
  id              uuid PRIMARY KEY,
  organization_id text NOT NULL CHECK (organization_id <> ''),
  name            text NOT NULL,
  tier            text NOT NULL,
  status          text NOT NULL CHECK (status IN ('active', 'disabled', 'invalid')),
  weight          integer NOT NULL,
  priority        integer NOT NULL,
  quota_group     text NOT NULL DEFAULT '',
  labels          jsonb NOT NULL DEFAULT '{}',
  key_ciphertext  bytea NOT NULL,
  key_version     integer NOT NULL,
  create_time     timestamptz NOT NULL,
  update_time     timestamptz NOT NULL,
  UNIQUE (organization_id, name)
);

-- One row per successful or failed model call. account_id is NULL for
-- legacy-mode calls (the orchestrator's fallback key). Rows outlive their
-- account: there is deliberately no foreign key.
CREATE TABLE usage_records (
  id                    uuid PRIMARY KEY,
  organization_id       text NOT NULL CHECK (organization_id <> ''),
  account_id            uuid,
  account_name          text NOT NULL,
  request_id            text NOT NULL,
  attempt               integer NOT NULL CHECK (attempt >= 1),
  outcome               text NOT NULL,
  model                 text NOT NULL,
  category              text NOT NULL,
  session_id            text NOT NULL,
  user_id               text NOT NULL,
  input_tokens          bigint NOT NULL CHECK (input_tokens >= 0),
  output_tokens         bigint NOT NULL CHECK (output_tokens >= 0),
  cache_read_tokens     bigint NOT NULL CHECK (cache_read_tokens >= 0),
  cache_creation_tokens bigint NOT NULL CHECK (cache_creation_tokens >= 0),
  cost_usd              double precision NOT NULL,
  http_status           integer NOT NULL,
  error_type            text NOT NULL,
  upstream_request_id   text NOT NULL,
  duration_ms           bigint NOT NULL,
  create_time           timestamptz NOT NULL,
  UNIQUE (organization_id, request_id, attempt)
);
CREATE INDEX usage_records_org_time ON usage_records (organization_id, create_time DESC, id DESC);
CREATE INDEX usage_records_org_account_time ON usage_records (organization_id, account_id, create_time DESC);

ALTER TABLE organization_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE organization_settings FORCE ROW LEVEL SECURITY;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON organization_settings
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));
CREATE POLICY tenant_isolation ON accounts
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));
CREATE POLICY tenant_isolation ON usage_records
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));

-- The ledger is append-only for the service: no UPDATE or DELETE grant.
GRANT SELECT, INSERT, UPDATE ON organization_settings TO switchyard_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO switchyard_app;
GRANT SELECT, INSERT ON usage_records TO switchyard_app;

-- Every change to an organization's accounts or settings is announced on
-- channel switchyard_accountpool with the organization id as payload, so
-- every AccountPool process refreshes its in-memory view, whoever made the
-- change. NOTIFY is delivered at commit.
-- +goose StatementBegin
CREATE FUNCTION notify_accountpool_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('switchyard_accountpool', COALESCE(NEW.organization_id, OLD.organization_id));
  RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OR DELETE ON accounts
  FOR EACH ROW EXECUTE FUNCTION notify_accountpool_change();
CREATE TRIGGER organization_settings_notify AFTER INSERT OR UPDATE OR DELETE ON organization_settings
  FOR EACH ROW EXECUTE FUNCTION notify_accountpool_change();

-- +goose Down
DROP TABLE usage_records;
DROP TABLE accounts;
DROP TABLE organization_settings;
DROP FUNCTION notify_accountpool_change();
-- The role may serve other schemas or databases; it is left in place.
