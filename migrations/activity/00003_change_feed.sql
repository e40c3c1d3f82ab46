-- The change feed behind WatchActivities: every write that changes an
-- activity stamps it with a number from one sequence, change_seq, and a
-- watcher reads an organization's activities with change_seq above the
-- last number it saw, in that order.
--
-- That is exact only if, per organization, numbers become visible in the
-- order they are given out: a reader that has seen number 11 must never
-- later find a row that commits with 10. nextval() alone does not give
-- that, since concurrent transactions commit in any order. So every
-- writer takes the organization's change lock (activity_changes_lock, a
-- transaction-level advisory lock) before it draws numbers for it, and
-- draws them only at the end of its transaction, once its rows are
-- written: the lock is held from the stamping to the commit, and a later
-- writer of the organization draws its numbers only after the earlier one
-- committed.
--
-- Deadlocks: a writer takes every change lock it needs at once, in the
-- order of their keys, and after that only updates rows it has already
-- locked. So a transaction holding a change lock waits only for change
-- locks later in that order, and one waiting for a row lock holds none.
-- The two writers are stamp_activity_changes (the group commit, at the end
-- of every batch) and abandon_expired (the reaper).
--
-- The sequence must keep CACHE 1 (the default): with a larger cache each
-- session hands out numbers from its own block, out of order across
-- sessions, whatever the lock.

-- +goose Up
CREATE SEQUENCE activity_change_seq AS bigint;
GRANT USAGE ON SEQUENCE activity_change_seq TO switchyard_app;

-- 0 exists only inside a writing transaction, until its stamping: no
-- committed row written by a binary that knows this column keeps it.
ALTER TABLE activities ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;

-- Existing activities are numbered in the order they last changed, as
-- far as the rows tell. The owner reads past row-level security for this
-- only.
ALTER TABLE activities NO FORCE ROW LEVEL SECURITY;
UPDATE activities a SET change_seq = o.n
FROM (
  SELECT organization_id, id,
    row_number() OVER (ORDER BY COALESCE(complete_time, start_time), organization_id, id) AS n
  FROM activities
) o
WHERE a.organization_id = o.organization_id AND a.id = o.id;
SELECT setval('activity_change_seq', max(change_seq)) FROM activities HAVING max(change_seq) > 0;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;

CREATE INDEX activities_org_change ON activities (organization_id, change_seq);

-- activity_changes_lock takes the change locks of the organizations orgs,
-- until the end of the transaction, in the one order every writer uses:
-- by key, the 64-bit hash of the organization id. Two organizations whose
-- ids hash alike share a lock, which only serializes them.
-- +goose StatementBegin
CREATE FUNCTION activity_changes_lock(orgs text[])
RETURNS void
LANGUAGE plpgsql
VOLATILE
STRICT
AS $$
DECLARE
  k bigint;
BEGIN
  FOR k IN SELECT DISTINCT hashtextextended(o, 0) FROM unnest(orgs) o ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(k);
  END LOOP;
END
$$;
-- +goose StatementEnd

-- stamp_activity_changes is the last statement of every group commit:
-- orgs[i], ids[i] are the activities its writes addressed. It takes their
-- organizations' change locks, then gives a new change_seq to each of
-- those activities that this transaction has changed, recognised by its
-- row version's xmin being this transaction's id: a create that found the
-- id taken, or an append or completion that was refused, changed nothing
-- and is not stamped. The writes run at the transaction's top level (no
-- savepoints), so the rows they changed carry the top-level id. Each
-- organization's rows are updated under its own tenant setting, which it
-- leaves set to the last one.
-- +goose StatementBegin
CREATE FUNCTION stamp_activity_changes(orgs text[], ids uuid[])
RETURNS void
LANGUAGE plpgsql
VOLATILE
STRICT
AS $$
DECLARE
  me xid := pg_current_xact_id_if_assigned()::xid;
  this_org text;
