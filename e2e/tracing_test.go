package e2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// spanNamed waits for the orchestrator's span of the given name in the
// trace of the task with the given attribute value, and returns it.
func spanNamed(t *testing.T, s *stack, exp *tracetest.InMemoryExporter, name string, kind trace.SpanKind, key attribute.Key, value string) tracetest.SpanStub {
	t.Helper()
	var got tracetest.SpanStub
	require.Eventually(t, func() bool {
		require.NoError(t, s.flush(testContext(t)))
		for _, sp := range exp.GetSpans() {
			if sp.Name != name || sp.SpanKind != kind {
				continue
			}
			for _, a := range sp.Attributes {
				if a.Key == key && a.Value.String() == value {
					got = sp
					return true
				}
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "no %s span with %s=%s", name, key, value)
	return got
}

func attrs(sp tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range sp.Attributes {
		m[a.Key] = a.Value
	}
	return m
}

// The README's failover task, traced: the DelegateTask span carries the
// task (organization, category, request, session and user, status,
// attempts, account, model, tokens, cost, duration) under the original
// design's names and the GenAI conventions' names; each model call is a
// "chat {model}" client span by the conventions; a task that ends
// RATE_LIMITED is an error span.
func TestTheTaskIsOnItsSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	s := startStack(t, stackOptions{exporter: exp})
	s.register(t, "acme", "limited-a", "sk-ant-sim-429-trace-a", "scale")
	healthy := s.register(t, "acme", "healthy-c", "sk-ant-sim-tier1-trace-c", "tier1")
	req := quickTask("acme")
	req.RequestId = "req-traced-1"
	resp := delegate(t, s, req)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())

	task := spanNamed(t, s, exp, "switchyard.orchestrator.v1.OrchestratorService/DelegateTask", trace.SpanKindServer, "switchyard.request_id", "req-traced-1")
	a := attrs(task)
	for key, want := range map[attribute.Key]any{
		"switchyard.organization_id": "acme",
		"switchyard.task.status":     "success",
		"switchyard.task.attempts":   int64(2),
		"switchyard.session_id":      "session-1",
		"gen_ai.conversation.id":     "session-1",
		"user.id":                    "user-1",
		"account.id":                 healthy.GetId(),
		"account.name":               "healthy-c",
		"ai.category":                "quick",
		"ai.model":                   resp.GetMetadata().GetModel(),
		"gen_ai.request.model":       "claude-haiku-4-5",
		"gen_ai.provider.name":       "anthropic",
		"ai.tokens.input":            resp.GetMetadata().GetInputTokens(),
		"gen_ai.usage.input_tokens":  resp.GetMetadata().GetInputTokens(),
		"ai.tokens.output":           resp.GetMetadata().GetOutputTokens(),
		"gen_ai.usage.output_tokens": resp.GetMetadata().GetOutputTokens(),
		"ai.cost_usd":                resp.GetMetadata().GetCostUsd(),
	} {
		v, ok := a[key]
		require.True(t, ok, "the task span has %s", key)
		require.Equal(t, want, v.AsInterface(), key)
	}
	for _, key := range []attribute.Key{"ai.duration_ms", "ai.tokens.cache_read", "ai.tokens.cache_creation", "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"} {
		require.Contains(t, a, key)
	}
	require.Positive(t, a["ai.tokens.input"].AsInt64())
	require.NotEqual(t, codes.Error, task.Status.Code)

	var chats []tracetest.SpanStub
	for _, sp := range exp.GetSpans() {
		if sp.SpanContext.TraceID() == task.SpanContext.TraceID() && sp.Name == "chat claude-haiku-4-5" {
			chats = append(chats, sp)
		}
	}
	require.Len(t, chats, 2, "one chat span per model call")
	var ok429, ok200 bool
	for _, c := range chats {
		ca := attrs(c)
		require.Equal(t, trace.SpanKindClient, c.SpanKind)
		require.Equal(t, "chat", ca["gen_ai.operation.name"].AsString())
		require.Equal(t, "claude-haiku-4-5", ca["gen_ai.request.model"].AsString())
		require.Contains(t, ca, attribute.Key("gen_ai.usage.cache_creation.input_tokens"))
		switch ca["http.response.status_code"].AsInt64() {
		case 429:
			ok429 = c.Status.Code == codes.Error && ca["error.type"].AsString() != ""
		case 200:
			ok200 = len(ca["gen_ai.response.finish_reasons"].AsStringSlice()) == 1 && ca["gen_ai.response.id"].AsString() != ""
		}
	}
	require.True(t, ok429, "the rate-limited call is an error span with error.type")
	require.True(t, ok200, "the answered call has its finish reason and message id")

	// A task no account can take is an error span, with the reason.
	s.register(t, "dry", "limited", "sk-ant-sim-429-trace-d", "scale")
	req = quickTask("dry")
	req.RequestId = "req-traced-2"
	resp = delegate(t, s, req)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED, resp.GetStatus())
	failed := spanNamed(t, s, exp, "switchyard.orchestrator.v1.OrchestratorService/DelegateTask", trace.SpanKindServer, "switchyard.request_id", "req-traced-2")
	require.Equal(t, codes.Error, failed.Status.Code)
	require.Contains(t, failed.Status.Description, "rate_limited")
	require.Equal(t, "rate_limited", attrs(failed)["switchyard.task.status"].AsString())
}
