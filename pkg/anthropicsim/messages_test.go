package anthropicsim_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

func TestSuccessParsesWithUsageAndHeaders(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-test-success"

	msg, h := e.ok(t, key, params("Hello, simulator!")) // 17 characters → 5 tokens

	require.True(t, strings.HasPrefix(msg.ID, "msg_sim_"), msg.ID)
	require.Equal(t, anthropic.Model(model), msg.Model)
	require.Equal(t, anthropic.StopReasonEndTurn, msg.StopReason)
	require.Len(t, msg.Content, 1)
	text := msg.Content[0].Text
	require.Equal(t, "text", msg.Content[0].Type)
	require.True(t, strings.HasPrefix(text, "Simulated answer (model claude-sim-1): "), text)
	require.Contains(t, text, "Hello, simulator!")
	require.EqualValues(t, 5, msg.Usage.InputTokens)
	require.EqualValues(t, (len([]rune(text))+3)/4, msg.Usage.OutputTokens)
	require.Zero(t, msg.Usage.CacheReadInputTokens)
	require.Zero(t, msg.Usage.CacheCreationInputTokens)
	require.Equal(t, anthropic.UsageServiceTierStandard, msg.Usage.ServiceTier)

	out := msg.Usage.OutputTokens
	require.True(t, strings.HasPrefix(h.Get("request-id"), "req_sim_"))
	require.Equal(t, "10000", h.Get("anthropic-ratelimit-requests-limit"))
	require.Equal(t, "9999", h.Get("anthropic-ratelimit-requests-remaining"))
	require.Equal(t, "10000000", h.Get("anthropic-ratelimit-input-tokens-limit"))
	require.Equal(t, itoa(10_000_000-5), h.Get("anthropic-ratelimit-input-tokens-remaining"))
	require.Equal(t, "2000000", h.Get("anthropic-ratelimit-output-tokens-limit"))
	require.Equal(t, itoa(2_000_000-out), h.Get("anthropic-ratelimit-output-tokens-remaining"))
	require.Equal(t, "12000000", h.Get("anthropic-ratelimit-tokens-limit"))
	require.Equal(t, itoa(12_000_000-5-out), h.Get("anthropic-ratelimit-tokens-remaining"))
	// One request of 10000/min refills in 6ms; reset is rounded up to the second.
	require.Equal(t, e.clock.Now().Add(time.Second), resetAt(t, h, "requests"))

	again, _ := e.ok(t, key, params("Hello, simulator!"))
	require.Equal(t, text, again.Content[0].Text, "answers are deterministic")
	require.NotEqual(t, msg.ID, again.ID)

	other, _ := e.ok(t, key, params("Something else"))
	require.NotEqual(t, text, other.Content[0].Text)

	require.Equal(t, anthropicsim.KeyStats{Requests: 3, Succeeded: 3}, e.sim.Stats(key))
}

func TestOutputCappedAtMaxTokens(t *testing.T) {
	e := newEnv(t)
	p := params("a long enough question")
	p.MaxTokens = 3

	msg, _ := e.ok(t, "sk-ant-test-cap", p)

	require.Equal(t, anthropic.StopReasonMaxTokens, msg.StopReason)
	require.EqualValues(t, 3, msg.Usage.OutputTokens)
	require.Equal(t, "Simulated a", msg.Content[0].Text[:11])
	require.Len(t, []rune(msg.Content[0].Text), 12)
}

