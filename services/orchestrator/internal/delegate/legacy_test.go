package delegate_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// The legacy paths of issue 14: an organization with no account in service
// runs on its own default key when the AccountPool hands one out, else on
// the operator's environment key, else not at all.

const orgKey = "sk-ant-org-default-key"

// legacyAttempt checks a legacy task's one attempt: on key, named name in
// the answer, the usage record and the activity.
func legacyAttempt(t *testing.T, h *harness, resp *orchestratorv1.DelegateTaskResponse, key, name string, recorded accountpoolv1.LegacyKey) {
	t.Helper()
	md := resp.GetMetadata()
	require.True(t, md.GetLegacyMode())
	require.Equal(t, name, md.GetLegacyKey())
	require.Equal(t, name, md.GetAccountName())
	require.Empty(t, md.GetAccountId())
	require.EqualValues(t, 1, md.GetAttempts(), "legacy mode is one attempt")
	require.Equal(t, []string{key}, h.exec.keysCalled())

	require.Len(t, h.pool.records, 1)
	rec := h.pool.records[0]
	require.Equal(t, recorded, rec.GetLegacyKey())
	if recorded == accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT {
		require.Equal(t, fakeGeneration, rec.GetDefaultKeyGeneration(), "a rejection names the key it was of")
	} else {
		require.Empty(t, rec.GetDefaultKeyGeneration())
	}
	require.Empty(t, rec.GetLeaseId())
	require.Empty(t, rec.GetAccountId())

	act := h.activity.get(md.GetActivityId())
	require.Equal(t, name, act.GetMetadata().GetFields()["legacy_key"].GetStringValue())
	require.Equal(t, name, act.GetMetadata().GetFields()["account_name"].GetStringValue())
	require.True(t, act.GetMetadata().GetFields()["legacy_mode"].GetBoolValue())
}

func TestLegacyModeRunsOnTheOrganizationsDefaultKey(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	h.pool.defaultKey = orgKey
	rec := &recorder{}
	resp, err := h.runner.Stream(context.Background(), task(), rec.observe)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	legacyAttempt(t, h, resp, orgKey, "default", accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT)
	require.True(t, h.pool.selects[0].GetAcceptDefaultKey(), "the default key comes with the selection: no extra round trip")

	started := rec.events[1]
	require.Equal(t, delegate.EventAttemptStarted, started.Kind)
	require.Equal(t, "default", started.AccountName)
	require.True(t, started.Legacy)

	sel := h.activity.get(resp.GetMetadata().GetActivityId()).GetMetadata().GetFields()["selections"].GetListValue().GetValues()
	require.Len(t, sel, 1)
	require.Equal(t, "default", sel[0].GetStructValue().GetFields()["account"].GetStringValue())
	require.EqualValues(t, 3, sel[0].GetStructValue().GetFields()["key_version"].GetNumberValue())
}

// Every selection accepts the default key, also with accounts in service.
func TestOnlyTheFirstSelectionAcceptsTheDefaultKey(t *testing.T) {
	h := newHarness(t, delegate.Config{}, threeAccounts...)
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	_, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Len(t, h.pool.selects, 2)
	require.True(t, h.pool.selects[0].GetAcceptDefaultKey(), "a task's first selection may run in legacy mode")
	require.False(t, h.pool.selects[1].GetAcceptDefaultKey(), "a failover is never answered with the default key")
}

// A 401 on the default key is settled as the default key's, so the
// AccountPool marks it invalid; there is no second attempt, and never the
// environment key.
func TestARejectedDefaultKeyIsRecordedAsTheDefaultKeys(t *testing.T) {
	for _, code := range []int{401, 402, 403} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), EnvironmentFallbackOnInvalidKey: true})
			h.pool.defaultKey = orgKey
			h.exec.scripts[orgKey] = []executor.Result{failed(executor.AuthFailed, code, "authentication_error")}
			resp, err := h.runner.Run(context.Background(), task())
			require.NoError(t, err)
			require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, resp.GetStatus())
			require.Contains(t, resp.GetError(), "account default")
			legacyAttempt(t, h, resp, orgKey, "default", accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT)
			require.Equal(t, accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, h.pool.records[0].GetOutcome())
		})
	}
}

func TestNoAccountsRunsOnTheEnvironmentKey(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	h.pool.notFoundReason = "NO_ACCOUNTS"
	rec := &recorder{}
	resp, err := h.runner.Stream(context.Background(), task(), rec.observe)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
	legacyAttempt(t, h, resp, "env-key", "environment", accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT)
	require.Equal(t, "environment", rec.events[1].AccountName)
}

func TestNoAccountsAndNoEnvironmentKey(t *testing.T) {
	for _, reason := range []string{"", "NO_ACCOUNTS"} {
		h := newHarness(t, delegate.Config{})
		h.pool.notFoundReason = reason
		_, err := h.runner.Run(context.Background(), task())
		require.ErrorIs(t, err, delegate.ErrNoAccounts, reason)
		require.Empty(t, h.exec.keysCalled())
		require.Empty(t, h.pool.records)
	}
}

