package anthropicsim

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxBodyBytes is the Messages API's request size limit.
	maxBodyBytes = 32 << 20
	// maxMaxTokens bounds max_tokens well above any model's output limit, so
	// that token arithmetic cannot overflow.
	maxMaxTokens = 1_000_000
)

// request is a validated POST /v1/messages body, reduced to what the simulator
// needs.
type request struct {
	model     string
	maxTokens int64
	system    []systemBlock
	msgTokens int64  // input tokens of all messages
	lastUser  string // text of the last user message
	stream    bool
}

type systemBlock struct {
	text   string
	tokens int64
	ttl    time.Duration // > 0: a cache breakpoint with this TTL
}

// Wire shapes of the request body; unknown fields are ignored.
type (
	wireRequest struct {
		Model     *string         `json:"model"`
		MaxTokens *int64          `json:"max_tokens"`
		Messages  []wireMessage   `json:"messages"`
		System    json.RawMessage `json:"system"`
		Stream    bool            `json:"stream"`
	}
	wireMessage struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	wireBlock struct {
		Type         string            `json:"type"`
		Text         string            `json:"text"`
		Input        json.RawMessage   `json:"input"`   // tool_use
		Content      json.RawMessage   `json:"content"` // tool_result
		CacheControl *wireCacheControl `json:"cache_control"`
	}
	wireCacheControl struct {
		Type string `json:"type"`
		TTL  string `json:"ttl"`
	}
)

