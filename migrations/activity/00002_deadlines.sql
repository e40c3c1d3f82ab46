-- Deadlines and abandonment: an activity may carry the time by which its
-- task will have finished or given up, and one still RUNNING once that
-- deadline and a grace period have passed is marked ABANDONED by the
-- service's reaper, so that no activity stays RUNNING forever.
--
-- The sweep must see every organization's running activities, which the
-- tenant policy never shows. It is the function abandon_expired: SECURITY
-- DEFINER, owned by the role running this migration (the schema owner),
-- the only function switchyard_app may execute, doing one fixed bounded
-- UPDATE. Row-level security stays enabled and forced: for a schema owner
-- that is not a superuser, the policies abandon_sweep_* let it read and
-- abandon running rows only while the setting switchyard.abandon_sweep is
-- 'on', which the function sets for its own duration only (and which only
-- the owner's policies read). The owner's own sessions, and every query of
-- switchyard_app, see exactly what they saw before. An organization
-- registry (as AccountPool keeps for `keys rewrap`) was the alternative; it
-- would cost a write on every TrackStart and one statement per
-- organization per sweep.

-- +goose Up
ALTER TABLE activities ADD COLUMN deadline timestamptz;

ALTER TABLE activities DROP CONSTRAINT activities_status_check;
ALTER TABLE activities ADD CONSTRAINT activities_status_check
  CHECK (status IN ('running', 'completed', 'failed', 'abandoned'));

-- What the sweep scans: running activities with a deadline, earliest first.
CREATE INDEX activities_running_deadline ON activities (deadline)
  WHERE status = 'running' AND deadline IS NOT NULL;

CREATE POLICY abandon_sweep_select ON activities FOR SELECT TO CURRENT_USER
  USING (current_setting('switchyard.abandon_sweep', true) = 'on' AND status IN ('running', 'abandoned'));
CREATE POLICY abandon_sweep_update ON activities FOR UPDATE TO CURRENT_USER
  USING (current_setting('switchyard.abandon_sweep', true) = 'on' AND status = 'running')
  WITH CHECK (current_setting('switchyard.abandon_sweep', true) = 'on' AND status = 'abandoned');

-- abandon_expired marks at most max_rows RUNNING activities, of every
-- organization, whose deadline + grace is before sweep_time as ABANDONED,
-- earliest deadline first, and returns how many. Rows another transaction
-- holds (a TrackComplete in flight) are skipped, not waited for, so
-- concurrent sweeps of several replicas never block each other. The error
-- message is the one store.AbandonReason formats.
-- +goose StatementBegin
CREATE FUNCTION abandon_expired(sweep_time timestamptz, grace interval, max_rows integer)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
STRICT
SECURITY DEFINER
AS $$
DECLARE
  n integer;
BEGIN
  -- A privileged function checks its own arguments: a negative grace
  -- would abandon activities before their deadline.
  IF grace < interval '0' OR max_rows < 1 THEN
    RAISE EXCEPTION 'abandon_expired: grace must not be negative and max_rows must be positive (got %, %)', grace, max_rows;
  END IF;
  -- Transaction-local, and reset below: an error aborts the transaction,
  -- which undoes the setting too.
  PERFORM set_config('switchyard.abandon_sweep', 'on', true);
  WITH expired AS (
    SELECT organization_id, id FROM activities
    WHERE status = 'running' AND deadline IS NOT NULL AND deadline < sweep_time - grace
    ORDER BY deadline
    LIMIT max_rows
    FOR UPDATE SKIP LOCKED
  ), abandoned AS (
    UPDATE activities a SET
      status = 'abandoned',
      complete_time = GREATEST(sweep_time, a.start_time),
      error_message = 'abandoned: no completion by the deadline '
        || to_char(a.deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || ' plus grace ' || trim_scale(extract(epoch FROM grace)::numeric)::text || 's'
    FROM expired e
    WHERE a.organization_id = e.organization_id AND a.id = e.id AND a.status = 'running'
    RETURNING 1
  )
  SELECT count(*) INTO n FROM abandoned;
  PERFORM set_config('switchyard.abandon_sweep', '', true);
  RETURN n;
END
$$;
-- +goose StatementEnd

-- A SECURITY DEFINER function resolves names on a fixed path, never the
-- caller's.
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION abandon_expired(timestamptz, interval, integer) SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION abandon_expired(timestamptz, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION abandon_expired(timestamptz, interval, integer) TO switchyard_app;

-- +goose Down
DROP FUNCTION abandon_expired(timestamptz, interval, integer);
DROP POLICY abandon_sweep_update ON activities;
DROP POLICY abandon_sweep_select ON activities;
DROP INDEX activities_running_deadline;

-- The old schema has no ABANDONED: such activities become FAILED, keeping
-- their reason. The owner reads past row-level security for this only.
ALTER TABLE activities NO FORCE ROW LEVEL SECURITY;
UPDATE activities SET status = 'failed' WHERE status = 'abandoned';
ALTER TABLE activities FORCE ROW LEVEL SECURITY;

ALTER TABLE activities DROP CONSTRAINT activities_status_check;
ALTER TABLE activities ADD CONSTRAINT activities_status_check
  CHECK (status IN ('running', 'completed', 'failed'));
ALTER TABLE activities DROP COLUMN deadline;
