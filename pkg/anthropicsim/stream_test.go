package anthropicsim_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

// streamed makes one streamed SDK call and accumulates it as the
// orchestrator does. It returns the message, the event types seen, the
// stream's error and whether message_stop arrived.
func (e *env) streamed(t *testing.T, key string, p anthropic.MessageNewParams) (anthropic.Message, []string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := e.client(key)
	stream := c.Messages.NewStreaming(ctx, p)
	defer stream.Close()
	var msg anthropic.Message
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		require.NoError(t, msg.Accumulate(ev))
	}
	return msg, types, stream.Err()
}

func TestStreamMatchesTheUnstreamedAnswer(t *testing.T) {
	e := newEnv(t)
	p := params("Analyze this codebase: " + strings.Repeat("the quick brown fox ", 20))
	p.System = []anthropic.TextBlockParam{{Text: "You are a git master.", CacheControl: anthropic.NewCacheControlEphemeralParam()}}

	// Same key, same system prompt: the first call writes the cache, the
	// second and third read it. Compare the second (unstreamed) with the
	// third (streamed), which see the same cache state.
	e.ok(t, "k", p)
	plain, _ := e.ok(t, "k", p)
	msg, types, err := e.streamed(t, "k", p)
	require.NoError(t, err)

	require.Equal(t, "message_start", types[0])
	require.Equal(t, "content_block_start", types[1])
	require.Equal(t, []string{"content_block_stop", "message_delta", "message_stop"}, types[len(types)-3:])
	deltas := 0
	for _, ty := range types {
		if ty == "content_block_delta" {
			deltas++
		}
	}
	require.Greater(t, deltas, 2, "the answer arrives in several deltas")

	require.Equal(t, plain.Content[0].Text, msg.Content[0].Text)
	require.Equal(t, plain.StopReason, msg.StopReason)
	require.Equal(t, plain.Model, msg.Model)
	require.Equal(t, plain.Usage.InputTokens, msg.Usage.InputTokens)
	require.Equal(t, plain.Usage.OutputTokens, msg.Usage.OutputTokens)
	require.Equal(t, plain.Usage.CacheReadInputTokens, msg.Usage.CacheReadInputTokens)
	require.Positive(t, msg.Usage.CacheReadInputTokens)
	require.Equal(t, plain.Usage.CacheCreationInputTokens, msg.Usage.CacheCreationInputTokens)

	st := e.sim.Stats("k")
	require.EqualValues(t, 3, st.Succeeded)
	require.Zero(t, st.StreamsBroken)
	require.Equal(t, 3*plain.Usage.OutputTokens, e.sim.Usage("k").OutputTokens)
}

func TestStreamMaxTokensStopsTheStream(t *testing.T) {
	e := newEnv(t)
	p := params("hello there")
	p.MaxTokens = 3
	msg, _, err := e.streamed(t, "k", p)
	require.NoError(t, err)
	require.Equal(t, anthropic.StopReasonMaxTokens, msg.StopReason)
	require.EqualValues(t, 3, msg.Usage.OutputTokens)
	require.Len(t, msg.Content[0].Text, 12)
}

func TestStreamFailures(t *testing.T) {
	for _, tc := range []struct {
		failure anthropicsim.StreamFailure
		errType string
		status  int // for the same fault on an unstreamed call
	}{
		{anthropicsim.StreamOverloaded, "overloaded_error", 529},
		{anthropicsim.StreamAPIError, "api_error", 500},
		{anthropicsim.StreamCut, "", 500},
	} {
		t.Run(string(tc.failure), func(t *testing.T) {
			e := newEnv(t)
			e.sim.SetFault("k", anthropicsim.Fault{StreamFailure: tc.failure, StreamFailAfter: 2})
			msg, types, err := e.streamed(t, "k", params("a prompt long enough for several deltas of text"))
			require.Equal(t, "message_start", types[0])
			require.NotContains(t, types, "message_stop")
			require.Equal(t, 2, strings.Count(strings.Join(types, " "), "content_block_delta"))
			require.Positive(t, msg.Usage.InputTokens, "message_start's usage is kept")
			if tc.errType != "" {
				apierr, ok := asAPIError(err)
				require.Truef(t, ok, "want *anthropic.Error, got %v", err)
				require.EqualValues(t, tc.errType, apierr.Type())
				require.Equal(t, http.StatusOK, apierr.StatusCode, "the stream had started")
			} else {
				require.NoError(t, err, "a cut stream ends like a short one; only the missing message_stop tells")
			}
			st := e.sim.Stats("k")
			require.EqualValues(t, 1, st.StreamsBroken)
			require.Zero(t, st.Succeeded)
			require.Equal(t, msg.Usage.InputTokens, e.sim.Usage("k").InputTokens)

			e.fail(t, "k", params("unstreamed"), tc.status)
		})
	}
}

func TestStreamPrefixKeyBreaksMidStream(t *testing.T) {
	e := newEnv(t)
	_, types, err := e.streamed(t, "sk-ant-sim-midstream-a", params("a prompt long enough for several deltas of text"))
	apierr, ok := asAPIError(err)
	require.Truef(t, ok, "want *anthropic.Error, got %v", err)
	require.EqualValues(t, "overloaded_error", apierr.Type())
	require.Equal(t, 2, strings.Count(strings.Join(types, " "), "content_block_delta"))
}

func TestStreamDelayPacesDeltasAndClientCancelStopsIt(t *testing.T) {
	e := newEnv(t)
	e.sim.SetFault("k", anthropicsim.Fault{StreamDelay: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := e.client("k")
	stream := c.Messages.NewStreaming(ctx, params("a prompt long enough for several deltas of text"))
	defer stream.Close()
	seen := 0
	for stream.Next() {
		if stream.Current().Type == "content_block_delta" {
			seen++
			cancel()
		}
	}
	require.Equal(t, 1, seen)
	require.Error(t, stream.Err())
	require.Eventually(t, func() bool { return e.sim.Stats("k").StreamsBroken == 1 }, 5*time.Second, 10*time.Millisecond)
}

func TestStreamWireFormat(t *testing.T) {
	e := newEnv(t)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/messages",
		strings.NewReader(`{"model":"m","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	require.NoError(t, err)
	req.Header.Set("x-api-key", "k")
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("content-type"))
	require.NotEmpty(t, resp.Header.Get("request-id"))
	require.NotEmpty(t, resp.Header.Get("anthropic-ratelimit-requests-remaining"))

	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	require.Equal(t, "event: message_start", lines[0])
	require.True(t, strings.HasPrefix(lines[1], `data: {"type":"message_start","message":{"id":"msg_sim_`), lines[1])
	require.Equal(t, "", lines[2], "an empty line ends each event")
	require.Equal(t, "event: message_stop", lines[len(lines)-3])
	require.Equal(t, `data: {"type":"message_stop"}`, lines[len(lines)-2])
}