// A default key the upstream rejected fails the task, rather than billing
// the operator, unless the operator allows the environment key for it.
func TestAnInvalidDefaultKeyFailsUnlessTheEnvironmentFallbackIsOn(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	h.pool.notFoundReason = "DEFAULT_KEY_INVALID"
	_, err := h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrDefaultKeyInvalid)
	require.ErrorContains(t, err, "SetDefaultKey")
	require.Empty(t, h.exec.keysCalled(), "nothing ran, on no key")
	require.Empty(t, h.pool.records)

	h = newHarness(t, delegate.Config{FallbackKey: secret.New("env-key"), EnvironmentFallbackOnInvalidKey: true})
	h.pool.notFoundReason = "DEFAULT_KEY_INVALID"
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	legacyAttempt(t, h, resp, "env-key", "environment", accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT)

	h = newHarness(t, delegate.Config{EnvironmentFallbackOnInvalidKey: true})
	h.pool.notFoundReason = "DEFAULT_KEY_INVALID"
	_, err = h.runner.Run(context.Background(), task())
	require.ErrorIs(t, err, delegate.ErrDefaultKeyInvalid, "no environment key to fall back to")
	require.Empty(t, h.exec.keysCalled())
}

// An ErrorInfo of another domain is not the AccountPool's word: the
// NotFound reads as no accounts.
func TestAnotherDomainsReasonIsIgnored(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")})
	h.pool.selectErr = notFound(t, "DEFAULT_KEY_INVALID", "example.com")
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, "environment", resp.GetMetadata().GetLegacyKey())
}

// Legacy mode is never a failover target: when the tried accounts went out
// of service meanwhile, the default key the pool then hands out is not
// used.
func TestTheDefaultKeyIsNotAFailoverTarget(t *testing.T) {
	h := newHarness(t, delegate.Config{FallbackKey: secret.New("env-key")}, threeAccounts[0])
	h.pool.defaultKey = orgKey
	h.exec.scripts["key-a"] = []executor.Result{failed(executor.RateLimited, 429, "rate_limit_error")}
	selects := 0
	h.pool.onSelect = func() {
		if selects++; selects == 2 {
			h.pool.mu.Lock()
			h.pool.accounts = nil // every account disabled after the first attempt
			h.pool.mu.Unlock()
		}
	}
	resp, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Equal(t, []string{"key-a"}, h.exec.keysCalled())
	require.False(t, resp.GetMetadata().GetLegacyMode())
	require.Empty(t, resp.GetMetadata().GetLegacyKey())
	require.Contains(t, resp.GetError(), "no other account in service")
}

// The default key is a secret: it reaches the executor and nothing else —
// not the answer, the stream's events, an error, a log line, a span, the
// activity or the usage records.
func TestTheDefaultKeyNeverLeaves(t *testing.T) {
	const canary = "sk-ant-canary-7f3a9c1e55d2"
	for name, res := range map[string]executor.Result{
		"success":     ok("hello"),
		"auth failed": failed(executor.AuthFailed, 401, "authentication_error"),
		"overloaded":  failed(executor.UpstreamError, 529, "overloaded_error"),
	} {
		t.Run(name, func(t *testing.T) {
			logs := &lockedBuffer{}
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			h := newHarnessWith(t, delegate.Config{FallbackKey: secret.New("env-key")},
				slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), tp)
			h.pool.defaultKey = canary
			h.exec.scripts[canary] = []executor.Result{res}
			rec := &recorder{}
			tk := task()
			tk.RequestID = "req-canary"
			resp, err := h.runner.Stream(context.Background(), tk, rec.observe)
			require.NoError(t, err)
			require.Equal(t, []string{canary}, h.exec.keysCalled(), "the canary is the key that ran")

			var seen []string
			seen = append(seen, prototext.Format(resp), resp.GetError(), logs.String())
			_, replayErr := h.runner.Run(context.Background(), tk) // the answer replayed from the activity
			seen = append(seen, fmt.Sprint(replayErr))
			for _, e := range rec.events {
				seen = append(seen, fmt.Sprintf("%+v", e))
			}
			for _, s := range spans.Ended() {
				seen = append(seen, s.Name(), fmt.Sprint(s.Attributes()), s.Status().Description)
				for _, ev := range s.Events() {
					seen = append(seen, ev.Name, fmt.Sprint(ev.Attributes))
				}
			}
			h.activity.mu.Lock()
			for _, act := range h.activity.activities {
				seen = append(seen, prototext.Format(act))
			}
			h.activity.mu.Unlock()
			h.pool.mu.Lock()
			for _, r := range h.pool.records {
				seen = append(seen, prototext.Format(r))
			}
			h.pool.mu.Unlock()
			require.NotEmpty(t, spans.Ended())
			require.Contains(t, logs.String(), "task finished")
			for _, s := range seen {
				require.NotContains(t, s, canary)
				require.NotContains(t, s, "canary-7f3a")
			}
		})
	}
}

// A harness whose runner never calls into a logger or tracer we could
// check would make the canary test vacuous; this one is the check's own
// positive control.
func TestTheCanaryCheckSeesWhatIsLogged(t *testing.T) {
	logs := &lockedBuffer{}
	h := newHarnessWith(t, delegate.Config{FallbackKey: secret.New("env-key")},
		slog.New(slog.NewJSONHandler(logs, nil)), noop.NewTracerProvider())
	h.pool.notFoundReason = "NO_ACCOUNTS"
	_, err := h.runner.Run(context.Background(), task())
	require.NoError(t, err)
	require.Contains(t, logs.String(), `"legacy_key":"environment"`)
}

func notFound(t *testing.T, reason, domain string) error {
	t.Helper()
	st, err := status.New(codes.NotFound, "organization has no accounts in service").
		WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain})
	require.NoError(t, err)
	return st.Err()
}

// lockedBuffer is a log sink safe for the outbox's goroutine and the
// task's.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