// Wire shapes of a successful answer.
type (
	messageResponse struct {
		ID           string      `json:"id"`
		Type         string      `json:"type"`
		Role         string      `json:"role"`
		Model        string      `json:"model"`
		Content      []textBlock `json:"content"`
		StopReason   string      `json:"stop_reason"`
		StopSequence *string     `json:"stop_sequence"`
		Usage        usage       `json:"usage"`
	}
	textBlock struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	usage struct {
		InputTokens              int64         `json:"input_tokens"`
		CacheCreationInputTokens int64         `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64         `json:"cache_read_input_tokens"`
		CacheCreation            cacheCreation `json:"cache_creation"`
		OutputTokens             int64         `json:"output_tokens"`
		ServiceTier              string        `json:"service_tier"`
	}
	cacheCreation struct {
		Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
	}
)

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request, reqID string) {
	key := apiKey(r)
	if key == "" {
		writeError(w, reqID, apiError{status: http.StatusUnauthorized, typ: "authentication_error",
			msg: "x-api-key header is required"})
		return
	}
	s.mu.Lock()
	st := s.acquire(key, s.now())
	st.stats.Requests++
	s.mu.Unlock()
	defer s.release(st)

	if r.Header.Get("anthropic-version") == "" {
		writeError(w, reqID, invalidRequest("anthropic-version: header is required"))
		return
	}
	req, aerr := readRequest(w, r)
	if aerr != nil {
		s.log.Debug("anthropicsim: rejected request", "key", fingerprint(key), "request_id", reqID, "status", aerr.status, "reason", aerr.msg)
		writeError(w, reqID, *aerr)
		return
	}

	s.mu.Lock()
	f, faulted := s.takeFault(key, s.state(key, s.now()))
	s.mu.Unlock()
	if faulted && !s.applyFault(w, r, reqID, key, f, req.stream) {
		return
	}
	s.answer(w, r, reqID, key, req, f)
}

// answer admits req against key's buckets and answers it: 200 (a JSON
// message or an event stream) or 429. f's stream fields apply to a stream.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, reqID, key string, req request, f Fault) {
	text, outTokens, stop := reply(req)
	now := s.now()

	s.mu.Lock()
	st := s.state(key, now)
	st.refill(now)
	plan := st.planCache(req, now)
	inCharge := plan.uncached + plan.creation // cache reads are free of input TPM
	short, wait := st.shortage(inCharge, req.maxTokens)
	if short != "" {
		st.stats.RateLimited++
		st.stats.CapacityRejected++
		h := st.rateHeaders(now)
		tier := st.tier
		s.mu.Unlock()

		maps.Copy(w.Header(), h)
		s.log.Debug("anthropicsim: capacity exhausted", "key", fingerprint(key), "request_id", reqID, "bucket", short, "wait", wait)
		writeError(w, reqID, apiError{
			status: http.StatusTooManyRequests, typ: "rate_limit_error", retryAfter: wait,
			msg: fmt.Sprintf("This request would exceed your rate limit for %s (tier %q, simulated). Retry after %ds.",
				short, tier, retryAfterSeconds(wait)),
		})
		return
	}
	st.req.take(1)
	st.in.take(inCharge)
	// Admission required max_tokens of output; the unused part is refunded
	// straight away, so only what was produced leaves the bucket.
	st.out.take(outTokens)
	st.commitCache(plan, now)
	h := st.rateHeaders(now)
	s.mu.Unlock()

	maps.Copy(w.Header(), h)
	u := usage{
		InputTokens:              plan.uncached,
		CacheCreationInputTokens: plan.creation,
		CacheReadInputTokens:     plan.read,
		CacheCreation:            cacheCreation{Ephemeral5m: plan.creation - plan.creation1h, Ephemeral1h: plan.creation1h},
		OutputTokens:             outTokens,
		ServiceTier:              "standard",
	}
	if req.stream {
		s.streamAnswer(r.Context(), w, req.model, text, stop, u, f.StreamFailure, f.StreamFailAfter, f.StreamDelay, func(reported int64, completed bool) {
			charged := u
			s.mu.Lock()
			st := s.state(key, s.now())
			if !completed {
				st.out.refund(outTokens - reported)
				charged.OutputTokens = reported
			}
			st.count(charged, completed)
			s.mu.Unlock()
			s.log.Debug("anthropicsim: streamed", "key", fingerprint(key), "request_id", reqID, "completed", completed,
				"input_tokens", charged.InputTokens, "cache_read", charged.CacheReadInputTokens, "cache_creation", charged.CacheCreationInputTokens, "output_tokens", charged.OutputTokens)
		})
		return
	}
	s.mu.Lock()
	s.state(key, s.now()).count(u, true)
	s.mu.Unlock()
	s.log.Debug("anthropicsim: answered", "key", fingerprint(key), "request_id", reqID,
		"input_tokens", plan.uncached, "cache_read", plan.read, "cache_creation", plan.creation, "output_tokens", outTokens)
	writeJSON(w, http.StatusOK, messageResponse{
		ID:         "msg_sim_" + rand.Text(),
		Type:       "message",
		Role:       "assistant",
		Model:      req.model,
		Content:    []textBlock{{Type: "text", Text: text}},
		StopReason: stop,
		Usage:      u,
	})
}

// count adds an answer's usage to the key's stats. s.mu must be held.
func (st *keyState) count(u usage, succeeded bool) {
	if succeeded {
		st.stats.Succeeded++
	} else {
		st.stats.StreamsBroken++
	}
	st.usage.InputTokens += u.InputTokens
	st.usage.OutputTokens += u.OutputTokens
	st.usage.CacheReadTokens += u.CacheReadInputTokens
	st.usage.CacheCreationTokens += u.CacheCreationInputTokens
}

// shortage names the first bucket that cannot admit a request needing in input
// and out output tokens ("" if all can) and how long until every bucket could.
func (st *keyState) shortage(in, out int64) (string, time.Duration) {
	var short string
	var wait time.Duration
	for _, c := range []struct {
		what string
		b    *bucket
		n    int64
	}{
		{"requests per minute", &st.req, 1},
		{"input tokens per minute", &st.in, in},
		{"output tokens per minute", &st.out, out},
	} {
		if d := c.b.wait(c.n); d > 0 {
			if short == "" {
				short = fmt.Sprintf("%d %s", c.b.limit, c.what)
			}
			wait = max(wait, d)
		}
	}
	return short, wait
}

// cachePlan is how a request's input tokens split between the prompt cache and
// the rest.
type cachePlan struct {
	uncached   int64 // input_tokens: after the last breakpoint
	read       int64 // cache_read_input_tokens
	creation   int64 // cache_creation_input_tokens
	creation1h int64 // the part of creation with a 1h TTL
	entries    []cacheEntry
}

type cacheEntry struct {
	hash [sha256.Size]byte
	ttl  time.Duration
}

// planCache works out which system-prompt prefixes are cached for this key
// without changing the cache: a rejected request must leave it untouched.
func (st *keyState) planCache(req request, now time.Time) cachePlan {
	var (
		plan    cachePlan
		cum     []int64 // tokens up to and including each breakpoint
		sysToks int64
		cached  = -1 // index of the longest live cached prefix
	)
	h := sha256.New()
	writeString(h, req.model)
	for _, b := range req.system {
		sysToks += b.tokens
		writeString(h, b.text)
		if b.ttl <= 0 {
			continue
		}
		var e cacheEntry
		h.Sum(e.hash[:0])
		e.ttl = b.ttl
		if exp, ok := st.cache[e.hash]; ok && now.Before(exp) {
			cached = len(plan.entries)
		}
		plan.entries = append(plan.entries, e)
		cum = append(cum, sysToks)
	}
	total := max(1, sysToks+req.msgTokens)
	if len(cum) == 0 {
		plan.uncached = total
		return plan
	}
	if cached >= 0 {
		plan.read = cum[cached]
	}
	for i := cached + 1; i < len(cum); i++ {
		n := cum[i]
		if i > 0 {
			n -= cum[i-1]
		}
		plan.creation += n
		if plan.entries[i].ttl >= time.Hour {
			plan.creation1h += n
		}
	}
	plan.uncached = total - cum[len(cum)-1]
	return plan
}

// commitCache writes or refreshes the plan's prefixes and drops expired ones.
func (st *keyState) commitCache(plan cachePlan, now time.Time) {
	maps.DeleteFunc(st.cache, func(_ [sha256.Size]byte, exp time.Time) bool { return !now.Before(exp) })
	for _, e := range plan.entries {
		st.cache[e.hash] = now.Add(e.ttl)
	}
	st.trimCache()
}

// writeString writes s length-prefixed, so that block boundaries are part of
// the hash.
func writeString(w io.Writer, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	_, _ = w.Write(n[:])
	_, _ = io.WriteString(w, s)
}

// reply is the deterministic answer to req: its text, output tokens and stop
// reason.
func reply(req request) (string, int64, string) {
	sum := sha256.Sum256([]byte(req.lastUser))
	excerpt := req.lastUser
	if utf8.RuneCountInString(excerpt) > 40 {
		excerpt = string([]rune(excerpt)[:40]) + "…"
	}
	text := fmt.Sprintf("Simulated answer (model %s): you wrote %q (%d characters, sha256 %x).",
		req.model, excerpt, utf8.RuneCountInString(req.lastUser), sum[:6])
	tokens := countTokens(text)
	if tokens <= req.maxTokens {
		return text, tokens, "end_turn"
	}
	return string([]rune(text)[:req.maxTokens*4]), req.maxTokens, "max_tokens"
}

// countTokens approximates a tokenizer: one token per four characters, rounded up.
func countTokens(s string) int64 {
	return ceilDiv(int64(utf8.RuneCountInString(s)), 4)
}

// readRequest reads and validates the body of POST /v1/messages.
func readRequest(w http.ResponseWriter, r *http.Request) (request, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return request{}, &apiError{status: http.StatusRequestEntityTooLarge, typ: "request_too_large",
				msg: fmt.Sprintf("Request exceeds the maximum allowed number of bytes (%d).", maxBodyBytes)}
		}
		e := invalidRequest("reading body: " + err.Error())
		return request{}, &e
	}
	req, err := parseRequest(body)
	if err != nil {
		e := invalidRequest(err.Error())
		return request{}, &e
	}
	return req, nil
}

func parseRequest(body []byte) (request, error) {
	var wr wireRequest
	if err := json.Unmarshal(body, &wr); err != nil {
		return request{}, fmt.Errorf("invalid JSON body: %v", err)
	}
	switch {
	case wr.Model == nil || *wr.Model == "":
		return request{}, errors.New("model: field required")
	case wr.MaxTokens == nil:
		return request{}, errors.New("max_tokens: field required")
	case *wr.MaxTokens <= 0:
		return request{}, errors.New("max_tokens: must be greater than 0")
	case *wr.MaxTokens > maxMaxTokens:
		return request{}, fmt.Errorf("max_tokens: must be at most %d", maxMaxTokens)
	case len(wr.Messages) == 0:
		return request{}, errors.New("messages: at least one message is required")
	}
	req := request{model: *wr.Model, maxTokens: *wr.MaxTokens, stream: wr.Stream}

	system, err := parseSystem(wr.System)
	if err != nil {
		return request{}, err
	}
	req.system = system

	for i, m := range wr.Messages {
		if m.Role != "user" && m.Role != "assistant" {
			return request{}, fmt.Errorf(`messages.%d.role: expected "user" or "assistant"`, i)
		}
		blocks, err := parseContent(m.Content)
		if err != nil {
			return request{}, fmt.Errorf("messages.%d.content: %v", i, err)
		}
		texts := blockTexts(blocks)
		for _, t := range texts {
			req.msgTokens += countTokens(t)
		}
		if m.Role == "user" {
			req.lastUser = strings.Join(texts, "\n")
		}
	}
	return req, nil
}

// parseSystem accepts an absent system prompt, a string, or an array of text
// blocks that may carry cache_control.
func parseSystem(raw json.RawMessage) ([]systemBlock, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("system: %v", err)
		}
		return []systemBlock{{text: s, tokens: countTokens(s)}}, nil
	}
	var blocks []wireBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, errors.New("system: expected a string or an array of text blocks")
	}
	out := make([]systemBlock, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "text" {
			return nil, fmt.Errorf(`system.%d.type: expected "text"`, i)
		}
		sb := systemBlock{text: b.Text, tokens: countTokens(b.Text)}
		if cc := b.CacheControl; cc != nil {
			if cc.Type != "ephemeral" {
				return nil, fmt.Errorf(`system.%d.cache_control.type: expected "ephemeral"`, i)
			}
			switch cc.TTL {
			case "", "5m":
				sb.ttl = 5 * time.Minute
			case "1h":
				sb.ttl = time.Hour
			default:
				return nil, fmt.Errorf(`system.%d.cache_control.ttl: expected "5m" or "1h"`, i)
			}
		}
		out = append(out, sb)
	}
	return out, nil
}

// parseContent accepts a message's content as a string or an array of blocks.
func parseContent(raw json.RawMessage) ([]wireBlock, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []wireBlock{{Type: "text", Text: s}}, nil
	case len(raw) > 0 && raw[0] == '[':
		var blocks []wireBlock
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return nil, err
		}
		for i, b := range blocks {
			if b.Type == "" {
				return nil, fmt.Errorf("%d.type: field required", i)
			}
		}
		return blocks, nil
	}
	return nil, errors.New("expected a string or an array of content blocks")
}

// blockTexts is the text that counts as input in blocks: text blocks, tool_use
// input and the text of tool_result content. Other blocks count nothing.
func blockTexts(blocks []wireBlock) []string {
	var texts []string
	for _, b := range blocks {
		switch b.Type {
		case "text":
			texts = append(texts, b.Text)
		case "tool_use":
			texts = append(texts, string(b.Input))
		case "tool_result":
			if inner, err := parseContent(b.Content); err == nil {
				texts = append(texts, blockTexts(inner)...)
			}
		}
	}
	return texts
}