func TestRequestBucketExhaustsAndRefills(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-tier1-rpm"
	p := params("hi")
	p.MaxTokens = 16

	for range 50 {
		e.ok(t, key, p)
	}
	apierr := e.fail(t, key, p, 429)
	require.Equal(t, anthropic.ErrorTypeRateLimitError, apierr.Type())
	h := apierr.Response.Header
	// 50 requests per minute: one request refills in 1.2s.
	require.Equal(t, "2", h.Get("retry-after"))
	require.Equal(t, "50", h.Get("anthropic-ratelimit-requests-limit"))
	require.Equal(t, "0", h.Get("anthropic-ratelimit-requests-remaining"))
	require.Equal(t, e.clock.Now().Add(time.Minute), resetAt(t, h, "requests"))
	require.Equal(t, "30000", h.Get("anthropic-ratelimit-input-tokens-limit"))
	require.Equal(t, "8000", h.Get("anthropic-ratelimit-output-tokens-limit"))
	require.Contains(t, apierr.Message, "50 requests per minute")
	require.Equal(t, anthropicsim.KeyStats{Requests: 51, Succeeded: 50, RateLimited: 1, CapacityRejected: 1}, e.sim.Stats(key))

	e.clock.Advance(time.Second)
	apierr = e.fail(t, key, p, 429)
	require.Equal(t, "1", apierr.Response.Header.Get("retry-after"))

	e.clock.Advance(200 * time.Millisecond)
	_, h = e.ok(t, key, p)
	require.Equal(t, "0", h.Get("anthropic-ratelimit-requests-remaining"))
	e.fail(t, key, p, 429)
}

func TestInputTokenBucketExhaustsAndRefills(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-test-itpm"
	e.sim.SetKeyTier(key, "tier1") // 30000 input tokens per minute, 500 per second
	p := params(strings.Repeat("a", 80_000))

	msg, h := e.ok(t, key, p)
	require.EqualValues(t, 20_000, msg.Usage.InputTokens)
	require.Equal(t, "10000", h.Get("anthropic-ratelimit-input-tokens-remaining"))

	apierr := e.fail(t, key, p, 429)
	require.Equal(t, "20", apierr.Response.Header.Get("retry-after"), "10000 missing tokens at 500/s")
	require.Contains(t, apierr.Message, "30000 input tokens per minute")

	e.clock.Advance(19 * time.Second)
	apierr = e.fail(t, key, p, 429)
	require.Equal(t, "1", apierr.Response.Header.Get("retry-after"))

	e.clock.Advance(time.Second)
	_, h = e.ok(t, key, p)
	require.Equal(t, "0", h.Get("anthropic-ratelimit-input-tokens-remaining"))
	require.Equal(t, anthropicsim.KeyStats{Requests: 4, Succeeded: 2, RateLimited: 2, CapacityRejected: 2}, e.sim.Stats(key))
}

func TestOutputTokensReservedThenRefunded(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-tier1-otpm" // 8000 output tokens per minute
	p := params("hi")
	p.MaxTokens = 7_000

	msg, h := e.ok(t, key, p)
	require.Less(t, msg.Usage.OutputTokens, int64(100))
	require.Equal(t, itoa(8_000-msg.Usage.OutputTokens), h.Get("anthropic-ratelimit-output-tokens-remaining"),
		"only the produced tokens leave the bucket")

	// Admission needs max_tokens of output: 7000 fits again, 8000 does not yet.
	e.ok(t, key, p)
	p.MaxTokens = 8_000
	apierr := e.fail(t, key, p, 429)
	require.Contains(t, apierr.Message, "8000 output tokens per minute")

	// More than the whole bucket can never be admitted.
	p.MaxTokens = 8_001
	e.clock.Advance(time.Minute)
	e.fail(t, key, p, 429)
}

