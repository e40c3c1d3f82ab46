package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

func delegate(t *testing.T, s *stack, req *orchestratorv1.DelegateTaskRequest) *orchestratorv1.DelegateTaskResponse {
	t.Helper()
	resp, err := s.orchestrator.DelegateTask(testContext(t), req)
	require.NoError(t, err)
	return resp
}

func quickTask(org string) *orchestratorv1.DelegateTaskRequest {
	return &orchestratorv1.DelegateTaskRequest{
		OrganizationId: org, Category: "quick", Prompt: "Summarise the plan in one line.",
		SessionId: "session-1", UserId: "user-1", LoadSkills: []string{"code-review"},
	}
}

// The tier of the healthy account is smaller, so least-loaded tries the two
// rate-limited accounts (more headroom) first.
func TestFailoverAfterTwoRateLimitedAccounts(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		a := s.register(t, "acme", "limited-a", "sk-ant-sim-429-aaaa", "scale")
		b := s.register(t, "acme", "limited-b", "sk-ant-sim-429-bbbb", "scale")
		c := s.register(t, "acme", "healthy-c", "sk-ant-sim-tier1-cccc", "tier1")

		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
		require.NotEmpty(t, resp.GetOutput())
		md := resp.GetMetadata()
		require.EqualValues(t, 3, md.GetAttempts())
		require.Equal(t, c.GetId(), md.GetAccountId())
		require.Equal(t, "healthy-c", md.GetAccountName())
		require.Positive(t, md.GetInputTokens())
		require.Positive(t, md.GetCostUsd())
		require.Empty(t, md.GetBookkeepingErrors())

		tried := map[string]bool{}
		for _, at := range md.GetAttemptDetails() {
			tried[at.GetAccountId()] = true
		}
		require.Equal(t, map[string]bool{a.GetId(): true, b.GetId(): true, c.GetId(): true}, tried, "three distinct accounts")
		for _, key := range []string{"sk-ant-sim-429-aaaa", "sk-ant-sim-429-bbbb", "sk-ant-sim-tier1-cccc"} {
			require.EqualValues(t, 1, s.sim.Stats(key).Requests, key)
		}

		// Two rate-limited records: both limited accounts now cool down.
		list, err := s.pool.ListAccounts(testContext(t), &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
		require.NoError(t, err)
		for _, acc := range list.GetAccounts() {
			if acc.GetId() == c.GetId() {
				require.Nil(t, acc.GetCooldownUntil())
				continue
			}
			require.NotNil(t, acc.GetCooldownUntil(), acc.GetName())
			require.True(t, acc.GetCooldownUntil().AsTime().After(time.Now()), acc.GetName())
		}

		// One usage row: rate-limited attempts write none.
		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
		require.NoError(t, err)
		require.Len(t, usage.GetRecords(), 1)
		require.Equal(t, c.GetId(), usage.GetRecords()[0].GetAccountId())
		require.Equal(t, accountpoolv1.Outcome_OUTCOME_SUCCESS, usage.GetRecords()[0].GetOutcome())
		require.EqualValues(t, 1, usage.GetTotal().GetRequests())
		require.InDelta(t, md.GetCostUsd(), usage.GetTotal().GetCostUsd(), 1e-9)

		// The activity completed, with one progress event per retry.
		act, err := s.activity.GetActivity(testContext(t), &activityv1.GetActivityRequest{OrganizationId: "acme", ActivityId: md.GetActivityId()})
		require.NoError(t, err)
		require.Equal(t, activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, act.GetActivity().GetStatus())
		require.Equal(t, "ai_executor", act.GetActivity().GetAgentType())
		require.Equal(t, "built-in", act.GetActivity().GetAgentName())
		require.Len(t, act.GetProgressEvents(), 2)
		require.Contains(t, act.GetProgressEvents()[0].GetMessage(), "attempt 2 of 3 after 429")
		require.Contains(t, act.GetProgressEvents()[1].GetMessage(), "attempt 3 of 3 after 429")
	})
}

