-- ListUsage filtered by account orders by (create_time, id) descending, as
-- the unfiltered listing does on usage_records_org_time: this index holds
-- id too, so a page is an index range scan with no sort. Built
-- CONCURRENTLY, outside a transaction, so the ledger takes writes (and
-- RecordRequest goes on) while it builds on a large ledger. If the build
-- fails, `migrate up` again: the invalid index left behind is dropped
-- first.

-- +goose NO TRANSACTION

-- +goose Up
DROP INDEX CONCURRENTLY IF EXISTS usage_records_org_account_time_id;
CREATE INDEX CONCURRENTLY usage_records_org_account_time_id ON usage_records (organization_id, account_id, create_time DESC, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS usage_records_org_account_time;

-- +goose Down
CREATE INDEX CONCURRENTLY IF NOT EXISTS usage_records_org_account_time ON usage_records (organization_id, account_id, create_time DESC);
DROP INDEX CONCURRENTLY IF EXISTS usage_records_org_account_time_id;
