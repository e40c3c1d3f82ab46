package anthropicsim

import (
	"maps"
	"net/http"
	"slices"
	"time"
)

// AllKeys, passed to SetFault as the key, scripts a fault for every key that has
// no fault of its own (an upstream-wide 529, say).
const AllKeys = "*"

// Fault scripts how the simulator answers a key's requests. It applies after the
// request is validated and before capacity is checked, and consumes no capacity.
type Fault struct {
	// Status is the HTTP status to answer with (401, 402, 403, 429, 500, 529,
	// 400, ...), in Anthropic's error shape for that status. Below 400 (0 in
	// particular) means no error answer: with only Delay the request then
	// proceeds normally.
	Status int
	// SpendLimit, with Status 429, answers the spend-limit flavour: error code
	// enforced_spend_limit_reached (see the package doc).
	SpendLimit bool
	// RetryAfter is the retry-after of a 429; default 1s, or 60s for SpendLimit.
	RetryAfter time.Duration
	// Delay is a wall-clock wait before answering. If the request's context is
	// cancelled meanwhile, the handler returns without answering.
	Delay time.Duration
	// Drop closes the connection without answering (after Delay).
	Drop bool
	// Count is how many requests the fault applies to; <= 0 means until cleared.
	Count int
	// StreamFailure breaks a streamed answer after it has started (HTTP 200
	// sent): an error event or a cut. An unstreamed request gets the same
	// condition as an HTTP error instead (529 for overloaded_error, else 500).
	StreamFailure StreamFailure
	// StreamFailAfter is how many text deltas are sent before StreamFailure
	// (0: none, the failure follows message_start).
	StreamFailAfter int
	// StreamDelay is a wall-clock pause between text deltas, so a stream
	// takes a while (a long task, a client that cancels).
	StreamDelay time.Duration
}

type faultState struct {
	f    Fault
	left int // requests left when f.Count > 0
}

// SetFault scripts f for apiKey (or for every key, with [AllKeys]), replacing the
// key's previous fault. A zero Fault removes it. A key's own fault takes
// precedence over AllKeys, and both over the key's prefix behaviour.
//
// SetFault is not limited by Config.MaxKeys (POST /sim/faults is): the
// caller is in-process and trusted.
func (s *Server) SetFault(apiKey string, f Fault) { s.setFault(apiKey, f, 0) }

// setFault is SetFault refusing, when limit > 0, a fault for a new key once
// limit keys have one; it reports whether f was set (or removed).
func (s *Server) setFault(apiKey string, f Fault, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.relist(apiKey)
	if f == (Fault{}) {
		delete(s.faults, apiKey)
		return true
	}
	if _, ok := s.faults[apiKey]; !ok && limit > 0 && len(s.faults) >= limit {
		return false
	}
	s.faults[apiKey] = &faultState{f: f, left: f.Count}
	return true
}

// ClearFaults removes every fault set with SetFault. Key-prefix behaviours stay.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := slices.Collect(maps.Keys(s.faults))
	clear(s.faults)
	for _, k := range keys {
		s.relist(k)
	}
}

// takeFault returns the fault that applies to this request of apiKey, if any,
// and counts it against the fault's Count and the key's stats. s.mu must be held.
func (s *Server) takeFault(apiKey string, st *keyState) (Fault, bool) {
	for _, k := range []string{apiKey, AllKeys} {
		fs, ok := s.faults[k]
		if !ok {
			continue
		}
		if fs.f.Count > 0 {
			if fs.left--; fs.left <= 0 {
				delete(s.faults, k)
				s.relist(k)
			}
		}
		st.stats.Faulted++
		return fs.f, true
	}
	if f, ok := prefixFault(apiKey); ok {
		st.stats.Faulted++
		return f, true
	}
	return Fault{}, false
}

// prefixFault is the behaviour a sk-ant-sim-NAME- key picks by its name.
func prefixFault(apiKey string) (Fault, bool) {
	name, ok := simPrefix(apiKey)
	if !ok {
		return Fault{}, false
	}
	switch name {
	case "429":
		return Fault{Status: http.StatusTooManyRequests, RetryAfter: 30 * time.Second}, true
	case "spend":
		return Fault{Status: http.StatusTooManyRequests, SpendLimit: true}, true
	case "401":
		return Fault{Status: http.StatusUnauthorized}, true
	case "402":
		return Fault{Status: http.StatusPaymentRequired}, true
	case "403":
		return Fault{Status: http.StatusForbidden}, true
	case "500":
		return Fault{Status: http.StatusInternalServerError}, true
	case "529":
		return Fault{Status: 529}, true
	case "slow":
		return Fault{Delay: 2 * time.Second}, true
	case "drop":
		return Fault{Drop: true}, true
	case "midstream":
		return Fault{StreamFailure: StreamOverloaded, StreamFailAfter: 2}, true
	}
	return Fault{}, false
}

// applyFault carries out f for one request. It reports whether the request
// should go on to normal handling (a Delay-only fault, or one that acts on
// the stream itself).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, reqID, apiKey string, f Fault, streamed bool) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-r.Context().Done():
			s.log.Debug("anthropicsim: client gave up during delay", "key", fingerprint(apiKey), "request_id", reqID)
			return false
		case <-t.C:
		}
	}
	if f.Drop {
		s.log.Debug("anthropicsim: dropping connection", "key", fingerprint(apiKey), "request_id", reqID)
		drop(w)
		return false
	}
	if f.StreamFailure != "" && f.Status < 400 && !streamed {
		f.Status = f.StreamFailure.unstreamedStatus()
	}
	if f.Status < 400 {
		return true
	}
	e := statusError(f.Status)
	if f.Status == http.StatusTooManyRequests {
		e.retryAfter = f.RetryAfter
		if f.SpendLimit {
			e.code = spendLimitCode
			e.msg = spendLimitCode + ": your organization has reached its monthly spend limit (simulated)"
			if e.retryAfter <= 0 {
				e.retryAfter = time.Minute
			}
		} else if e.retryAfter <= 0 {
			e.retryAfter = time.Second
		}
		now := s.now()
		s.mu.Lock()
		st := s.state(apiKey, now)
		st.stats.RateLimited++
		st.refill(now)
		h := st.rateHeaders(now)
		limited := !st.req.unlimited()
		s.mu.Unlock()
		if limited {
			// Agree with retry-after for clients that re-calibrate from headers.
			h.Set("anthropic-ratelimit-requests-remaining", "0")
			h.Set("anthropic-ratelimit-requests-reset", formatReset(now.Add(time.Duration(retryAfterSeconds(e.retryAfter))*time.Second)))
		}
		maps.Copy(w.Header(), h)
	}
	s.log.Debug("anthropicsim: scripted fault", "key", fingerprint(apiKey), "request_id", reqID, "status", f.Status)
	writeError(w, reqID, e)
	return false
}

// drop closes the client connection without an answer.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // net/http aborts the response, also on HTTP/2
	}
	_ = conn.Close()
}
