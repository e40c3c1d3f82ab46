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

-- +goose Down
-- Drops the keys: organizations then run legacy mode on the environment
-- key. The registry keeps their ids, which is harmless (ids only).
DROP TABLE default_keys;
