package anthropicsim

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"time"
	"unicode/utf8"
)

// Streaming: a request with "stream": true is answered with server-sent
// events exactly as the Messages API sends them (see the package doc for the
// sequence). Capacity is admitted before the first byte, as for an unstreamed
// call; the answer's text, usage and stop reason are the same as the
// unstreamed answer to the same request.

// streamChunkRunes is how many characters of the answer one text delta
// carries. The real API sends a few tokens per delta; what matters for
// clients is that there are several.
const streamChunkRunes = 16

// StreamFailure is how a scripted fault breaks a stream that has started.
type StreamFailure string

const (
	// StreamOverloaded sends an overloaded_error event mid-stream.
	StreamOverloaded StreamFailure = "overloaded_error"
	// StreamAPIError sends an api_error event mid-stream.
	StreamAPIError StreamFailure = "api_error"
	// StreamCut ends the response mid-stream without message_stop, as a
	// dropped connection does.
	StreamCut StreamFailure = "cut"
)

func (f StreamFailure) valid() bool {
	switch f {
	case "", StreamOverloaded, StreamAPIError, StreamCut:
		return true
	}
	return false
}

// unstreamedStatus is the HTTP error an unstreamed request gets for a fault
// that would have broken a stream: the same upstream condition, reported
// the only way an unstreamed answer can.
func (f StreamFailure) unstreamedStatus() int {
	if f == StreamOverloaded {
		return 529
	}
	return http.StatusInternalServerError
}

// sse writes server-sent events and flushes each one, so a client sees them
// as they are produced.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (s *sse) event(name string, data any) {
	if s.err != nil {
		return
	}
	b, err := json.Marshal(data)
	if err != nil {
		s.err = err
		return
	}
	buf := make([]byte, 0, len(name)+len(b)+16)
	buf = append(buf, "event: "...)
	buf = append(buf, name...)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	if _, s.err = s.w.Write(buf); s.err == nil {
		s.err = s.rc.Flush()
	}
}

// Wire shapes of the stream's events.
type (
	streamMessage struct {
		ID           string   `json:"id"`
		Type         string   `json:"type"`
		Role         string   `json:"role"`
		Model        string   `json:"model"`
		Content      []string `json:"content"`
		StopReason   *string  `json:"stop_reason"`
		StopSequence *string  `json:"stop_sequence"`
		Usage        usage    `json:"usage"`
	}
	messageStartEvent struct {
		Type    string        `json:"type"`
		Message streamMessage `json:"message"`
	}
	contentBlockStartEvent struct {
		Type         string    `json:"type"`
		Index        int       `json:"index"`
		ContentBlock textBlock `json:"content_block"`
	}
	contentBlockDeltaEvent struct {
		Type  string    `json:"type"`
		Index int       `json:"index"`
		Delta textDelta `json:"delta"`
	}
	textDelta struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	indexEvent struct {
		Type  string `json:"type"`
		Index int    `json:"index"`
	}
	messageDeltaEvent struct {
		Type  string       `json:"type"`
		Delta stopDelta    `json:"delta"`
		Usage messageUsage `json:"usage"`
	}
	stopDelta struct {
		StopReason   string  `json:"stop_reason"`
		StopSequence *string `json:"stop_sequence"`
	}
	// messageUsage is message_delta's usage: cumulative totals for the whole
	// message, as the API sends them today.
	messageUsage struct {
		InputTokens              int64 `json:"input_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
	}
	typeOnly struct {
		Type string `json:"type"`
	}
)

// streamAnswer writes an admitted answer as an event stream. u is the
// answer's final usage. When fail is set the stream breaks after failAfter
// text deltas; delay paces the deltas (wall-clock). settle is called once
// with the output tokens the client is told about (what the key is
// charged) and whether the stream completes, before the stream's last
// event, so a client that has read the whole stream sees the stats.
func (s *Server) streamAnswer(ctx context.Context, w http.ResponseWriter, model, text, stop string, u usage, fail StreamFailure, failAfter int, delay time.Duration, settle func(reported int64, completed bool)) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	out := &sse{w: w, rc: http.NewResponseController(w)}

	start := u
	start.OutputTokens = min(1, u.OutputTokens) // the API reports 1 output token at message_start
	out.event("message_start", messageStartEvent{Type: "message_start", Message: streamMessage{
		ID: "msg_sim_" + rand.Text(), Type: "message", Role: "assistant", Model: model,
		Content: []string{}, Usage: start,
	}})
	out.event("content_block_start", contentBlockStartEvent{Type: "content_block_start", ContentBlock: textBlock{Type: "text"}})
	out.event("ping", typeOnly{Type: "ping"})

	sent := 0
	for chunk := range chunks(text, streamChunkRunes) {
		if fail != "" && sent >= failAfter {
			break
		}
		if delay > 0 && sent > 0 && !sleepCtx(ctx, delay) {
			settle(start.OutputTokens, false) // the client went away
			return
		}
		out.event("content_block_delta", contentBlockDeltaEvent{Type: "content_block_delta", Delta: textDelta{Type: "text_delta", Text: chunk}})
		sent++
	}
	switch fail {
	case StreamOverloaded, StreamAPIError:
		msg := "Overloaded (simulated, mid-stream)"
		if fail == StreamAPIError {
			msg = "Internal server error (simulated, mid-stream)"
		}
		settle(start.OutputTokens, false)
		out.event("error", errorBody{Type: "error", Error: errorObject{Type: string(fail), Message: msg}})
		return
	case StreamCut:
		settle(start.OutputTokens, false)
		return
	}
	settle(u.OutputTokens, true)
	out.event("content_block_stop", indexEvent{Type: "content_block_stop"})
	out.event("message_delta", messageDeltaEvent{Type: "message_delta", Delta: stopDelta{StopReason: stop}, Usage: messageUsage{
		InputTokens: u.InputTokens, CacheCreationInputTokens: u.CacheCreationInputTokens,
		CacheReadInputTokens: u.CacheReadInputTokens, OutputTokens: u.OutputTokens,
	}})
	out.event("message_stop", typeOnly{Type: "message_stop"})
}

// chunks yields s in pieces of at most n runes; an empty s yields nothing.
func chunks(s string, n int) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			i, runes := 0, 0
			for i < len(s) && runes < n {
				_, size := utf8.DecodeRuneInString(s[i:])
				i += size
				runes++
			}
			if !yield(s[:i]) {
				return
			}
			s = s[i:]
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