func TestAllAccountsRateLimited(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		for _, name := range []string{"one", "two", "three"} {
			s.register(t, "acme", name, "sk-ant-sim-429-"+name, "tier4")
		}
		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus())
		require.EqualValues(t, 3, resp.GetMetadata().GetAttempts())
		for _, name := range []string{"one", "two", "three"} {
			require.Contains(t, resp.GetError(), name)
		}
		require.Positive(t, resp.GetMetadata().GetRetryAfterMs())

		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
		require.NoError(t, err)
		require.Empty(t, usage.GetRecords(), "rate-limited attempts write no usage rows")
	})
}

func TestLegacyModeWithEnvironmentKey(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base.with(func(o *stackOptions) { o.fallbackKey = "sk-ant-sim-legacy-env" }))
		resp := delegate(t, s, quickTask("no-accounts-org"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
		require.Equal(t, "environment", resp.GetMetadata().GetAccountName())
		require.Equal(t, "environment", resp.GetMetadata().GetLegacyKey())
		require.True(t, resp.GetMetadata().GetLegacyMode())
		require.EqualValues(t, 1, s.sim.Stats("sk-ant-sim-legacy-env").Succeeded)
		require.Empty(t, resp.GetMetadata().GetBookkeepingErrors())

		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "no-accounts-org", IncludeRecords: true})
		require.NoError(t, err)
		require.Len(t, usage.GetRecords(), 1, "legacy calls are in the ledger too")
		require.Equal(t, "environment", usage.GetRecords()[0].GetAccountName())
		require.Positive(t, usage.GetRecords()[0].GetCostUsd())
	})
}

func TestLegacyModeWithoutKeyIsAClearError(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		_, err := s.orchestrator.DelegateTask(testContext(t), quickTask("no-accounts-org"))
		require.Equal(t, codes.FailedPrecondition, status.Code(err))
		require.Contains(t, status.Convert(err).Message(), "ANTHROPIC_API_KEY")
	})
}

// The failing account has more headroom (scale vs tier1), so least-loaded
// tries it first until its breaker opens.
func TestBreakerOpensAfterFiveServerErrorsAndTheAccountIsSkipped(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		broken := s.register(t, "acme", "broken", "sk-ant-sim-500-broken", "scale")
		healthy := s.register(t, "acme", "healthy", "sk-ant-sim-tier1-healthy", "tier1")

		for i := range 5 {
			resp := delegate(t, s, quickTask("acme"))
			require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), "task %d: %s", i, resp.GetError())
			require.EqualValues(t, 2, resp.GetMetadata().GetAttempts(), "task %d fails over from the broken account", i)
		}
		got, err := s.pool.GetAccount(testContext(t), &accountpoolv1.GetAccountRequest{OrganizationId: "acme", AccountId: broken.GetId()})
		require.NoError(t, err)
		require.Equal(t, accountpoolv1.BreakerState_BREAKER_STATE_OPEN, got.GetAccount().GetBreaker().GetState())

		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
		require.EqualValues(t, 1, resp.GetMetadata().GetAttempts())
		require.Equal(t, healthy.GetId(), resp.GetMetadata().GetAccountId())
		require.EqualValues(t, 5, s.sim.Stats("sk-ant-sim-500-broken").Requests, "the open breaker kept traffic away")

		// Failed calls are in the ledger.
		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", AccountId: broken.GetId()})
		require.NoError(t, err)
		require.EqualValues(t, 5, usage.GetTotal().GetRequests())
		require.EqualValues(t, 5, usage.GetTotal().GetFailedRequests())
	})
}

