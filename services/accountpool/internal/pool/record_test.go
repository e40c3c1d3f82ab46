package pool

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// The row of a call can be written without its lease being settled: the
// first RecordRequest's ledger write committed, but its outcome was
// unknown to the caller, who retried. The retry settles the lease.
func TestARetryAfterAnUnknownWriteStillSettlesTheLease(t *testing.T) {
	f := newFixture(t)
	id := f.register("a", "tier2").Account.ID
	sel := f.mustSelect(estimate(1_000, 500))
	reserved := capacityOf(f.account(id), FamilySonnet)
	_, err := f.store.InsertUsage(f.ctx, store.UsageRecord{
		ID: uuid.NewString(), OrganizationID: f.org, AccountID: id, AccountName: "a", RequestID: "req-unknown", Attempt: 1,
		Outcome: store.OutcomeSuccess, Model: "claude-sonnet-4-5", InputTokens: 200, OutputTokens: 100,
		UpstreamRequestID: "req_up_1", CreateTime: f.clock.Now(),
	})
	require.NoError(t, err)

	res := f.record(sel, store.OutcomeSuccess, func(r *RecordRequest) {
		r.RequestID, r.UpstreamRequestID, r.Tokens = "req-unknown", "req_up_1", Tokens{Input: 200, Output: 100}
	})
	require.True(t, res.Duplicate, "the row was there")
	settled := capacityOf(f.account(id), FamilySonnet)
	require.Greater(t, settled.InputRemaining, reserved.InputRemaining, "but the lease was settled: the unused estimate is back")
	require.Equal(t, int64(449_800), settled.InputRemaining)

	again := f.record(sel, store.OutcomeSuccess, func(r *RecordRequest) {
		r.RequestID, r.UpstreamRequestID, r.Tokens = "req-unknown", "req_up_1", Tokens{Input: 200, Output: 100}
	})
	require.True(t, again.Duplicate)
	require.Equal(t, settled, capacityOf(f.account(id), FamilySonnet), "settled once")
}

// A request id run again (its first run was lost) makes a second real call
// under the same attempt number: it is recorded, not taken for a retry.
func TestASecondRealCallUnderTheSameAttemptIsRecorded(t *testing.T) {
	f := newFixture(t)
	f.register("a", "tier2")
	first := f.record(f.mustSelect(), store.OutcomeSuccess, func(r *RecordRequest) {
		r.RequestID, r.UpstreamRequestID, r.Tokens = "req-twice", "req_up_first", Tokens{Input: 10, Output: 5}
	})
	second := f.record(f.mustSelect(), store.OutcomeSuccess, func(r *RecordRequest) {
		r.RequestID, r.UpstreamRequestID, r.Tokens = "req-twice", "req_up_second", Tokens{Input: 10, Output: 5}
	})
	require.False(t, first.Duplicate)
	require.False(t, second.Duplicate)
	require.NotEqual(t, first.UsageID, second.UsageID)
	rows, _, err := f.store.ListUsage(f.ctx, f.org, store.UsageFilter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, rows, 2)
}
