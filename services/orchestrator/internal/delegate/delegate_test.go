package delegate_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

type harness struct {
	sleeper  *sleeper
	pool     *fakePool
	activity *fakeActivity
	exec     *fakeExecutor
	runner   *delegate.Runner
}

func newHarness(t *testing.T, cfg delegate.Config, accounts ...fakeAccount) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), noop.NewTracerProvider(), accounts...)
}

// newHarnessWith is newHarness with the runner's logger and tracer.
func newHarnessWith(t *testing.T, cfg delegate.Config, logger *slog.Logger, tp trace.TracerProvider, accounts ...fakeAccount) *harness {
	t.Helper()
	h := &harness{
		sleeper:  &sleeper{},
		pool:     &fakePool{accounts: accounts},
		activity: newFakeActivity(),
		exec:     &fakeExecutor{scripts: map[string][]executor.Result{}},
	}
	if cfg.Sleep == nil {
		cfg.Sleep = h.sleeper.Sleep
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(time.Duration) time.Duration { return 0 }
	}
	runner, err := delegate.New(cfg, h.pool, h.activity, h.exec, logger, tp)
	require.NoError(t, err)
	h.runner = runner
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runner.RunOutbox(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		require.NoError(t, runner.Close())
	})
	return h
}

func task() delegate.Task {
	return delegate.Task{OrganizationID: "org-1", SessionID: "s-1", UserID: "u-1", Category: "quick", Prompt: "Say hello"}
}

var threeAccounts = []fakeAccount{{"a1", "alpha", "key-a"}, {"a2", "bravo", "key-b"}, {"a3", "charlie", "key-c"}}

func TestFailsOverToADifferentAccountOnRateLimit(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	limited := failed(executor.RateLimited, 429, "rate_limit_error")
	limited.RateLimit.RetryAfter = 30 * time.Second
	h.exec.scripts["key-a"] = []executor.Result{limited}
	h.exec.scripts["key-b"] = []executor.Result{limited}
	h.exec.scripts["key-c"] = []executor.Result{ok("hello from charlie")}

	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Equal(t, "hello from charlie", resp.GetOutput())
	md := resp.GetMetadata()
	require.EqualValues(t, 3, md.GetAttempts())
	require.Equal(t, "a3", md.GetAccountId())
	require.Equal(t, "charlie", md.GetAccountName())
	require.Equal(t, []string{"key-a", "key-b", "key-c"}, h.exec.keysCalled(), "three distinct accounts, in the pool's order")
	require.InDelta(t, 0.25, md.GetCostUsd(), 1e-9)
	require.Zero(t, md.GetRetryAfterMs(), "a successful task has nothing to wait for")
	require.EqualValues(t, 10, md.GetInputTokens())
	require.EqualValues(t, 3, md.GetCacheReadTokens())
	var codes []orchestratorv1.AttemptOutcome
	for _, a := range md.GetAttemptDetails() {
		codes = append(codes, a.GetOutcomeCode())
	}
	require.Equal(t, []orchestratorv1.AttemptOutcome{orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_RATE_LIMITED,
		orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_RATE_LIMITED, orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS}, codes,
		"each attempt's outcome as the enum too")

	// The pool saw the tried accounts excluded, one more each time.
	require.Len(t, h.pool.selects, 3)
	require.Empty(t, h.pool.selects[0].GetExcludedAccountIds())
	require.Equal(t, []string{"a1"}, h.pool.selects[1].GetExcludedAccountIds())
	require.Equal(t, []string{"a1", "a2"}, h.pool.selects[2].GetExcludedAccountIds())

	// Every attempt was recorded, with its outcome and attempt number.
	require.Len(t, h.pool.records, 3)
	for i, want := range []accountpoolv1.Outcome{accountpoolv1.Outcome_OUTCOME_RATE_LIMITED, accountpoolv1.Outcome_OUTCOME_RATE_LIMITED, accountpoolv1.Outcome_OUTCOME_SUCCESS} {
		require.Equal(t, want, h.pool.records[i].GetOutcome())
		require.EqualValues(t, i+1, h.pool.records[i].GetAttempt())
		require.Equal(t, md.GetRequestId(), h.pool.records[i].GetRequestId())
	}
	require.EqualValues(t, 30, h.pool.records[0].GetRateLimit().GetRetryAfterSeconds())

	// The activity completed, with one progress event per retry.
	act := h.activity.get(md.GetActivityId())
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, act.GetStatus())
	progress := h.activity.progress[md.GetActivityId()]
	require.Equal(t, []string{
		"attempt 2 of 3 after 429 rate_limit_error, retry after 30s on account alpha",
		"attempt 3 of 3 after 429 rate_limit_error, retry after 30s on account bravo",
	}, progress)
}

