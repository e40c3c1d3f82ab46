package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

// designExample is the task of the original design, verbatim.
func designExample() *orchestratorv1.DelegateTaskRequest {
	return &orchestratorv1.DelegateTaskRequest{
		Category: "ultrabrain", LoadSkills: []string{"git-master"}, Prompt: "Analyze this codebase",
		SessionId: "session-123", OrganizationId: "org-456", UserId: "user-789",
	}
}

func streamRequest(r *orchestratorv1.DelegateTaskRequest) *orchestratorv1.StreamDelegateTaskRequest {
	return &orchestratorv1.StreamDelegateTaskRequest{
		Category: r.GetCategory(), LoadSkills: r.GetLoadSkills(), Prompt: r.GetPrompt(), SessionId: r.GetSessionId(),
		OrganizationId: r.GetOrganizationId(), UserId: r.GetUserId(), RequestId: r.GetRequestId(), MaxTokens: r.GetMaxTokens(),
	}
}

// streamed is what a client following StreamDelegateTask's protocol saw.
type streamed struct {
	kinds  []string // event kinds, consecutive text deltas as one "text"
	text   string   // text since the last restart
	result *orchestratorv1.DelegateTaskResponse
	events []*orchestratorv1.StreamDelegateTaskResponse
}

func streamTask(t *testing.T, c orchestratorv1.OrchestratorServiceClient, ctx context.Context, req *orchestratorv1.DelegateTaskRequest) (streamed, error) {
	t.Helper()
	stream, err := c.StreamDelegateTask(ctx, streamRequest(req))
	require.NoError(t, err)
	var out streamed
	var text strings.Builder
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			out.text = text.String()
			return out, nil
		}
		if err != nil {
			out.text = text.String()
			return out, err
		}
		out.events = append(out.events, ev)
		kind := ""
		switch e := ev.GetEvent().(type) {
		case *orchestratorv1.StreamDelegateTaskResponse_Accepted:
			kind = "accepted"
		case *orchestratorv1.StreamDelegateTaskResponse_AttemptStarted:
			kind = "started"
		case *orchestratorv1.StreamDelegateTaskResponse_Text:
			kind = "text"
			text.WriteString(e.Text.GetText())
		case *orchestratorv1.StreamDelegateTaskResponse_AttemptFailed:
			kind = "failed"
		case *orchestratorv1.StreamDelegateTaskResponse_Restart:
			kind = "restart"
			text.Reset()
		case *orchestratorv1.StreamDelegateTaskResponse_Result:
			kind = "result"
			require.Nil(t, out.result, "one result")
			out.result = e.Result
		}
		if kind == "text" && len(out.kinds) > 0 && out.kinds[len(out.kinds)-1] == "text" {
			continue
		}
		out.kinds = append(out.kinds, kind)
	}
}

func TestDesignExampleSucceedsUnaryAndStreamed(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		const key = "sk-ant-sim-scale-org456"
		s.register(t, "org-456", "primary", key, "scale")

		resp := delegate(t, s, designExample())
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
		md := resp.GetMetadata()
		require.Equal(t, "claude-opus-4-5", md.GetModel())
		u := s.sim.Usage(key)
		require.Equal(t, u.InputTokens, md.GetInputTokens(), "usage is exactly what the upstream reported")
		require.Equal(t, u.OutputTokens, md.GetOutputTokens())
		require.Equal(t, u.CacheReadTokens, md.GetCacheReadTokens())
		require.Equal(t, u.CacheCreationTokens, md.GetCacheCreationTokens())
		require.Positive(t, md.GetCacheCreationTokens(), "the skill's system prompt is cached")
		act, err := s.activity.GetActivity(testContext(t), &activityv1.GetActivityRequest{OrganizationId: "org-456", ActivityId: md.GetActivityId()})
		require.NoError(t, err)
		require.EqualValues(t, 32000, act.GetActivity().GetInputData().AsMap()["max_tokens"], "ultrabrain's budget went upstream")

		got, err := streamTask(t, s.orchestrator, testContext(t), designExample())
		require.NoError(t, err)
		require.Equal(t, []string{"accepted", "started", "text", "result"}, got.kinds)
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, got.result.GetStatus(), got.result.GetError())
		require.Equal(t, got.result.GetOutput(), got.text, "the deltas are the answer")
		require.Equal(t, resp.GetOutput(), got.result.GetOutput(), "same prompt, same deterministic answer")
		after := s.sim.Usage(key)
		require.Equal(t, after.InputTokens-u.InputTokens, got.result.GetMetadata().GetInputTokens())
		require.Equal(t, after.OutputTokens-u.OutputTokens, got.result.GetMetadata().GetOutputTokens())
		require.Equal(t, after.CacheReadTokens-u.CacheReadTokens, got.result.GetMetadata().GetCacheReadTokens())
		require.Positive(t, got.result.GetMetadata().GetCacheReadTokens(), "the second call reads the cache")

		accepted := got.events[0].GetAccepted()
		require.Equal(t, got.result.GetMetadata().GetActivityId(), accepted.GetActivityId())
		require.Equal(t, "claude-opus-4-5", accepted.GetModel())

		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "org-456"})
		require.NoError(t, err)
		require.EqualValues(t, 2, usage.GetTotal().GetRequests())
		require.Equal(t, after.OutputTokens, usage.GetTotal().GetOutputTokens(), "the ledger agrees with the upstream")
	})
}