func TestOneTraceAcrossEveryHop(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		exp := tracetest.NewInMemoryExporter()
		s := startStack(t, base.with(func(o *stackOptions) { o.exporter = exp }))
		s.register(t, "acme", "primary", "sk-ant-sim-tier4-primary", "tier4")
		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
		// A server span ends after its response is sent, so poll: flush
		// what has finished and look again.
		want := []string{
			"switchyard-orchestrator switchyard.orchestrator.v1.OrchestratorService/DelegateTask",
			"switchyard-orchestrator switchyard.accountpool.v1.AccountPoolService/SelectAccount",
			"switchyard-accountpool switchyard.accountpool.v1.AccountPoolService/SelectAccount",
			"switchyard-accountpool switchyard.accountpool.v1.AccountPoolService/RecordRequest",
			"switchyard-activity switchyard.activity.v1.ActivityService/TrackStart",
			"switchyard-activity switchyard.activity.v1.ActivityService/TrackComplete",
			"switchyard-orchestrator delegate.attempt",
			"switchyard-orchestrator chat claude-haiku-4-5",
		}
		var seen map[string]bool
		require.Eventually(t, func() bool {
			require.NoError(t, s.flush(testContext(t)))
			var root trace.TraceID
			for _, sp := range exp.GetSpans() {
				if sp.Name == "switchyard.orchestrator.v1.OrchestratorService/DelegateTask" && sp.SpanKind == trace.SpanKindServer {
					root = sp.SpanContext.TraceID()
				}
			}
			if !root.IsValid() {
				return false
			}
			seen = map[string]bool{}
			for _, sp := range exp.GetSpans() {
				if sp.SpanContext.TraceID() == root {
					svc, _ := sp.Resource.Set().Value("service.name")
					seen[svc.AsString()+" "+sp.Name] = true
				}
			}
			for _, w := range want {
				if !seen[w] {
					return false
				}
			}
			return true
		}, 10*time.Second, 20*time.Millisecond, "one trace holds every hop; saw %v", seen)
	})
}

func TestBadInputIsInvalidArgument(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base.with(func(o *stackOptions) { o.fallbackKey = "sk-ant-sim-legacy-env" }))
		cases := map[string]func(*orchestratorv1.DelegateTaskRequest){
			"empty prompt":         func(r *orchestratorv1.DelegateTaskRequest) { r.Prompt = "" },
			"unknown category":     func(r *orchestratorv1.DelegateTaskRequest) { r.Category = "galaxy-brain" },
			"unknown skill":        func(r *orchestratorv1.DelegateTaskRequest) { r.LoadSkills = []string{"no-such-skill"} },
			"missing organization": func(r *orchestratorv1.DelegateTaskRequest) { r.OrganizationId = "" },
		}
		for name, mutate := range cases {
			t.Run(name, func(t *testing.T) {
				req := quickTask("acme")
				mutate(req)
				_, err := s.orchestrator.DelegateTask(testContext(t), req)
				require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			})
		}
		require.Zero(t, s.sim.Stats("sk-ant-sim-legacy-env").Requests, "no model call for bad input")
	})
}

func TestRetriedRequestIDRunsTheModelOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		s.register(t, "acme", "primary", "sk-ant-sim-tier4-primary", "tier4")
		req := quickTask("acme")
		req.RequestId = "client-retry-1"
		first := delegate(t, s, req)
		second := delegate(t, s, req)
		require.Equal(t, first.GetOutput(), second.GetOutput())
		require.True(t, second.GetMetadata().GetReplayed())
		require.EqualValues(t, 1, s.sim.Stats("sk-ant-sim-tier4-primary").Requests)
		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
		require.NoError(t, err)
		require.Len(t, usage.GetRecords(), 1)
	})
}

// With the AccountPool unreachable the task runs on the fallback key (the
// default), and the response says what happened.
func TestUnreachablePoolFallsBackToTheEnvironmentKey(t *testing.T) {
	s := startStack(t, stackOptions{fallbackKey: "sk-ant-sim-legacy-env", poolAddr: "127.0.0.1:1"})
	resp := delegate(t, s, quickTask("acme"))
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
	require.True(t, resp.GetMetadata().GetLegacyMode())
	require.Equal(t, "environment", resp.GetMetadata().GetAccountName())
	errs := resp.GetMetadata().GetBookkeepingErrors()
	require.NotEmpty(t, errs)
	require.Contains(t, errs[0], "account pool unavailable")
	require.EqualValues(t, 1, s.sim.Stats("sk-ant-sim-legacy-env").Succeeded)
}
