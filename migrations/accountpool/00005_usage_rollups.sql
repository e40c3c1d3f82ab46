-- Hourly usage rollups, so that GetUsage costs the same at any ledger
-- size: SumUsage reads whole hours here and only the partial hours at the
-- edges of its range from the ledger (pgstore/usage.go).
--
-- One row per (organization, account, legacy key name, model, hour): the
-- grouping of SumUsage, which sums per account and, for legacy rows (no
-- account), per account name. account_id is '' for legacy rows and
-- legacy_name is '' for an account's rows, so the key has no NULLs. The
-- hour is date_bin over UTC, independent of the session's time zone.
-- last_time, last_id and last_name are the newest row summed (by
-- create_time, then id), which is where a total's account name comes from.
--
-- The rollup is maintained by a statement-level trigger on the ledger: one
-- INSERT ... ON CONFLICT DO UPDATE per ledger INSERT statement (the ledger
-- writes one per organization per group commit), in the same transaction,
-- adding the per-hour sums of the rows that statement actually inserted
-- (its transition table: a row the ledger's ON CONFLICT DO NOTHING refused
-- as a duplicate is not in it, so it is never counted twice). A trigger,
-- rather than a second statement in the store, also keeps the rollup exact
-- for rows written by a binary older than this migration during a
-- rollout. The ledger stays insert-only, so nothing else can change a sum.

-- +goose Up
CREATE TABLE usage_rollups (
  organization_id       text NOT NULL CHECK (organization_id <> ''),
  bucket                timestamptz NOT NULL,
  account_id            text NOT NULL,
  legacy_name           text NOT NULL,
  model                 text NOT NULL,
  requests              bigint NOT NULL,
  failed_requests       bigint NOT NULL,
  input_tokens          bigint NOT NULL,
  output_tokens         bigint NOT NULL,
  cache_read_tokens     bigint NOT NULL,
  cache_creation_tokens bigint NOT NULL,
  cost_usd              double precision NOT NULL,
  last_time             timestamptz NOT NULL,
  last_id               uuid NOT NULL,
  last_name             text NOT NULL,
  PRIMARY KEY (organization_id, bucket, account_id, legacy_name, model)
);

-- +goose StatementBegin
CREATE FUNCTION roll_up_usage() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
BEGIN
  INSERT INTO usage_rollups AS r (organization_id, bucket, account_id, legacy_name, model,
      requests, failed_requests, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd,
      last_time, last_id, last_name)
  SELECT n.organization_id,
      date_bin('1 hour', n.create_time, timestamptz '2000-01-01 00:00:00+00'),
      COALESCE(n.account_id::text, ''),
      CASE WHEN n.account_id IS NULL THEN n.account_name ELSE '' END,
      n.model,
      count(*), count(*) FILTER (WHERE n.outcome <> 'success'),
      sum(n.input_tokens)::bigint, sum(n.output_tokens)::bigint,
      sum(n.cache_read_tokens)::bigint, sum(n.cache_creation_tokens)::bigint, sum(n.cost_usd),
      (array_agg(n.create_time ORDER BY n.create_time DESC, n.id DESC))[1],
      (array_agg(n.id ORDER BY n.create_time DESC, n.id DESC))[1],
      (array_agg(n.account_name ORDER BY n.create_time DESC, n.id DESC))[1]
  FROM new_usage_rows n
  GROUP BY 1, 2, 3, 4, 5
  -- Every writer locks the rollup rows in key order: no deadlocks
  -- between concurrent group commits.
  ORDER BY 1, 2, 3, 4, 5
  ON CONFLICT (organization_id, bucket, account_id, legacy_name, model) DO UPDATE SET
    requests              = r.requests + EXCLUDED.requests,
    failed_requests       = r.failed_requests + EXCLUDED.failed_requests,
    input_tokens          = r.input_tokens + EXCLUDED.input_tokens,
    output_tokens         = r.output_tokens + EXCLUDED.output_tokens,
    cache_read_tokens     = r.cache_read_tokens + EXCLUDED.cache_read_tokens,
    cache_creation_tokens = r.cache_creation_tokens + EXCLUDED.cache_creation_tokens,
    cost_usd              = r.cost_usd + EXCLUDED.cost_usd,
    last_time = CASE WHEN (EXCLUDED.last_time, EXCLUDED.last_id) > (r.last_time, r.last_id) THEN EXCLUDED.last_time ELSE r.last_time END,
    last_id   = CASE WHEN (EXCLUDED.last_time, EXCLUDED.last_id) > (r.last_time, r.last_id) THEN EXCLUDED.last_id ELSE r.last_id END,
    last_name = CASE WHEN (EXCLUDED.last_time, EXCLUDED.last_id) > (r.last_time, r.last_id) THEN EXCLUDED.last_name ELSE r.last_name END;
  RETURN NULL;
END
$$;
-- +goose StatementEnd

-- Writers wait until this migration commits, and then run the trigger:
-- no row is both missed by the backfill and written before the trigger.
LOCK TABLE usage_records IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER usage_records_roll_up AFTER INSERT ON usage_records
  REFERENCING NEW TABLE AS new_usage_rows
  FOR EACH STATEMENT EXECUTE FUNCTION roll_up_usage();

-- The backfill: the owner reads past row-level security for it only.
ALTER TABLE usage_records NO FORCE ROW LEVEL SECURITY;
INSERT INTO usage_rollups (organization_id, bucket, account_id, legacy_name, model,
    requests, failed_requests, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd,
    last_time, last_id, last_name)
SELECT organization_id,
    date_bin('1 hour', create_time, timestamptz '2000-01-01 00:00:00+00'),
    COALESCE(account_id::text, ''),
    CASE WHEN account_id IS NULL THEN account_name ELSE '' END,
    model,
    count(*), count(*) FILTER (WHERE outcome <> 'success'),
    sum(input_tokens)::bigint, sum(output_tokens)::bigint,
    sum(cache_read_tokens)::bigint, sum(cache_creation_tokens)::bigint, sum(cost_usd),
    (array_agg(create_time ORDER BY create_time DESC, id DESC))[1],
    (array_agg(id ORDER BY create_time DESC, id DESC))[1],
    (array_agg(account_name ORDER BY create_time DESC, id DESC))[1]
FROM usage_records
GROUP BY 1, 2, 3, 4, 5;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;

ALTER TABLE usage_rollups ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_rollups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_rollups
  USING (organization_id = current_setting('switchyard.organization_id', true))
  WITH CHECK (organization_id = current_setting('switchyard.organization_id', true));

-- The service role only reads the rollups: the trigger function writes
-- them as its owner (SECURITY DEFINER, from the rows the service's own
-- INSERT added, which row-level security already checked), so the service
-- can no more change a total than a ledger row. The function resolves
-- names on this schema's path, never the caller's, and nobody calls it
-- but the trigger.
GRANT SELECT ON usage_rollups TO switchyard_app;
REVOKE ALL ON FUNCTION roll_up_usage() FROM PUBLIC;
-- +goose StatementBegin
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION roll_up_usage() SET search_path = %I, pg_temp', current_schema());
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER usage_records_roll_up ON usage_records;
DROP FUNCTION roll_up_usage();
DROP TABLE usage_rollups;
