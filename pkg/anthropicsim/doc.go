// Package anthropicsim is an in-process simulator of the Anthropic Messages API.
//
// A [Server] is an [http.Handler]. Tests mount it on an httptest.Server; the
// `switchyard sim` and `switchyard dev` commands serve it on a port. It speaks the
// wire format closely enough that the official SDK
// (github.com/anthropics/anthropic-sdk-go/v2) parses its answers and errors, so
// failover, rate limiting and circuit breakers can be exercised without spending
// money. It keeps everything in memory; nothing survives a restart.
//
// # Endpoints
//
//	POST   /v1/messages                the Messages API, unstreamed or streamed ("stream": true)
//	POST   /sim/faults                 script a fault: {"api_key":"...","status":500,"count":3,
//	                                   "delay_ms":0,"drop":false,"spend_limit":false,"retry_after_ms":1000,
//	                                   "stream_failure":"overloaded_error","stream_fail_after":2,
//	                                   "stream_delay_ms":100}
//	DELETE /sim/faults[?api_key=K]     clear every scripted fault, or only K's
//	GET    /sim/stats?api_key=K        K's [KeyStats] as JSON, with its [KeyUsage] under "usage"
//	GET    /healthz                    200 {"status":"ok"}
//
// The /sim/ endpoints need "Authorization: Bearer <control token>": without it, or
// with another token, they answer 401 authentication_error (and a
// WWW-Authenticate header) and do nothing. Otherwise anyone who can reach the
// port could make every key answer 401 and so flip the accounts of every
// organization of a stack using the simulator to INVALID. The token is
// Config.ControlToken, or one New generates (crypto/rand); [Server.ControlToken]
// returns it, and `switchyard sim` and `switchyard dev` print it at start (dev
// also writes it to its -ready-file as sim_control_token). The comparison is in
// constant time; the token is never logged. The Messages API and /healthz do not
// use it. The simulator is still a development tool: do not expose it beyond the
// machine or test that runs it.
//
// Every response carries a request-id header. Errors have Anthropic's shape:
//
//	{"type":"error","error":{"type":"rate_limit_error","message":"..."},"request_id":"req_..."}
//
// # Authentication
//
// The API key is read from the x-api-key header, or, when that is absent, from
// "Authorization: Bearer <key>" (SDK v2 sends its API key that way). A missing
// key is a 401 authentication_error. Any other non-empty key is valid. The
// anthropic-version header must be present (any value); without it the answer is
// 400 invalid_request_error.
//
// # Keys that pick a behaviour
//
// So that people without Go access (grpcurl, curl) can script failover, a key's
// prefix can choose a behaviour:
//
//	prefix                    behaviour
//	sk-ant-sim-429-           429 rate_limit_error, retry-after: 30
//	sk-ant-sim-spend-         429 spend-limit flavour (see below), retry-after: 60
//	sk-ant-sim-401-           401 authentication_error
//	sk-ant-sim-402-           402 billing_error
//	sk-ant-sim-403-           403 permission_error
//	sk-ant-sim-500-           500 api_error
//	sk-ant-sim-529-           529 overloaded_error
//	sk-ant-sim-slow-          waits 2s, then answers normally
//	sk-ant-sim-drop-          closes the connection without answering
//	sk-ant-sim-midstream-     a stream breaks with overloaded_error after 2 text
//	                          deltas (an unstreamed call gets 529)
//	sk-ant-sim-<tier>-        normal answers from that tier's buckets, for any tier
//	                          name in Config.Tiers: tier1, tier2, tier3, tier4,
//	                          start, build, scale by default
//	anything else             normal answers from Config.DefaultTier's buckets
//
// A fault set with [Server.SetFault] (or POST /sim/faults) for a key takes
// precedence over its prefix behaviour; [Server.SetKeyTier] takes precedence over
// a tier prefix.
//
// # Bounded state
//
// The server keeps state for at most Config.MaxKeys API keys (default
// [DefaultMaxKeys], 10,000): buckets, [KeyStats], [KeyUsage] and the prompt
// cache. A request with a new key beyond that evicts the least recently used
// key that has no request in flight, choosing first among keys with no scripted
// fault (SetFault, POST /sim/faults) and no SetKeyTier assignment, so the keys a
// test set up on purpose go last. An evicted key, seen again, starts afresh: full
// buckets, zero stats and usage, an empty prompt cache; its scripted fault and
// tier assignment are kept apart and never evicted. Only when every tracked key
// has a request in flight does the table exceed MaxKeys, by at most the requests
// in flight. Each key's prompt cache holds at most 64 prefixes (those expiring
// soonest go first). POST /sim/faults refuses (400) a fault for a new key once
// MaxKeys keys have one; [Server.SetFault] and [Server.SetKeyTier], called
// in-process, are not limited.
//
// # Order of checks for POST /v1/messages
//
//  1. API key present (else 401); the request is counted in [KeyStats.Requests].
//  2. anthropic-version present (else 400).
//  3. Body: at most 32 MiB (else 413 request_too_large), valid JSON with model,
//     max_tokens > 0 and non-empty messages (else 400).
//  4. Scripted fault (SetFault, then the key prefix): Delay, then Drop or Status.
//     A fault answers before capacity is looked at and consumes none of it.
//  5. Capacity: the key's token buckets (below). Short of capacity is a 429.
//  6. Success: a JSON message, or an event stream (below), where a fault's
//     StreamFailure and StreamDelay act.
//
// # Streaming
//
// With "stream": true a success is HTTP 200 with content-type
// text/event-stream and the events the Messages API sends, each flushed as it
// is written:
//
//	event: message_start        message with empty content; usage has the input,
//	                            cache read and cache creation tokens and output_tokens 1
//	event: content_block_start  index 0, an empty text block
//	event: ping
//	event: content_block_delta  text_delta, 16 characters of the answer each
//	...
//	event: content_block_stop
//	event: message_delta        stop_reason, and usage with the cumulative totals
//	                            (input, cache read, cache creation, output)
//	event: message_stop
//
// The text, usage and stop reason are those of the unstreamed answer to the
// same request. A fault's StreamFailure breaks the stream after
// StreamFailAfter deltas: with an error event ({"type":"error","error":
// {"type":"overloaded_error",...}}) or, for "cut", by ending the body without
// message_stop. A broken stream is charged the usage its message_start
// reported; [KeyStats.StreamsBroken] counts it.
//
// # Answers
//
// The text is deterministic: "Simulated answer (model M): ..." followed by an
// excerpt and a SHA-256 digest of the last user message. Output tokens are
// ceil(characters/4) of that text; when that exceeds max_tokens the text is cut,
// output_tokens is max_tokens and stop_reason is "max_tokens".
//
// Input tokens are counted as ceil(characters/4) per text segment (each system
// block, each message text block, each tool_result text, each tool_use input),
// summed, and at least 1. Tool definitions, images and documents count nothing.
//
// # Prompt caching
//
// System blocks may carry cache_control ({"type":"ephemeral"}, optional "ttl":
// "5m" or "1h"). As in the real API, each such block is a breakpoint that caches
// the system prompt up to and including it, per key and per model. A request
// reads the longest cached prefix (cache_read_input_tokens) and writes the rest up
// to its last breakpoint (cache_creation_input_tokens, split by TTL in
// usage.cache_creation); input_tokens counts only what follows the last
// breakpoint. Entries expire after their TTL by Config.Now and are refreshed on
// every use. Unlike the real API there is no minimum cacheable length, and
// cache_control on message blocks, tools or the top level is ignored.
//
// # Capacity
//
// Each key has three continuously refilled token buckets from its tier's
// [Limits]: requests, input tokens and output tokens. A bucket holds at most its
// per-minute limit and refills at limit/60 per second by Config.Now. A request is
// admitted when the buckets hold 1 request, its input tokens (cache creation
// counts, cache reads do not) and max_tokens of output; admission takes them all,
// and the output tokens not produced (max_tokens - output_tokens) are refunded at
// once. Otherwise the answer is 429 rate_limit_error with retry-after = the whole
// seconds (rounded up, at least 1) until every short bucket would hold enough. A
// request that needs more than a bucket's whole capacity is rejected the same
// way; retry-after is then the time until that bucket is full, and it will never
// pass. A limit of zero or less makes that bucket unlimited (and its headers are
// omitted). [Server.SetKeyTier] refills the key's buckets to the new tier's limits.
//
// Successful and 429 answers carry these headers, describing the key's buckets
// after the request:
//
//	anthropic-ratelimit-requests-limit / -remaining / -reset
//	anthropic-ratelimit-input-tokens-limit / -remaining / -reset
//	anthropic-ratelimit-output-tokens-limit / -remaining / -reset
//	anthropic-ratelimit-tokens-limit / -remaining / -reset   (input + output)
//
// -limit is the per-minute limit, -remaining the whole tokens available now and
// -reset the RFC 3339 time (UTC, rounded up to the second) when the bucket will
// be full again. A scripted 429 (fault or key prefix) also carries them, with
// requests-remaining 0 and requests-reset at now + retry-after, so that a client
// that re-calibrates from headers agrees with retry-after.
//
// # Spend limit
//
// The spend-limit 429 (Fault.SpendLimit, prefix sk-ant-sim-spend-) models an
// organization over its monthly spend limit. Anthropic documents the condition as
// error code enforced_spend_limit_reached in error.details, which SDK v2 exposes
// as (*anthropic.Error).ErrorCode(). The exact message is not documented; the
// simulator answers
//
//	{"type":"error","error":{"type":"rate_limit_error",
//	  "message":"enforced_spend_limit_reached: your organization has reached its monthly spend limit (simulated)",
//	  "details":{"error_code":"enforced_spend_limit_reached"}},"request_id":"req_..."}
//
// with retry-after: 60 unless Fault.RetryAfter says otherwise.
//
// # Faults
//
// [Fault.Delay] is real (wall-clock) time, not Config.Now; the handler gives up
// when the request's context is cancelled. [Fault.Drop] hijacks and closes the
// connection; on an HTTP/2 or otherwise non-hijackable connection it panics with
// [http.ErrAbortHandler], which net/http turns into an aborted response.
package anthropicsim