func TestPromptCacheCreationThenRead(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-test-cache"
	system := strings.Repeat("s", 4_000) // 1000 tokens
	p := params("Hi")                    // 1 token
	p.System = []anthropic.TextBlockParam{{Text: system, CacheControl: anthropic.NewCacheControlEphemeralParam()}}

	first, _ := e.ok(t, key, p)
	require.EqualValues(t, 1_000, first.Usage.CacheCreationInputTokens)
	require.EqualValues(t, 1_000, first.Usage.CacheCreation.Ephemeral5mInputTokens)
	require.Zero(t, first.Usage.CacheReadInputTokens)
	require.EqualValues(t, 1, first.Usage.InputTokens)

	second, _ := e.ok(t, key, p)
	require.Zero(t, second.Usage.CacheCreationInputTokens)
	require.EqualValues(t, 1_000, second.Usage.CacheReadInputTokens)
	require.EqualValues(t, 1, second.Usage.InputTokens)

	// The cache is per key and per model.
	other, _ := e.ok(t, "sk-ant-test-cache-other", p)
	require.EqualValues(t, 1_000, other.Usage.CacheCreationInputTokens)
	pm := p
	pm.Model = "claude-sim-2"
	otherModel, _ := e.ok(t, key, pm)
	require.EqualValues(t, 1_000, otherModel.Usage.CacheCreationInputTokens)

	// A system prompt without cache_control is plain input.
	plain := params("Hi")
	plain.System = []anthropic.TextBlockParam{{Text: system}}
	msg, _ := e.ok(t, key, plain)
	require.EqualValues(t, 1_001, msg.Usage.InputTokens)
	require.Zero(t, msg.Usage.CacheReadInputTokens)

	// Entries live 5 minutes from their last use.
	e.clock.Advance(4 * time.Minute)
	msg, _ = e.ok(t, key, p)
	require.EqualValues(t, 1_000, msg.Usage.CacheReadInputTokens)
	e.clock.Advance(5 * time.Minute)
	msg, _ = e.ok(t, key, p)
	require.EqualValues(t, 1_000, msg.Usage.CacheCreationInputTokens)
}

func TestPromptCachePrefixesAndTTL(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-test-prefix"
	a := anthropic.TextBlockParam{Text: strings.Repeat("a", 4_000), CacheControl: anthropic.NewCacheControlEphemeralParam()}
	b := anthropic.TextBlockParam{Text: strings.Repeat("b", 2_000), CacheControl: anthropic.CacheControlEphemeralParam{TTL: anthropic.CacheControlEphemeralTTLTTL1h}}
	tail := anthropic.TextBlockParam{Text: strings.Repeat("c", 400)}

	p := params("Hi")
	p.System = []anthropic.TextBlockParam{a}
	e.ok(t, key, p)

	p.System = []anthropic.TextBlockParam{a, b, tail}
	msg, _ := e.ok(t, key, p)
	require.EqualValues(t, 1_000, msg.Usage.CacheReadInputTokens, "prefix up to a was cached")
	require.EqualValues(t, 500, msg.Usage.CacheCreationInputTokens, "a+b is new")
	require.EqualValues(t, 500, msg.Usage.CacheCreation.Ephemeral1hInputTokens)
	require.Zero(t, msg.Usage.CacheCreation.Ephemeral5mInputTokens)
	require.EqualValues(t, 100+1, msg.Usage.InputTokens, "after the last breakpoint")

	msg, _ = e.ok(t, key, p)
	require.EqualValues(t, 1_500, msg.Usage.CacheReadInputTokens)
	require.Zero(t, msg.Usage.CacheCreationInputTokens)

	// Changing an earlier block invalidates every later prefix.
	p.System = []anthropic.TextBlockParam{{Text: strings.Repeat("x", 4_000), CacheControl: anthropic.NewCacheControlEphemeralParam()}, b, tail}
	msg, _ = e.ok(t, key, p)
	require.Zero(t, msg.Usage.CacheReadInputTokens)
	require.EqualValues(t, 1_500, msg.Usage.CacheCreationInputTokens)
}

func TestCacheReadsDoNotCountTowardInputTPM(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-tier1-cache" // 30000 input tokens per minute
	p := params("Hi")
	p.System = []anthropic.TextBlockParam{{Text: strings.Repeat("s", 100_000), CacheControl: anthropic.NewCacheControlEphemeralParam()}}

	_, h := e.ok(t, key, p)
	require.Equal(t, "4999", h.Get("anthropic-ratelimit-input-tokens-remaining"), "cache creation counts")

	msg, h := e.ok(t, key, p) // would need 25001 > 4999 if reads counted
	require.EqualValues(t, 25_000, msg.Usage.CacheReadInputTokens)
	require.Equal(t, "4998", h.Get("anthropic-ratelimit-input-tokens-remaining"))
}

