-- Activity schema: activities and their progress events. Both tables hold
-- one organization's rows and have row-level security enabled and forced.

-- +goose Up

-- See the accountpool migrations: the same role, created by whichever set
-- runs first.
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

GRANT SELECT ON goose_activity_version TO switchyard_app;

-- Activity ids are scoped to their organization: two organizations may use
-- the same id without learning of each other.
CREATE TABLE activities (
  organization_id text NOT NULL CHECK (organization_id <> ''),
  id              uuid NOT NULL,
  session_id      text NOT NULL,
  user_id         text NOT NULL,
  agent_type      text NOT NULL,
  agent_name      text NOT NULL,
  category        text NOT NULL,
  status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
  input_data      jsonb,
  output_data     jsonb,
  error_message   text NOT NULL DEFAULT '',
  metadata        jsonb,
  start_time      timestamptz NOT NULL,
  complete_time   timestamptz,
  -- How many progress events the activity has; the next event's sequence
  -- number is progress_count + 1.
  progress_count  integer NOT NULL DEFAULT 0,
  PRIMARY KEY (organization_id, id),
  CHECK ((status = 'running') = (complete_time IS NULL))
);
CREATE INDEX activities_org_start ON activities (organization_id, start_time DESC, id DESC);
CREATE INDEX activities_org_session_start ON activities (organization_id, session_id, start_time DESC, id DESC);
CREATE INDEX activities_org_status_start ON activities (organization_id, status, start_time DESC, id DESC);

CREATE TABLE progress_events (
  organization_id text NOT NULL,
  activity_id     uuid NOT NULL,
  sequence        bigint NOT NULL CHECK (sequence >= 1),
  message         text NOT NULL,
  data            jsonb,
  create_time     timestamptz NOT NULL,
  PRIMARY KEY (organization_id, activity_id, sequence),
  FOREIGN KEY (organization_id, activity_id) REFERENCES activities (organization_id, id) ON DELETE CASCADE
);

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;
ALTER TABLE progress_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE progress_events FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON activities
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));
CREATE POLICY tenant_isolation ON progress_events
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));

GRANT SELECT, INSERT, UPDATE ON activities TO switchyard_app;
GRANT SELECT, INSERT ON progress_events TO switchyard_app;

-- +goose Down
DROP TABLE progress_events;
DROP TABLE activities;
