package delegate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// recorder collects a stream's events.
type recorder struct {
	mu     sync.Mutex
	events []delegate.Event
}

func (r *recorder) observe(e delegate.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// kinds is the event sequence with text deltas collapsed into one "text".
func (r *recorder) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[delegate.EventKind]string{
		delegate.EventAccepted: "accepted", delegate.EventAttemptStarted: "started", delegate.EventText: "text",
		delegate.EventAttemptFailed: "failed", delegate.EventRestart: "restart",
	}
	var out []string
	for _, e := range r.events {
		n := names[e.Kind]
		if n == "text" && len(out) > 0 && out[len(out)-1] == "text" {
			continue
		}
		out = append(out, n)
	}
	return out
}

// textSinceRestart is what a client following the protocol shows.
func (r *recorder) textSinceRestart() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		switch e.Kind {
		case delegate.EventRestart:
			b.Reset()
		case delegate.EventText:
			b.WriteString(e.Text)
		}
	}
	return b.String()
}

func TestStreamEventsOfASuccess(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{ok("hello from a streamed answer")}
	var rec recorder
	resp, err := h.runner.Stream(context.Background(), task(), rec.observe)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "started", "text"}, rec.kinds())
	require.Equal(t, resp.GetOutput(), rec.textSinceRestart())
	acc := rec.events[0]
	require.Equal(t, resp.GetMetadata().GetActivityId(), acc.ActivityID)
	require.Equal(t, resp.GetMetadata().GetRequestId(), acc.RequestID)
	require.Equal(t, "claude-haiku-4-5", acc.Model)
	started := rec.events[1]
	require.Equal(t, 1, started.Attempt)
	require.Equal(t, "a1", started.AccountID)
	require.Equal(t, "alpha", started.AccountName)
}

func TestStreamFailoverBeforeAnyText(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	h.exec.scripts["key-b"] = []executor.Result{ok("from bravo")}
	var rec recorder
	resp, err := h.runner.Stream(context.Background(), task(), rec.observe)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "started", "failed", "started", "text"}, rec.kinds(), "no restart: nothing to discard")
	require.Equal(t, "from bravo", rec.textSinceRestart())
	require.Equal(t, "from bravo", resp.GetOutput())
	failedEv := rec.events[2]
	require.Equal(t, "rate_limited", failedEv.Outcome)
	require.Equal(t, 429, failedEv.HTTPStatus)
	require.Contains(t, failedEv.Reason, "rate_limit_error")
}

func TestStreamFailoverAfterTextSendsRestart(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	broken := failed(executor.UpstreamError, 200, "overloaded_error")
	broken.Text = "partial answer that must be discarded"
	broken.Usage = executor.Usage{InputTokens: 12, OutputTokens: 1}
	h.exec.scripts["key-a"] = []executor.Result{broken}
	h.exec.scripts["key-b"] = []executor.Result{ok("the whole answer")}
	var rec recorder
	resp, err := h.runner.Stream(context.Background(), task(), rec.observe)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Equal(t, []string{"accepted", "started", "text", "failed", "restart", "started", "text"}, rec.kinds())
	require.Equal(t, "the whole answer", rec.textSinceRestart(), "the client discards the first attempt's text")
	for _, e := range rec.events {
		if e.Kind == delegate.EventRestart {
			require.Equal(t, 1, e.Attempt)
		}
	}
	// The broken stream is recorded with the usage the upstream reported
	// and counts as an upstream error (the breaker's business).
	require.Len(t, h.pool.records, 2)
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, h.pool.records[0].GetOutcome())
	require.EqualValues(t, 12, h.pool.records[0].GetInputTokens())
	require.EqualValues(t, 22, resp.GetMetadata().GetInputTokens(), "both attempts' usage is in the task")
}

func TestStreamReplaySendsTheStoredResult(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	tk := task()
	tk.RequestID = "req-stream"
	first, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	var rec recorder
	again, err := h.runner.Stream(context.Background(), tk, rec.observe)
	require.NoError(t, err)
	require.True(t, again.GetMetadata().GetReplayed())
	require.Equal(t, first.GetOutput(), again.GetOutput())
	require.Equal(t, []string{"accepted"}, rec.kinds(), "no attempt events for a replay")
	require.Len(t, h.exec.keysCalled(), 1)
}

func TestALocallyRefusedRequestDoesNotFailOver(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{{Outcome: executor.NotSent, ErrorType: "request_not_sent", ErrorMessage: "the request could not be sent: bad URL"}}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, resp.GetStatus())
	require.Equal(t, []string{"key-a"}, h.exec.keysCalled(), "another account would be refused the same way")
	require.Contains(t, resp.GetError(), "could not be sent")
	require.Len(t, h.pool.records, 1)
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_CLIENT_ERROR, h.pool.records[0].GetOutcome(), "recorded as the task's fault: no breaker count")
}

func TestFallbackOnlyWhenThePoolIsUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "session_id: contains a control character"), codes.InvalidArgument},
		{"permission denied", status.Error(codes.PermissionDenied, "a org token may not call SelectAccount"), codes.PermissionDenied},
		{"internal", status.Error(codes.Internal, "internal error"), codes.Internal},
		{"pool's own deadline", status.Error(codes.DeadlineExceeded, "store timed out"), codes.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")}, threeAccounts...)
			h.pool.selectErr = tc.err
			_, err := h.runner.Run(context.Background(), task())
			var pe *delegate.PoolError
			require.True(t, errors.As(err, &pe), "got %v", err)
			require.Equal(t, int(tc.want), pe.Code)
			require.Empty(t, h.exec.keysCalled(), "never the operator's key when the pool answered")
		})
	}
}