func TestStreamMidStreamErrorFailsOverWithRestart(t *testing.T) {
	s := startStack(t, stackOptions{})
	s.register(t, "acme", "broken", "sk-ant-sim-midstream-a", "scale")
	s.register(t, "acme", "healthy", "sk-ant-sim-tier1-b", "tier1") // less headroom: tried second

	got, err := streamTask(t, s.orchestrator, testContext(t), quickTask("acme"))
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "started", "text", "failed", "restart", "started", "text", "result"}, got.kinds)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, got.result.GetStatus(), got.result.GetError())
	require.Equal(t, got.result.GetOutput(), got.text, "after the restart only the second attempt's text counts")
	md := got.result.GetMetadata()
	require.EqualValues(t, 2, md.GetAttempts())
	first := md.GetAttemptDetails()[0]
	require.Equal(t, "upstream_error", first.GetOutcome())
	require.Contains(t, first.GetError(), "overloaded_error")
	require.True(t, strings.HasPrefix(first.GetMessageId(), "msg_sim_"), "the broken stream's message is identified")
	require.EqualValues(t, 1, s.sim.Stats("sk-ant-sim-midstream-a").StreamsBroken)
	broken := s.sim.Usage("sk-ant-sim-midstream-a")
	require.Positive(t, broken.InputTokens)
	require.Equal(t, broken.InputTokens+s.sim.Usage("sk-ant-sim-tier1-b").InputTokens, md.GetInputTokens(), "the broken attempt's usage counts")

	// The broken stream is in the ledger with the usage the upstream reported.
	usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
	require.NoError(t, err)
	require.Len(t, usage.GetRecords(), 2)
	require.Equal(t, md.GetInputTokens(), usage.GetTotal().GetInputTokens())
}

func TestStreamFailoverBeforeTextHasNoRestart(t *testing.T) {
	s := startStack(t, stackOptions{})
	s.register(t, "acme", "limited", "sk-ant-sim-429-a", "scale")
	s.register(t, "acme", "healthy", "sk-ant-sim-tier1-b", "tier1")
	got, err := streamTask(t, s.orchestrator, testContext(t), quickTask("acme"))
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "started", "failed", "started", "text", "result"}, got.kinds)
	failed := got.events[2].GetAttemptFailed()
	require.Equal(t, "rate_limited", failed.GetOutcome())
	require.Equal(t, orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_RATE_LIMITED, failed.GetOutcomeCode(), "and as the enum")
	require.EqualValues(t, 429, failed.GetHttpStatus())
}

