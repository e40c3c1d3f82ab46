package anthropicsim_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

// do sends a raw request and returns the status, headers and decoded JSON body
// (nil when the body is empty).
func (e *env) do(t *testing.T, method, path string, header map[string]string, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	var m map[string]any
	if len(data) > 0 {
		require.NoError(t, json.Unmarshal(data, &m), string(data))
	}
	return res.StatusCode, res.Header, m
}

// apiErr checks Anthropic's error shape and returns error.type and error.message.
func apiErr(t *testing.T, h http.Header, body map[string]any) (string, string) {
	t.Helper()
	require.Equal(t, "error", body["type"])
	require.Equal(t, h.Get("request-id"), body["request_id"])
	require.True(t, strings.HasPrefix(h.Get("request-id"), "req_sim_"))
	obj, ok := body["error"].(map[string]any)
	require.True(t, ok, body)
	return obj["type"].(string), obj["message"].(string)
}

var apiHeaders = map[string]string{"x-api-key": "sk-ant-raw", "anthropic-version": "2023-06-01", "content-type": "application/json"}

func TestMessagesValidation(t *testing.T) {
	e := newEnv(t)
	const good = `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name    string
		header  map[string]string
		body    string
		status  int
		typ     string
		message string
	}{
		{"no key", map[string]string{"anthropic-version": "2023-06-01"}, good, 401, "authentication_error", "x-api-key"},
		{"empty bearer", map[string]string{"anthropic-version": "2023-06-01", "authorization": "Bearer "}, good, 401, "authentication_error", "x-api-key"},
		{"no version", map[string]string{"x-api-key": "k"}, good, 400, "invalid_request_error", "anthropic-version"},
		{"malformed JSON", apiHeaders, `{"model":`, 400, "invalid_request_error", "invalid JSON"},
		{"no model", apiHeaders, `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "model"},
		{"no max_tokens", apiHeaders, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "max_tokens"},
		{"zero max_tokens", apiHeaders, `{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "max_tokens"},
		{"no messages", apiHeaders, `{"model":"m","max_tokens":10,"messages":[]}`, 400, "invalid_request_error", "messages"},
		{"bad role", apiHeaders, `{"model":"m","max_tokens":10,"messages":[{"role":"system","content":"hi"}]}`, 400, "invalid_request_error", "messages.0.role"},
		{"bad content", apiHeaders, `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":7}]}`, 400, "invalid_request_error", "messages.0.content"},
		{"bad system", apiHeaders, `{"model":"m","max_tokens":10,"system":[{"type":"image"}],"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "system.0.type"},
		{"bad ttl", apiHeaders, `{"model":"m","max_tokens":10,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral","ttl":"2h"}}],"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := e.do(t, http.MethodPost, "/v1/messages", tc.header, tc.body)
			require.Equal(t, tc.status, status, body)
			typ, msg := apiErr(t, h, body)
			require.Equal(t, tc.typ, typ)
			require.Contains(t, msg, tc.message)
			require.Empty(t, h.Get("anthropic-ratelimit-requests-limit"))
		})
	}
	require.Equal(t, anthropicsim.KeyStats{Requests: 9}, e.sim.Stats("sk-ant-raw"))
}

func TestMessagesRawSuccess(t *testing.T) {
	e := newEnv(t)
	// x-api-key (curl's way) and array content with system as a string.
	body := `{"model":"m","max_tokens":200,"system":"abcdefgh","messages":[
		{"role":"user","content":[{"type":"text","text":"abcd"}]},
		{"role":"assistant","content":"ok"},
		{"role":"user","content":[{"type":"text","text":"abcde"},{"type":"image","source":{}}]}]}`
	status, h, m := e.do(t, http.MethodPost, "/v1/messages", apiHeaders, body)
	require.Equal(t, http.StatusOK, status, m)
	require.True(t, strings.HasPrefix(h.Get("request-id"), "req_sim_"))
	require.Equal(t, "application/json", h.Get("content-type"))
	require.Equal(t, "message", m["type"])
	require.Equal(t, "assistant", m["role"])
	require.Equal(t, "m", m["model"])
	require.Nil(t, m["stop_sequence"])
	require.Contains(t, m, "stop_sequence")
	usage := m["usage"].(map[string]any)
	require.EqualValues(t, 2+1+1+2, usage["input_tokens"], "system 8 chars, 4, 2, 5")
	require.EqualValues(t, 0, usage["cache_read_input_tokens"])
	require.EqualValues(t, 0, usage["cache_creation_input_tokens"])
	require.Equal(t, "standard", usage["service_tier"])
	text := m["content"].([]any)[0].(map[string]any)["text"].(string)
	require.Contains(t, text, `"abcde"`, "digest of the last user message")
}