func TestEveryAttemptRateLimited(t *testing.T) {
	h := newHarness(t, delegate.Config{}, append(threeAccounts, fakeAccount{"a4", "delta", "key-d"})...)
	for _, k := range []string{"key-a", "key-b", "key-c", "key-d"} {
		h.exec.scripts[k] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus())
	require.EqualValues(t, 3, resp.GetMetadata().GetAttempts(), "never more than three attempts")
	require.Len(t, h.exec.keysCalled(), 3)
	for _, name := range []string{"alpha", "bravo", "charlie"} {
		require.Contains(t, resp.GetError(), name)
	}
	require.NotContains(t, resp.GetError(), "delta")
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED, h.activity.get(resp.GetMetadata().GetActivityId()).GetStatus())
}

func TestStopsWhenThePoolHasNoOtherAccount(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts[:1]...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus())
	require.EqualValues(t, 1, resp.GetMetadata().GetAttempts())
	require.EqualValues(t, 7000, resp.GetMetadata().GetRetryAfterMs(), "the pool's RetryInfo reaches the caller")
	require.Contains(t, resp.GetError(), "no further account could be selected")
}

func TestWaitsForAnAccountThatFreesUpSoon(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.pool.busyCalls, h.pool.busyDelay = 2, 3*time.Second
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.EqualValues(t, 1, resp.GetMetadata().GetAttempts(), "waiting is not an attempt")
	require.Equal(t, 6*time.Second, h.sleeper.total(), "waited twice for the pool's RetryInfo")
}

func TestDoesNotWaitPastTheBudgetOrTheDeadline(t *testing.T) {
	h := newHarness(t, delegate.Config{MaxWait: 5 * time.Second}, threeAccounts...)
	h.pool.busyCalls, h.pool.busyDelay = 1, 6*time.Second
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus(), "over budget: fail fast with the retry time")
	require.EqualValues(t, 6000, resp.GetMetadata().GetRetryAfterMs())
	require.Zero(t, h.sleeper.total())

	h = newHarness(t, delegate.Config{}, threeAccounts...)
	h.pool.busyCalls, h.pool.busyDelay = 1, 3*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err = h.runner.Run(ctx, task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus(), "the account frees up after the caller's deadline")
	require.Zero(t, h.sleeper.total())
}

func TestBackoffBetweenAttempts(t *testing.T) {
	full := func(d time.Duration) time.Duration { return d } // the jitter's upper bound
	h := newHarness(t, delegate.Config{Jitter: full}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.UpstreamError, 529, "overloaded_error")}
	h.exec.scripts["key-b"] = []executor.Result{failed(executor.UpstreamError, 500, "api_error")}
	_, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, h.sleeper.waits, "exponential after server errors")

	h = newHarness(t, delegate.Config{Jitter: full}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	_, err = h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, []time.Duration{50 * time.Millisecond}, h.sleeper.waits, "only a little jitter before another account after a 429")
}