func TestSlowSelectionIsATimeoutNotAFallback(t *testing.T) {
	// No waiting: a selection may take SelectTimeout beyond the wait it
	// asks the pool for.
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), SelectTimeout: 20 * time.Millisecond, MaxWait: -1}, threeAccounts...)
	h.pool.selectDelay = time.Second
	_, err := h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrSelectionTimeout)
	require.Empty(t, h.exec.keysCalled())
}

func TestEdgeRejectsWhatOtherServicesWould(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")}, threeAccounts...)
	for name, tc := range map[string]struct {
		mutate func(*delegate.Task)
		field  string
	}{
		"control in session_id": {func(t *delegate.Task) { t.SessionID = "session\x01123" }, "session_id"},
		"newline in user_id":    {func(t *delegate.Task) { t.UserID = "user\n789" }, "user_id"},
		"NUL in prompt":         {func(t *delegate.Task) { t.Prompt = "hello\x00world" }, "prompt"},
		"escaping-heavy prompt": {func(t *delegate.Task) { t.Prompt = strings.Repeat("<", 200<<10) }, "prompt"},
		"non-ASCII org":         {func(t *delegate.Task) { t.OrganizationID = "orgé" }, "organization_id"},
		"space in org":          {func(t *delegate.Task) { t.OrganizationID = "org 1" }, "organization_id"},
		"long session_id":       {func(t *delegate.Task) { t.SessionID = strings.Repeat("s", 257) }, "session_id"},
		"max_tokens over model": {func(t *delegate.Task) { t.Category, t.MaxTokens = "ultrabrain", 64_001 }, "max_tokens"},
		"control in skill":      {func(t *delegate.Task) { t.Skills = []string{"git\x00master"} }, "load_skills[0]"},
		"huge category":         {func(t *delegate.Task) { t.Category = strings.Repeat("c", 2<<20) }, "category"},
	} {
		t.Run(name, func(t *testing.T) {
			tk := task()
			tc.mutate(&tk)
			_, err := h.runner.Run(context.Background(), tk)
			var inv *delegate.InvalidArgumentError
			require.True(t, errors.As(err, &inv), "got %v", err)
			require.Equal(t, tc.field, inv.Field)
			require.Less(t, len(err.Error()), 1024, "the message does not echo the value")
		})
	}
	require.Empty(t, h.exec.keysCalled(), "nothing ran, not even on the fallback key")
	require.Empty(t, h.pool.selects)
	require.Zero(t, h.activity.starts)

	tk := task()
	tk.Category, tk.MaxTokens = "ultrabrain", 64_000
	_, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err, "the model's own limit is allowed")
	require.EqualValues(t, 64_000, h.exec.calls[0].MaxTokens)
}

func TestRequestIDNeedsTheActivity(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.activity.startErr = status.Error(codes.Unavailable, "connection refused")
	tk := task()
	tk.RequestID = "req-guarded"
	_, err := h.runner.Run(context.Background(), tk)
	require.ErrorIs(t, err, delegate.ErrActivityUnavailable)
	require.Empty(t, h.exec.keysCalled(), "no model call without the guard against running twice")
	require.Empty(t, h.pool.selects)

	st, _ := status.New(codes.InvalidArgument, "input_data: too large").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "input_data", Description: "is 2000000 bytes as JSON"}}})
	h.activity.startErr = st.Err()
	_, err = h.runner.Run(context.Background(), tk)
	var inv *delegate.InvalidArgumentError
	require.True(t, errors.As(err, &inv), "got %v", err)
	require.Equal(t, "input_data", inv.Field)
	require.Empty(t, h.exec.keysCalled())

	// Without a request_id the task may run without its activity, and says so.
	h.activity.startErr = status.Error(codes.Unavailable, "connection refused")
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Empty(t, resp.GetMetadata().GetActivityId())
	require.Contains(t, strings.Join(resp.GetMetadata().GetBookkeepingErrors(), "\n"), "runs without one")
}

func TestLongStreamsWriteBoundedProgress(t *testing.T) {
	clock := fakeclock.New(time.Unix(1_700_000_000, 0))
	h := newHarness(t, delegate.Config{Now: clock.Now, ProgressInterval: 5 * time.Second}, threeAccounts...)
	// 4,000 deltas, one simulated second apart: more than an hour of output.
	long := ok(strings.Repeat("abcd", 4000))
	h.exec.scripts["key-a"] = []executor.Result{long}
	var rec recorder
	resp, err := h.runner.Stream(context.Background(), task(), func(e delegate.Event) {
		rec.observe(e)
		if e.Kind == delegate.EventText {
			clock.Advance(time.Second)
		}
	})
	require.NoError(t, err)
	progress := h.activity.progress[resp.GetMetadata().GetActivityId()]
	require.NotEmpty(t, progress)
	// How many are written depends on how fast Activity answers (a due
	// event is skipped while the previous one is in flight); the schedule
	// itself is tested exactly in TestProgressSchedule.
	require.LessOrEqual(t, len(progress), 32, "one stream cannot exhaust the activity's 128 events")
	require.Contains(t, progress[0], "streaming, about")
	require.Contains(t, progress[0], "output tokens so far")
}
