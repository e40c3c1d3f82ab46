-- An organization's default key: the API key legacy mode runs on while the
-- organization has no account in service, before the operator's
-- environment key. One row per organization, the key as AES-256-GCM
-- ciphertext only (bound to the organization and to the default-key
-- purpose, so it cannot be swapped with an account's), row-level security
-- exactly like accounts.

-- +goose Up
CREATE TABLE default_keys (
  organization_id text PRIMARY KEY CHECK (organization_id <> ''),
  key_ciphertext  bytea NOT NULL,
  key_version     integer NOT NULL,
  -- Set once the upstream rejected the key (401/402/403); setting the key
  -- again clears it.
  invalid         boolean NOT NULL DEFAULT false,
  update_time     timestamptz NOT NULL
);

ALTER TABLE default_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE default_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON default_keys
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));

GRANT SELECT, INSERT, UPDATE, DELETE ON default_keys TO switchyard_app;

-- Every process reloads the organization's view on a change, as for
-- accounts and settings.
CREATE TRIGGER default_keys_notify AFTER INSERT OR UPDATE OR DELETE ON default_keys
  FOR EACH ROW EXECUTE FUNCTION notify_accountpool_change();
-- `switchyard keys rewrap` visits the organizations of the registry: an
-- organization with a default key and no account must be among them.
CREATE TRIGGER default_keys_register_organization AFTER INSERT ON default_keys
  FOR EACH ROW EXECUTE FUNCTION register_organization();

-- Legacy-mode usage rows were named "default" when the environment key was
-- the only legacy key; "default" now names the organization's own key, so
-- the rows written before are renamed to what they ran on. The owner is
-- subject to the forced row-level security too, so it is lifted for this
-- one statement, inside the migration's transaction.
ALTER TABLE usage_records NO FORCE ROW LEVEL SECURITY;
UPDATE usage_records SET account_name = 'environment' WHERE account_id IS NULL AND account_name = 'default';
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;

-- +goose Down
-- Drops the keys: organizations then run legacy mode on the environment
-- key. The registry keeps their ids, which is harmless (ids only). Legacy
-- rows of either key are named "default" again, as before.
ALTER TABLE usage_records NO FORCE ROW LEVEL SECURITY;
UPDATE usage_records SET account_name = 'default' WHERE account_id IS NULL AND account_name = 'environment';
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
DROP TABLE default_keys;