func TestSelectionExplanationIsInTheActivity(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	md := h.activity.get(resp.GetMetadata().GetActivityId()).GetMetadata().AsMap()
	sel, ok := md["selections"].([]any)
	require.True(t, ok, "metadata: %v", md)
	require.Len(t, sel, 2)
	second := sel[1].(map[string]any)
	require.Equal(t, "bravo", second["account"])
	require.Equal(t, []any{"alpha: excluded"}, second["skipped"])
	require.InDelta(t, 0.5, second["headroom"], 1e-9)
}

func TestClientErrorIsNotRetried(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.ClientError, 400, "invalid_request_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, resp.GetStatus())
	require.EqualValues(t, 1, resp.GetMetadata().GetAttempts())
	require.Contains(t, resp.GetError(), "400 invalid_request_error")
}

func TestServerErrorsAndAuthFailuresFailOver(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.UpstreamError, 500, "api_error")}
	h.exec.scripts["key-b"] = []executor.Result{failed(executor.AuthFailed, 401, "authentication_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Equal(t, []string{"key-a", "key-b", "key-c"}, h.exec.keysCalled())
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, h.pool.records[0].GetOutcome())
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, h.pool.records[1].GetOutcome())
}

func TestMixedFailuresEndFailedNotRateLimited(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	h.exec.scripts["key-b"] = []executor.Result{failed(executor.UpstreamError, 529, "overloaded_error")}
	h.exec.scripts["key-c"] = []executor.Result{failed(executor.UpstreamError, 500, "api_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, resp.GetStatus())
	require.Contains(t, resp.GetError(), "attempt 3 of 3 failed on account charlie")
	require.Zero(t, resp.GetMetadata().GetRetryAfterMs())
}

// An older AccountPool answers NotFound without ErrorInfo: the
// environment key, named "environment".
func TestLegacyModeUsesTheFallbackKey(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Equal(t, "environment", resp.GetMetadata().GetAccountName())
	require.Equal(t, "environment", resp.GetMetadata().GetLegacyKey())
	require.Empty(t, resp.GetMetadata().GetAccountId())
	require.True(t, resp.GetMetadata().GetLegacyMode())
	require.Equal(t, []string{"env-key"}, h.exec.keysCalled())
	require.Len(t, h.pool.records, 1, "legacy usage is recorded too")
	require.Empty(t, h.pool.records[0].GetAccountId())
	require.Equal(t, accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT, h.pool.records[0].GetLegacyKey())
}

func TestLegacyModeMakesOneAttempt(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	h.exec.scripts["env-key"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus())
	require.Len(t, h.exec.keysCalled(), 1)
}

func TestNoAccountsAndNoKey(t *testing.T) {
	h := newHarness(t, delegate.Config{})
	_, err := h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrNoAccounts)
	require.Empty(t, h.exec.keysCalled())
}

func TestPoolUnavailable(t *testing.T) {
	down := status.Error(codes.Unavailable, "connection refused")

	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")}, threeAccounts...)
	h.pool.selectErr = down
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err, "by default an unreachable pool falls back to the environment key")
	require.True(t, resp.GetMetadata().GetLegacyMode())
	require.Equal(t, "environment", resp.GetMetadata().GetLegacyKey())
	require.Equal(t, "environment", resp.GetMetadata().GetAccountName())
	require.Equal(t, []string{"env-key"}, h.exec.keysCalled())
	require.NotEmpty(t, resp.GetMetadata().GetBookkeepingErrors(), "the fallback is reported")

	h = newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), FailWhenPoolUnavailable: true}, threeAccounts...)
	h.pool.selectErr = down
	_, err = h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrPoolUnavailable)
	require.Empty(t, h.exec.keysCalled())
}

