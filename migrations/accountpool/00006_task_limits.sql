-- An organization's task limits in the Orchestrator (OrganizationSettings
-- .task_limits): concurrent tasks, tasks per second and the burst above
-- that rate. The AccountPool only keeps them; every Orchestrator reads them
-- with GetOrganizationSettings and enforces them. 0 means the
-- orchestrator's service-wide default (-org-max-concurrent-tasks,
-- -org-tasks-per-second, -org-task-burst), so existing rows (and rows a
-- binary older than this migration writes, which names none of the
-- columns) keep the defaults. The ranges are the API's
-- (UpdateOrganizationSettings validates them); the checks are the last
-- line against a value no orchestrator could use.
--
-- Adding columns with a constant default rewrites nothing (PostgreSQL 11+),
-- so this is instant at any table size. Row-level security, the grants and
-- the change-notify trigger of organization_settings cover the new columns
-- as they are.

-- +goose Up
ALTER TABLE organization_settings
  ADD COLUMN max_concurrent_tasks integer NOT NULL DEFAULT 0
    CHECK (max_concurrent_tasks BETWEEN 0 AND 100000),
  ADD COLUMN tasks_per_second double precision NOT NULL DEFAULT 0
    CHECK (tasks_per_second >= 0 AND tasks_per_second <= 100000),
  ADD COLUMN task_burst integer NOT NULL DEFAULT 0
    CHECK (task_burst BETWEEN 0 AND 100000);

-- +goose Down
-- Organizations lose their overrides and get the service defaults again.
ALTER TABLE organization_settings
  DROP COLUMN task_burst,
  DROP COLUMN tasks_per_second,
  DROP COLUMN max_concurrent_tasks;
