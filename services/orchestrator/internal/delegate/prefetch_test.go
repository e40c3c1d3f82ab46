package delegate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
)

// callOrder records which of TrackStart and SelectAccount began first and
// lets TrackStart wait for a selection to have begun.
type callOrder struct {
	mu       sync.Mutex
	calls    []string
	selected chan struct{}
	once     sync.Once
}

func watchOrder(h *harness) *callOrder {
	o := &callOrder{selected: make(chan struct{})}
	h.pool.onSelect = func() {
		o.add("select")
		o.once.Do(func() { close(o.selected) })
	}
	return o
}

func (o *callOrder) add(c string) {
	o.mu.Lock()
	o.calls = append(o.calls, c)
	o.mu.Unlock()
}

func (o *callOrder) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.calls...)
}

func TestSelectionOverlapsTrackStartWithoutARequestID(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	o := watchOrder(h)
	h.activity.onStart = func() {
		o.add("start")
		// TrackStart still committing when the selection begins: the
		// two round trips overlap.
		select {
		case <-o.selected:
		case <-time.After(5 * time.Second):
			t.Error("SelectAccount did not begin while TrackStart ran")
		}
	}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Len(t, h.pool.selects, 1, "one selection, the prefetched one, ran the task")
	require.Len(t, h.pool.records, 1)
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_SUCCESS, h.pool.records[0].GetOutcome())
	require.NotEmpty(t, resp.GetMetadata().GetActivityId())
}

func TestSelectionWaitsForTrackStartWithARequestID(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	o := watchOrder(h)
	h.activity.onStart = func() { o.add("start") }
	tk := task()
	tk.RequestID = "req-ordered"
	_, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, []string{"start", "select"}, o.list(), "a task that may be a replay selects only after TrackStart")

	// The replay selects nothing at all.
	_, err = h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, []string{"start", "select", "start"}, o.list())
}

func TestRefusedTrackStartGivesThePrefetchedLeaseBack(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	st, err := status.New(codes.InvalidArgument, "input_data is too large").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "input_data", Description: "is too large"}},
	})
	require.NoError(t, err)
	h.activity.startErr = st.Err()
	_, err = h.runner.Run(context.Background(), task())
	require.Error(t, err)
	require.Empty(t, h.exec.keysCalled(), "the model was not called")
	require.Len(t, h.pool.selects, 1, "the selection was prefetched")
	require.Len(t, h.pool.records, 1, "and its lease given back")
	rec := h.pool.records[0]
	require.Equal(t, h.pool.selects[0].GetRequestId(), rec.GetRequestId())
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_CLIENT_ERROR, rec.GetOutcome(), "as an attempt that never left: nothing counts against the account")
	require.Zero(t, rec.GetInputTokens()+rec.GetOutputTokens())
	require.NotEmpty(t, rec.GetLeaseId())
}

func TestRefusedTrackStartDoesNotWaitForThePrefetchedSelection(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.pool.selectDelay = time.Minute // a pool still waiting for capacity
	st, err := status.New(codes.InvalidArgument, "input_data is too large").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "input_data", Description: "is too large"}},
	})
	require.NoError(t, err)
	h.activity.startErr = st.Err()
	done := make(chan error, 1)
	go func() {
		_, err := h.runner.Run(context.Background(), task())
		done <- err
	}()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the refusal waited for the selection")
	}
	require.Empty(t, h.pool.records, "no lease was granted, so none is given back")
}