func TestBookkeepingFailuresAreReportedNotFatal(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.pool.recordErr = status.Error(codes.Unavailable, "pool store down")
	h.activity.startErr = status.Error(codes.Unavailable, "activity down")
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	errs := strings.Join(resp.GetMetadata().GetBookkeepingErrors(), "\n")
	require.Contains(t, errs, "starting the activity")
	require.Equal(t, []string{"recording attempt 1"}, resp.GetMetadata().GetBookkeepingPending(), "the usage record waits, it is not lost")
	require.Empty(t, resp.GetMetadata().GetActivityId(), "no activity id is claimed when none was started")

	// Once the pool answers again the outbox delivers the record.
	h.pool.mu.Lock()
	h.pool.recordErr = nil
	h.pool.mu.Unlock()
	require.Eventually(t, func() bool {
		h.pool.mu.Lock()
		defer h.pool.mu.Unlock()
		return len(h.pool.records) == 1
	}, 10*time.Second, 10*time.Millisecond)
}

func TestBookkeepingIsDeliveredInOrderAfterAnOutage(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	h.pool.recordErr = status.Error(codes.Unavailable, "pool down")
	h.activity.mu.Lock()
	h.activity.progressErr = status.Error(codes.Unavailable, "activity down")
	h.activity.mu.Unlock()
	tk := task()
	tk.RequestID = "req-outage"
	resp, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	require.Equal(t, []string{"recording attempt 1", "tracking progress before attempt 2", "recording attempt 2", "completing the activity"},
		resp.GetMetadata().GetBookkeepingPending())
	require.Empty(t, resp.GetMetadata().GetBookkeepingErrors())
	id := resp.GetMetadata().GetActivityId()
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING, h.activity.get(id).GetStatus(),
		"the completion waits behind the progress event")

	h.pool.mu.Lock()
	h.pool.recordErr = nil
	h.pool.mu.Unlock()
	h.activity.mu.Lock()
	h.activity.progressErr = nil
	h.activity.mu.Unlock()
	require.Eventually(t, func() bool {
		return h.activity.get(id).GetStatus() == activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, h.activity.progress[id], 1, "the progress event landed before the completion")
	require.Eventually(t, func() bool {
		h.pool.mu.Lock()
		defer h.pool.mu.Unlock()
		return len(h.pool.records) == 2
	}, 10*time.Second, 10*time.Millisecond)
	h.pool.mu.Lock()
	defer h.pool.mu.Unlock()
	require.EqualValues(t, 1, h.pool.records[0].GetAttempt(), "usage in attempt order")
	require.EqualValues(t, 2, h.pool.records[1].GetAttempt())
}

func TestRetriedRequestIDReplaysWithoutCallingTheModel(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	tk := task()
	tk.RequestID = "req-42"
	first, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.False(t, first.GetMetadata().GetReplayed())

	second, err := h.runner.Run(context.Background(), tk)
	require.NoError(t, err)
	require.True(t, second.GetMetadata().GetReplayed())
	require.Equal(t, first.GetOutput(), second.GetOutput())
	require.Equal(t, first.GetStatus(), second.GetStatus())
	require.Equal(t, first.GetMetadata().GetActivityId(), second.GetMetadata().GetActivityId())
	require.Equal(t, first.GetMetadata().GetCostUsd(), second.GetMetadata().GetCostUsd())
	require.Len(t, h.exec.keysCalled(), 1, "the model ran once")
	require.Len(t, h.pool.records, 1, "usage was written once")
	require.Equal(t, 1, h.activity.completes)

	other := tk
	other.Prompt = "something else"
	_, err = h.runner.Run(context.Background(), other)
	require.ErrorIs(t, err, delegate.ErrRequestIDReused)

	otherOrg := tk
	otherOrg.OrganizationID = "org-2"
	resp, err := h.runner.Run(context.Background(), otherOrg)
	require.NoError(t, err)
	require.False(t, resp.GetMetadata().GetReplayed(), "request ids are scoped to the organization")
}