func TestStreamCancellationCancelsTheUpstreamCall(t *testing.T) {
	s := startStack(t, stackOptions{})
	const key = "sk-ant-sim-scale-slow"
	s.register(t, "acme", "slow", key, "scale")
	s.sim.SetFault(key, anthropicsim.Fault{StreamDelay: 300 * time.Millisecond})

	ctx, cancel := context.WithCancel(testContext(t))
	req := quickTask("acme")
	req.RequestId = "req-cancel"
	stream, err := s.orchestrator.StreamDelegateTask(ctx, streamRequest(req))
	require.NoError(t, err)
	for {
		ev, err := stream.Recv()
		require.NoError(t, err)
		if ev.GetText() != nil {
			break
		}
	}
	cancel()
	_, err = stream.Recv()
	require.Equal(t, codes.Canceled, status.Code(err))

	require.Eventually(t, func() bool { return s.sim.Stats(key).StreamsBroken == 1 }, 10*time.Second, 10*time.Millisecond, "the upstream call was cancelled")
	require.Eventually(t, func() bool {
		usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
		return err == nil && len(usage.GetRecords()) == 1 && usage.GetRecords()[0].GetOutcome() == accountpoolv1.Outcome_OUTCOME_CANCELLED
	}, 10*time.Second, 10*time.Millisecond, "the attempt is recorded as cancelled")

	// The request_id's run ended; a retry replays its (failed) result
	// instead of running the model again.
	got, err := streamTask(t, s.orchestrator, testContext(t), req)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "result"}, got.kinds)
	require.True(t, got.result.GetMetadata().GetReplayed())
	require.EqualValues(t, 1, s.sim.Stats(key).Requests)
}

func TestStreamReplayAndErrors(t *testing.T) {
	s := startStack(t, stackOptions{})
	s.register(t, "acme", "primary", "sk-ant-sim-scale-p", "scale")
	req := quickTask("acme")
	req.RequestId = "req-replay"
	first := delegate(t, s, req)

	got, err := streamTask(t, s.orchestrator, testContext(t), req)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted", "result"}, got.kinds)
	require.True(t, got.result.GetMetadata().GetReplayed())
	require.Equal(t, first.GetOutput(), got.result.GetOutput())

	bad := quickTask("acme")
	bad.SessionId = "session\x01"
	_, err = streamTask(t, s.orchestrator, testContext(t), bad)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "session_id")

	// An organization token cannot stream for another organization.
	_, err = streamTask(t, s.as(t, s.tokens.acme).orchestrator, testContext(t), quickTask("beta"))
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	// ... and its own organization is filled in.
	mine := quickTask("")
	got, err = streamTask(t, s.as(t, s.tokens.acme).orchestrator, testContext(t), mine)
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, got.result.GetStatus())
}

func TestEdgeRejectsBeforeAnythingRuns(t *testing.T) {
	s := startStack(t, stackOptions{fallbackKey: "sk-ant-sim-legacy-env"})
	s.register(t, "acme", "primary", "sk-ant-sim-scale-p", "scale")
	for name, mutate := range map[string]func(*orchestratorv1.DelegateTaskRequest){
		"control in session_id": func(r *orchestratorv1.DelegateTaskRequest) { r.SessionId = "session-\x1b123" },
		"control in user_id":    func(r *orchestratorv1.DelegateTaskRequest) { r.UserId = "user\x00789" },
		"NUL in prompt":         func(r *orchestratorv1.DelegateTaskRequest) { r.Prompt = "a\x00b" },
		"escaping prompt":       func(r *orchestratorv1.DelegateTaskRequest) { r.Prompt = strings.Repeat("<", 200<<10) },
		"max_tokens over":       func(r *orchestratorv1.DelegateTaskRequest) { r.MaxTokens = 64_001 },
	} {
		t.Run(name, func(t *testing.T) {
			req := quickTask("acme")
			mutate(req)
			_, err := s.orchestrator.DelegateTask(testContext(t), req)
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		})
	}
	require.Zero(t, s.sim.Stats("sk-ant-sim-scale-p").Requests)
	require.Zero(t, s.sim.Stats("sk-ant-sim-legacy-env").Requests, "never the fallback key")
	list, err := s.activity.ListActivities(testContext(t), &activityv1.ListActivitiesRequest{OrganizationId: "acme"})
	require.NoError(t, err)
	require.Empty(t, list.GetActivities())

	// A 2 MB category name: a short error, and the connection survives.
	req := quickTask("acme")
	req.Category = strings.Repeat("x", 2<<20)
	_, err = s.orchestrator.DelegateTask(testContext(t), req)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Less(t, len(status.Convert(err).Message()), 1024)
	resp := delegate(t, s, quickTask("acme"))
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
}