BEGIN
  IF me IS NULL THEN
    RETURN; -- the transaction wrote nothing
  END IF;
  PERFORM activity_changes_lock(orgs);
  FOR this_org IN SELECT DISTINCT o FROM unnest(orgs) o LOOP
    PERFORM set_config('switchyard.organization_id', this_org, true);
    UPDATE activities SET change_seq = nextval('activity_change_seq')
    WHERE organization_id = this_org
      AND id IN (SELECT u.i FROM unnest(orgs, ids) u(o, i) WHERE u.o = this_org)
      AND xmin = me;
  END LOOP;
END
$$;
-- +goose StatementEnd

-- Like abandon_expired, the change functions are the application role's
-- alone, and resolve names on a fixed path, never the caller's.
REVOKE ALL ON FUNCTION activity_changes_lock(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION activity_changes_lock(text[]) TO switchyard_app;
REVOKE ALL ON FUNCTION stamp_activity_changes(text[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stamp_activity_changes(text[], uuid[]) TO switchyard_app;
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION activity_changes_lock(text[]) SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION stamp_activity_changes(text[], uuid[]) SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- abandon_expired as in 00002, but stamping what it abandons: it first
-- locks the expired rows (skipping those other transactions hold), then
-- takes their organizations' change locks, then abandons and numbers them
-- in one UPDATE of rows it already holds.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION abandon_expired(sweep_time timestamptz, grace interval, max_rows integer)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
STRICT
SECURITY DEFINER
AS $$
DECLARE
  n integer;
  orgs text[];
  ids uuid[];
BEGIN
  IF grace < interval '0' OR max_rows < 1 THEN
    RAISE EXCEPTION 'abandon_expired: grace must not be negative and max_rows must be positive (got %, %)', grace, max_rows;
  END IF;
  PERFORM set_config('switchyard.abandon_sweep', 'on', true);
  SELECT COALESCE(array_agg(e.organization_id), '{}'), COALESCE(array_agg(e.id), '{}') INTO orgs, ids
  FROM (
    SELECT organization_id, id FROM activities
    WHERE status = 'running' AND deadline IS NOT NULL AND deadline < sweep_time - grace
    ORDER BY deadline
    LIMIT max_rows
    FOR UPDATE SKIP LOCKED
  ) e;
  PERFORM activity_changes_lock(orgs);
  UPDATE activities a SET
    status = 'abandoned',
    complete_time = GREATEST(sweep_time, a.start_time),
    error_message = 'abandoned: no completion by the deadline '
      || to_char(a.deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
      || ' plus grace ' || trim_scale(extract(epoch FROM grace)::numeric)::text || 's',
    change_seq = nextval('activity_change_seq')
  FROM unnest(orgs, ids) e(organization_id, id)
  WHERE a.organization_id = e.organization_id AND a.id = e.id AND a.status = 'running';
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('switchyard.abandon_sweep', '', true);
  RETURN n;
END
$$;
-- +goose StatementEnd

-- CREATE OR REPLACE resets the function's settings: the fixed
-- search_path of 00002 is set again.
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION abandon_expired(timestamptz, interval, integer) SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION abandon_expired(sweep_time timestamptz, grace interval, max_rows integer)
RETURNS integer
LANGUAGE plpgsql
VOLATILE
STRICT
SECURITY DEFINER
AS $$
DECLARE
  n integer;
BEGIN
  IF grace < interval '0' OR max_rows < 1 THEN
    RAISE EXCEPTION 'abandon_expired: grace must not be negative and max_rows must be positive (got %, %)', grace, max_rows;
  END IF;
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
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION abandon_expired(timestamptz, interval, integer) SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd
DROP FUNCTION stamp_activity_changes(text[], uuid[]);
DROP FUNCTION activity_changes_lock(text[]);
DROP INDEX activities_org_change;
ALTER TABLE activities DROP COLUMN change_seq;
DROP SEQUENCE activity_change_seq;