func TestConcurrentDuplicateIsAborted(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.block = make(chan struct{})
	tk := task()
	tk.RequestID = "req-dup"
	done := make(chan error, 1)
	go func() {
		_, err := h.runner.Run(context.Background(), tk)
		done <- err
	}()
	require.Eventually(t, func() bool { return len(h.exec.keysCalled()) == 1 }, 5*time.Second, time.Millisecond)
	_, err := h.runner.Run(context.Background(), tk)
	require.ErrorIs(t, err, delegate.ErrInProgress)
	close(h.exec.block)
	require.NoError(t, <-done)
}

func TestCallerCancellationStopsFailoverButKeepsTheRecords(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.block = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		resp *orchestratorv1.DelegateTaskResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := h.runner.Run(ctx, task())
		done <- result{resp, err}
	}()
	require.Eventually(t, func() bool { return len(h.exec.keysCalled()) == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, r.resp.GetStatus())
	require.Len(t, h.exec.keysCalled(), 1, "no failover after the caller gave up")
	require.Len(t, h.pool.records, 1, "the cancelled attempt is still recorded")
	require.Equal(t, accountpoolv1.Outcome_OUTCOME_CANCELLED, h.pool.records[0].GetOutcome())
	require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED, h.activity.get(r.resp.GetMetadata().GetActivityId()).GetStatus())
}

func TestInvalidInput(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	cases := map[string]struct {
		mutate func(*delegate.Task)
		field  string
	}{
		"empty prompt":       {func(t *delegate.Task) { t.Prompt = "  " }, "prompt"},
		"huge prompt":        {func(t *delegate.Task) { t.Prompt = strings.Repeat("x", 600<<10) }, "prompt"},
		"unknown category":   {func(t *delegate.Task) { t.Category = "galaxybrain" }, "category"},
		"missing category":   {func(t *delegate.Task) { t.Category = "" }, "category"},
		"unknown skill":      {func(t *delegate.Task) { t.Skills = []string{"nope"} }, "load_skills"},
		"missing org":        {func(t *delegate.Task) { t.OrganizationID = "" }, "organization_id"},
		"negative tokens":    {func(t *delegate.Task) { t.MaxTokens = -1 }, "max_tokens"},
		"control request id": {func(t *delegate.Task) { t.RequestID = "a\nb" }, "request_id"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tk := task()
			tc.mutate(&tk)
			_, err := h.runner.Run(context.Background(), tk)
			var inv *delegate.InvalidArgumentError
			require.True(t, errors.As(err, &inv), "got %v", err)
			require.Equal(t, tc.field, inv.Field)
		})
	}
	require.Empty(t, h.exec.keysCalled())
	require.Empty(t, h.pool.selects)
}

func TestUnknownCategoryListsTheKnownOnes(t *testing.T) {
	h := newHarness(t, delegate.Config{})
	tk := task()
	tk.Category = "galaxybrain"
	_, err := h.runner.Run(context.Background(), tk)
	require.ErrorContains(t, err, "quick")
	require.ErrorContains(t, err, "ultrabrain")
}

// The pool is asked to wait for what is left of the budget, at most half of
// the time left before the caller's deadline (an account granted at the
// deadline could not run the call), and not at all when waiting is off.
func TestAsksThePoolToWaitWithinTheBudget(t *testing.T) {
	h := newHarness(t, delegate.Config{MaxWait: 5 * time.Second}, threeAccounts...)
	_, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, h.pool.selects[0].GetMaxWait().AsDuration())

	h = newHarness(t, delegate.Config{MaxWait: 5 * time.Second}, threeAccounts...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err = h.runner.Run(ctx, task())
	require.NoError(t, err)
	w := h.pool.selects[0].GetMaxWait().AsDuration()
	require.LessOrEqual(t, w, 2*time.Second, "half of what the deadline leaves")
	require.Greater(t, w, time.Second)

	h = newHarness(t, delegate.Config{MaxWait: -1}, threeAccounts...)
	_, err = h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Nil(t, h.pool.selects[0].GetMaxWait(), "waiting disabled: the pool answers at once")
}
