-- +goose Up
-- A usage row is the record of one upstream call. The key was (request id,
-- attempt), which deduplicated a retried RecordRequest but also dropped a
-- second, real call under the same pair (a request_id run again after its
-- first run was lost) as a "duplicate". The upstream's request id tells the
-- calls apart: a retried RecordRequest carries the same one, a new call a
-- new one.
ALTER TABLE usage_records DROP CONSTRAINT usage_records_organization_id_request_id_attempt_key;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_call_key
  UNIQUE (organization_id, request_id, attempt, upstream_request_id);

-- +goose Down
-- Fails while two rows share (organization, request id, attempt): keep the
-- new key, or delete the later rows first.
ALTER TABLE usage_records DROP CONSTRAINT usage_records_call_key;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_organization_id_request_id_attempt_key
  UNIQUE (organization_id, request_id, attempt);