// hostileUpstream answers every call with a successful stream whose ids,
// model and stop reason carry the caller's key and whose token counts are
// absurd, or, for keys containing "err", an error that echoes the key.
func hostileUpstream(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("x-api-key")
		if key == "" {
			key = strings.TrimPrefix(r.Header.Get("authorization"), "Bearer ")
		}
		w.Header().Set("request-id", "req_"+key)
		if strings.Contains(key, "err") {
			w.Header().Set("content-type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, `{"type":"error","error":{"type":"%s","message":"key %s rejected"},"request_id":"req_%s"}`, key, key, key)
			return
		}
		w.Header().Set("content-type", "text/event-stream")
		var b bytes.Buffer
		ev := func(name, data string) { fmt.Fprintf(&b, "event: %s\ndata: %s\n\n", name, data) }
		ev("message_start", `{"type":"message_start","message":{"id":"msg_`+key+`","type":"message","role":"assistant","model":"`+key+`","content":[],"stop_reason":null,"usage":{"input_tokens":-40,"output_tokens":1}}}`)
		ev("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`)
		ev("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"fine"}}`)
		ev("content_block_stop", `{"type":"content_block_stop","index":0}`)
		ev("message_delta", `{"type":"message_delta","delta":{"stop_reason":"`+key+`"},"usage":{"output_tokens":99999999999}}`)
		ev("message_stop", `{"type":"message_stop"}`)
		_, _ = w.Write(b.Bytes())
	})
}

func TestHostileUpstreamLeaksNoKeyAndStillRecordsUsage(t *testing.T) {
	var logs syncbuf.Buffer
	s := startStack(t, stackOptions{upstream: hostileUpstream(t), logs: &logs})
	const okKey, errKey = "sk-ant-api03-hostileokcanary000001", "sk-ant-api03-hostileerrcanary00002"
	s.register(t, "acme", "a", okKey, "scale")

	resp := delegate(t, s, quickTask("acme"))
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
	md := resp.GetMetadata()
	require.Zero(t, md.GetInputTokens(), "a negative count is clamped to 0")
	require.EqualValues(t, 10_000_000, md.GetOutputTokens(), "a huge count is clamped")
	require.Len(t, md.GetAttemptDetails()[0].GetWarnings(), 2, "and flagged")

	usage, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
	require.NoError(t, err)
	require.Len(t, usage.GetRecords(), 1, "the usage row is written, not dropped")
	require.EqualValues(t, 10_000_000, usage.GetRecords()[0].GetOutputTokens())

	s.register(t, "beta", "b", errKey, "scale")
	failedResp := delegate(t, s, quickTask("beta"))
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, failedResp.GetStatus())

	var everything strings.Builder
	for org, r := range map[string]*orchestratorv1.DelegateTaskResponse{"acme": resp, "beta": failedResp} {
		fmt.Fprintf(&everything, "%v\n", r)
		act, err := s.activity.GetActivity(testContext(t), &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: r.GetMetadata().GetActivityId()})
		require.NoError(t, err)
		fmt.Fprintf(&everything, "%v\n", act)
	}
	for _, org := range []string{"acme", "beta"} {
		u, err := s.pool.GetUsage(testContext(t), &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true})
		require.NoError(t, err)
		fmt.Fprintf(&everything, "%v\n", u)
	}
	everything.WriteString(logs.String())
	for _, canary := range []string{"hostileokcanary", "hostileerrcanary"} {
		require.NotContains(t, everything.String(), canary)
	}
}

// A request the SDK refuses before sending it (here: a base URL it cannot
// parse) is the task's fault: one attempt, no failover, and the account's
// breaker stays closed however often it happens.
func TestLocallyRefusedRequestsLeaveTheBreakerClosed(t *testing.T) {
	s := startStack(t, stackOptions{baseURL: "http://bad host:1/"})
	s.register(t, "acme", "a", "sk-ant-sim-scale-a", "scale")
	s.register(t, "acme", "b", "sk-ant-sim-scale-b", "scale")
	for i := range 7 { // more than the breaker's threshold of 5
		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, resp.GetStatus())
		require.EqualValues(t, 1, resp.GetMetadata().GetAttempts(), "task %d: no failover", i)
		require.Equal(t, "not_sent", resp.GetMetadata().GetAttemptDetails()[0].GetOutcome())
		require.Contains(t, resp.GetError(), "could not be sent")
	}
	list, err := s.pool.ListAccounts(testContext(t), &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.NoError(t, err)
	for _, acc := range list.GetAccounts() {
		require.Equal(t, accountpoolv1.BreakerState_BREAKER_STATE_CLOSED, acc.GetBreaker().GetState(), acc.GetName())
		require.Zero(t, acc.GetBreaker().GetConsecutiveFailures(), acc.GetName())
		require.Equal(t, accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE, acc.GetStatus(), acc.GetName())
	}
}