func TestConcurrentRequestsShareOneBucket(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-tier1-concurrent" // 50 requests per minute; the clock stands still
	p := params("hi")
	p.MaxTokens = 16

	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for range 80 {
		wg.Go(func() {
			c := e.client(key)
			_, err := c.Messages.New(context.Background(), p)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var ok, limited int
	for err := range errs {
		if err == nil {
			ok++
			continue
		}
		apierr, isAPI := asAPIError(err)
		require.True(t, isAPI, err)
		require.Equal(t, 429, apierr.StatusCode)
		limited++
	}
	require.Equal(t, 50, ok)
	require.Equal(t, 30, limited)
	require.Equal(t, anthropicsim.KeyStats{Requests: 80, Succeeded: 50, RateLimited: 30, CapacityRejected: 30}, e.sim.Stats(key))
}

func TestSetKeyTier(t *testing.T) {
	e := newEnv(t)
	const key = "sk-ant-sim-tier1-upgrade"
	p := params("hi")
	p.MaxTokens = 16
	for range 50 {
		e.ok(t, key, p)
	}
	e.fail(t, key, p, 429)

	e.sim.SetKeyTier(key, "tier2") // beats the prefix and refills
	_, h := e.ok(t, key, p)
	require.Equal(t, "1000", h.Get("anthropic-ratelimit-requests-limit"))
	require.Equal(t, "999", h.Get("anthropic-ratelimit-requests-remaining"))

	e.sim.SetKeyTier(key, "no-such-tier") // back to the prefix tier
	_, h = e.ok(t, key, p)
	require.Equal(t, "50", h.Get("anthropic-ratelimit-requests-limit"))

	e.sim.SetKeyTier("plain-key", "build")
	_, h = e.ok(t, "plain-key", p)
	require.Equal(t, "5000", h.Get("anthropic-ratelimit-requests-limit"))
	e.sim.SetKeyTier("plain-key", "")
	_, h = e.ok(t, "plain-key", p)
	require.Equal(t, "10000", h.Get("anthropic-ratelimit-requests-limit"))
}

func TestCustomTiersAndDefault(t *testing.T) {
	c := newClock()
	sim := anthropicsim.New(anthropicsim.Config{
		Tiers:       map[string]anthropicsim.Limits{"tiny": {RequestsPerMinute: 1, InputTokensPerMinute: 0, OutputTokensPerMinute: 1_000}},
		DefaultTier: "tiny",
		Now:         c.Now,
	})
	e := &env{sim: sim, clock: c}
	e.srv = newServer(t, sim)

	_, h := e.ok(t, "k", params(strings.Repeat("a", 1_000_000)))
	require.Equal(t, "1", h.Get("anthropic-ratelimit-requests-limit"))
	require.Empty(t, h.Get("anthropic-ratelimit-input-tokens-limit"), "unlimited bucket has no headers")
	require.Empty(t, h.Get("anthropic-ratelimit-tokens-limit"))
	apierr := e.fail(t, "k", params("a"), 429)
	require.Equal(t, "60", apierr.Response.Header.Get("retry-after"))

	require.Panics(t, func() { anthropicsim.New(anthropicsim.Config{DefaultTier: "nope"}) })
}

func TestDefaultTiers(t *testing.T) {
	tiers := anthropicsim.DefaultTiers()
	require.Equal(t, anthropicsim.Limits{RequestsPerMinute: 50, InputTokensPerMinute: 30_000, OutputTokensPerMinute: 8_000}, tiers["tier1"])
	require.Equal(t, anthropicsim.Limits{RequestsPerMinute: 10_000, InputTokensPerMinute: 10_000_000, OutputTokensPerMinute: 2_000_000}, tiers["scale"])
	require.Len(t, tiers, 7)
	tiers["tier1"] = anthropicsim.Limits{}
	require.NotEqual(t, anthropicsim.Limits{}, anthropicsim.DefaultTiers()["tier1"], "a fresh copy each time")
}