func TestRequestTooLarge(t *testing.T) {
	e := newEnv(t)
	prefix := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"`
	body := prefix + strings.Repeat("a", 32<<20) + `"}]}`
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/messages", bytes.NewReader([]byte(body)))
	require.NoError(t, err)
	for k, v := range apiHeaders {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	typ, _ := apiErr(t, res.Header, m)
	require.Equal(t, "request_too_large", typ)
}

func TestRoutingErrors(t *testing.T) {
	e := newEnv(t)
	status, h, body := e.do(t, http.MethodGet, "/v1/messages", apiHeaders, "")
	require.Equal(t, http.StatusMethodNotAllowed, status)
	require.Equal(t, "POST", h.Get("Allow"))
	apiErr(t, h, body)

	status, h, body = e.do(t, http.MethodPost, "/v1/nothing", apiHeaders, "{}")
	require.Equal(t, http.StatusNotFound, status)
	typ, _ := apiErr(t, h, body)
	require.Equal(t, "not_found_error", typ)

	status, h, body = e.do(t, http.MethodGet, "/healthz", nil, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "ok", body["status"])
	require.NotEmpty(t, h.Get("request-id"))
}

func TestControlSurface(t *testing.T) {
	e := newEnv(t)
	post := func(body string) (int, map[string]any) {
		status, _, m := e.do(t, http.MethodPost, "/sim/faults", e.ctl, body)
		return status, m
	}

	status, _ := post(`{"api_key":"k1","status":500,"count":1}`)
	require.Equal(t, http.StatusNoContent, status)
	e.fail(t, "k1", params("hi"), 500)
	e.ok(t, "k1", params("hi"))

	status, _ = post(`{"api_key":"k1","status":429,"retry_after_ms":2500}`)
	require.Equal(t, http.StatusNoContent, status)
	apierr := e.fail(t, "k1", params("hi"), 429)
	require.Equal(t, "3", apierr.Response.Header.Get("retry-after"))
	e.fail(t, "k1", params("hi"), 429)

	status, _, _ = e.do(t, http.MethodDelete, "/sim/faults?api_key=k1", e.ctl, "")
	require.Equal(t, http.StatusNoContent, status)
	e.ok(t, "k1", params("hi"))

	status, _, m := e.do(t, http.MethodGet, "/sim/stats?api_key=k1", e.ctl, "")
	require.Equal(t, http.StatusOK, status)
	u := e.sim.Usage("k1")
	require.Positive(t, u.OutputTokens)
	require.Equal(t, map[string]any{"requests": 5.0, "succeeded": 2.0, "rate_limited": 2.0, "capacity_rejected": 0.0, "faulted": 3.0, "streams_broken": 0.0,
		"usage": map[string]any{"input_tokens": float64(u.InputTokens), "output_tokens": float64(u.OutputTokens), "cache_read_tokens": 0.0, "cache_creation_tokens": 0.0}}, m)
	require.Equal(t, anthropicsim.KeyStats{Requests: 5, Succeeded: 2, RateLimited: 2, Faulted: 3}, e.sim.Stats("k1"))

	status, _ = post(`{"api_key":"*","status":529}`)
	require.Equal(t, http.StatusNoContent, status)
	e.fail(t, "k2", params("hi"), 529)
	status, _ = post(`{"api_key":"k3","status":429,"spend_limit":true,"count":1}`)
	require.Equal(t, http.StatusNoContent, status)
	apierr = e.fail(t, "k3", params("hi"), 429)
	require.Equal(t, "enforced_spend_limit_reached", string(apierr.ErrorCode()))
	status, _ = post(`{"api_key":"k4","drop":true,"count":1}`)
	require.Equal(t, http.StatusNoContent, status)
	_, _, err := e.send(t, "k4", params("hi"))
	_, isAPI := asAPIError(err)
	require.Error(t, err)
	require.False(t, isAPI)

	status, _, _ = e.do(t, http.MethodDelete, "/sim/faults", e.ctl, "")
	require.Equal(t, http.StatusNoContent, status)
	e.ok(t, "k2", params("hi"))

	status, _ = post(`{"api_key":"k5","delay_ms":1,"count":1}`)
	require.Equal(t, http.StatusNoContent, status)
	e.ok(t, "k5", params("hi"))
	require.EqualValues(t, 1, e.sim.Stats("k5").Faulted)

	status, _, m = e.do(t, http.MethodGet, "/sim/stats?api_key=never-seen", e.ctl, "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 0.0, m["requests"])
}

func TestControlSurfaceRejectsBadInput(t *testing.T) {
	e := newEnv(t)
	for body, want := range map[string]string{
		`{"api_key":`: "invalid JSON",
		`{"api_key":"k","status":500,"colour":"red"}`: "unknown field",
		`{"status":500}`:                                   "api_key",
		`{"api_key":"k","status":200}`:                     "status",
		`{"api_key":"k","status":500,"count":-1}`:          "count",
		`{"api_key":"k","delay_ms":-5}`:                    "delay_ms",
		`{"api_key":"k","status":429,"retry_after_ms":-1}`: "retry_after_ms",
		`{"api_key":"k","status":500,"spend_limit":true}`:  "spend_limit",
		`{"api_key":"k"}`:                                  "nothing to do",
	} {
		status, h, m := e.do(t, http.MethodPost, "/sim/faults", e.ctl, body)
		require.Equal(t, http.StatusBadRequest, status, body)
		_, msg := apiErr(t, h, m)
		require.Contains(t, msg, want, body)
	}
	e.ok(t, "k", params("hi")) // nothing was set

	status, h, m := e.do(t, http.MethodGet, "/sim/stats", e.ctl, "")
	require.Equal(t, http.StatusBadRequest, status)
	_, msg := apiErr(t, h, m)
	require.Contains(t, msg, "api_key")

	status, _, _ = e.do(t, http.MethodGet, "/sim/faults", e.ctl, "")
	require.Equal(t, http.StatusMethodNotAllowed, status)
}
