package anthropicsim

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const body = `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

// send posts body for key straight to the handler.
func send(s *Server, key, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, "/v1/messages", strings.NewReader(body))
	r.Header.Set("x-api-key", key)
	r.Header.Set("anthropic-version", "2023-06-01")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// flood sends one request for each of n keys never seen before.
func flood(t *testing.T, s *Server, prefix string, n int) {
	t.Helper()
	for i := range n {
		require.Equal(t, http.StatusOK, send(s, prefix+strconv.Itoa(i), body).Code)
	}
}

func (s *Server) tracked() (n int, lists int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.keys), s.plain.Len() + s.scripted.Len()
}

func (s *Server) isTracked(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[key]
	return ok
}

func requireTracked(t *testing.T, s *Server, want int) {
	t.Helper()
	n, lists := s.tracked()
	require.Equal(t, want, n, "tracked keys")
	require.Equal(t, want, lists, "the recency lists hold what the table does")
}

func TestDefaultMaxKeys(t *testing.T) {
	s := New(Config{})
	require.Equal(t, DefaultMaxKeys, s.maxKeys)
	flood(t, s, "k", DefaultMaxKeys+500)
	requireTracked(t, s, DefaultMaxKeys)
}

// Many distinct keys never make the table grow past the cap, and a key in
// recent use keeps its buckets and counters throughout.
func TestTrackedKeysStayAtTheCap(t *testing.T) {
	const maxKeys = 50
	s := New(Config{MaxKeys: maxKeys})
	const recent = "sk-ant-sim-tier1-recent" // 50 requests per minute
	for round := 1; round <= 10; round++ {
		w := send(s, recent, body)
		require.Equal(t, http.StatusOK, w.Code)
		require.Equal(t, strconv.Itoa(50-round), w.Header().Get("anthropic-ratelimit-requests-remaining"),
			"round %d: the bucket remembers the earlier requests", round)
		flood(t, s, fmt.Sprintf("r%d-", round), maxKeys-1) // the recent key stays the 50th most recent
		requireTracked(t, s, maxKeys)
		require.Equal(t, KeyStats{Requests: int64(round), Succeeded: int64(round)}, s.Stats(recent))
	}
	// Unused for maxKeys new keys, it is evicted, and starts afresh.
	flood(t, s, "late-", maxKeys)
	requireTracked(t, s, maxKeys)
	require.Equal(t, KeyStats{}, s.Stats(recent))
	w := send(s, recent, body)
	require.Equal(t, "49", w.Header().Get("anthropic-ratelimit-requests-remaining"))
}

// Keys with a scripted fault or a tier assignment outlast keys without
// one, however long unused; their faults and tiers are never evicted.
func TestScriptedKeysAreEvictedLast(t *testing.T) {
	s := New(Config{MaxKeys: 10})
	s.SetFault("faulted", Fault{Status: http.StatusInternalServerError})
	s.SetKeyTier("tiered", "tier1")
	require.Equal(t, http.StatusInternalServerError, send(s, "faulted", body).Code)
	require.Equal(t, http.StatusOK, send(s, "tiered", body).Code)
	flood(t, s, "plain-", 100)
	requireTracked(t, s, 10)
	require.Equal(t, KeyStats{Requests: 1, Faulted: 1}, s.Stats("faulted"))
	require.Equal(t, KeyStats{Requests: 1, Succeeded: 1}, s.Stats("tiered"))
	w := send(s, "tiered", body)
	require.Equal(t, "48", w.Header().Get("anthropic-ratelimit-requests-remaining"))

	// A fault used up turns its key plain again: then it goes like any other.
	s.SetFault("once", Fault{Status: http.StatusInternalServerError, Count: 1})
	require.Equal(t, http.StatusInternalServerError, send(s, "once", body).Code)
	flood(t, s, "more-", 10)
	require.False(t, s.isTracked("once"))
	require.True(t, s.isTracked("faulted"))

	// When scripted keys alone exceed the cap, the least recently used of
	// them goes, but every fault still applies.
	for i := range 15 {
		s.SetFault("f"+strconv.Itoa(i), Fault{Status: 529})
		require.Equal(t, 529, send(s, "f"+strconv.Itoa(i), body).Code)
	}
	requireTracked(t, s, 10)
	require.False(t, s.isTracked("faulted"))
	require.True(t, s.isTracked("f14"))
	require.Equal(t, http.StatusInternalServerError, send(s, "faulted", body).Code)
	require.Equal(t, 529, send(s, "f0", body).Code)

	// ClearFaults makes them plain: new keys evict them.
	s.ClearFaults()
	flood(t, s, "after-", 10)
	for i := range 15 {
		require.False(t, s.isTracked("f"+strconv.Itoa(i)))
	}
}

// A key with a request in flight is never evicted, so what the request
// counts lands in the state later requests see.
func TestKeysInFlightAreNotEvicted(t *testing.T) {
	s := New(Config{MaxKeys: 5})
	s.mu.Lock()
	busy := s.acquire("busy", s.now())
	s.mu.Unlock()
	flood(t, s, "k", 20)
	requireTracked(t, s, 5)
	require.True(t, s.isTracked("busy"))
	s.release(busy)
	flood(t, s, "j", 5)
	require.False(t, s.isTracked("busy"))

	// Every key busy: the table grows past the cap rather than lose one.
	var held []*keyState
	s.mu.Lock()
	for i := range 7 {
		held = append(held, s.acquire("h"+strconv.Itoa(i), s.now()))
	}
	s.mu.Unlock()
	requireTracked(t, s, 7)
	for _, st := range held {
		s.release(st)
	}
	flood(t, s, "i", 1)
	requireTracked(t, s, 7) // one evicted, one added
}

// POST /sim/faults keeps at most MaxKeys keys with a fault; SetFault, in
// process, is not limited.
func TestScriptedFaultsOverHTTPAreBounded(t *testing.T) {
	s := New(Config{MaxKeys: 2})
	post := func(key string) (int, string) {
		r := httptest.NewRequest(http.MethodPost, "/sim/faults", strings.NewReader(`{"api_key":"`+key+`","status":500}`))
		r.Header.Set("Authorization", "Bearer "+s.ControlToken())
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	code, _ := post("a")
	require.Equal(t, http.StatusNoContent, code)
	code, _ = post("b")
	require.Equal(t, http.StatusNoContent, code)
	code, msg := post("c")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, msg, "2 keys have a scripted fault already")
	require.Contains(t, msg, "DELETE /sim/faults")
	require.Equal(t, http.StatusOK, send(s, "c", body).Code, "c's fault was not set")
	code, _ = post("a")
	require.Equal(t, http.StatusNoContent, code, "replacing a key's fault is not a new key")
	s.SetFault("a", Fault{})
	code, _ = post("c")
	require.Equal(t, http.StatusNoContent, code)

	s.SetFault("d", Fault{Status: 529})
	require.Equal(t, 529, send(s, "d", body).Code)
}

// One key's prompt cache holds at most maxCacheEntries prefixes, whatever
// the number of distinct system prompts.
func TestPromptCacheIsBoundedPerKey(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	s := New(Config{Now: func() time.Time { return now }})
	for i := range 3 * maxCacheEntries {
		b := fmt.Sprintf(`{"model":"m","max_tokens":10,"system":[{"type":"text","text":"prompt %d","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}`, i)
		require.Equal(t, http.StatusOK, send(s, "k", b).Code)
		now = now.Add(time.Millisecond)
	}
	s.mu.Lock()
	n := len(s.keys["k"].cache)
	s.mu.Unlock()
	require.Equal(t, maxCacheEntries, n)
	// The newest prefix is still cached.
	last := fmt.Sprintf(`{"model":"m","max_tokens":10,"system":[{"type":"text","text":"prompt %d","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}]}`, 3*maxCacheEntries-1)
	require.Contains(t, send(s, "k", last).Body.String(), `"cache_read_input_tokens":3`)
}
