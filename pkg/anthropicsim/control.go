package anthropicsim

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Bounds of a control token given in Config.ControlToken.
const (
	minControlToken = 16
	maxControlToken = 1024
)

// GenerateControlToken returns a new random control token: "sy_sim_" and 26
// base32 characters (130 bits from crypto/rand). The prefix lets log
// scrubbers that mask sy_ tokens mask it too.
func GenerateControlToken() string { return "sy_sim_" + rand.Text() }

// CheckControlToken reports what is wrong with a control token given in
// Config.ControlToken: it must be 16 to 1024 printable ASCII characters
// without spaces, so that it fits an Authorization header as it is and is
// not trivially guessed. The error never contains the token.
func CheckControlToken(token string) error {
	if len(token) < minControlToken || len(token) > maxControlToken {
		return fmt.Errorf("the control token has %d characters; use %d to %d (or leave it empty to have one generated)", len(token), minControlToken, maxControlToken)
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return errors.New("the control token may contain only printable ASCII characters other than space (character " + itoa(int64(i+1)) + " is not)")
		}
	}
	return nil
}

// authorizeControl reports whether r carries "Authorization: Bearer <the
// control token>", and otherwise answers 401 authentication_error. The
// comparison is of SHA-256 digests in constant time, so that neither the
// token's bytes nor its length leak through timing.
func (s *Server) authorizeControl(w http.ResponseWriter, r *http.Request, reqID string) bool {
	const bearer = "bearer "
	a := r.Header.Get("Authorization")
	if len(a) > len(bearer) && strings.EqualFold(a[:len(bearer)], bearer) {
		sum := sha256.Sum256([]byte(strings.TrimSpace(a[len(bearer):])))
		if subtle.ConstantTimeCompare(sum[:], s.controlSum[:]) == 1 {
			return true
		}
	}
	msg := "the /sim/ control endpoints need the header \"Authorization: Bearer <control token>\"; " +
		"switchyard sim and switchyard dev print the token at start (dev also writes it to -ready-file as sim_control_token)"
	if a != "" {
		msg = "wrong control token: " + msg
	}
	s.log.Info("anthropicsim: control request refused", "path", r.URL.Path, "request_id", reqID, "authorization_present", a != "")
	w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-sim"`)
	writeError(w, reqID, apiError{status: http.StatusUnauthorized, typ: "authentication_error", msg: msg})
	return false
}

// faultRequest is the body of POST /sim/faults.
type faultRequest struct {
	APIKey       string `json:"api_key"`
	Status       int    `json:"status"`
	Count        int    `json:"count"`
	DelayMS      int64  `json:"delay_ms"`
	Drop         bool   `json:"drop"`
	SpendLimit   bool   `json:"spend_limit"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	// StreamFailure is "overloaded_error", "api_error" or "cut".
	StreamFailure   string `json:"stream_failure"`
	StreamFailAfter int    `json:"stream_fail_after"`
	StreamDelayMS   int64  `json:"stream_delay_ms"`
}

// handleSetFault serves POST /sim/faults: 204 on success, 400 with a message
// saying what is wrong otherwise.
func (s *Server) handleSetFault(w http.ResponseWriter, r *http.Request, reqID string) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	var fr faultRequest
	if err := dec.Decode(&fr); err != nil {
		writeError(w, reqID, invalidRequest("invalid JSON body: "+err.Error()))
		return
	}
	var problem string
	switch {
	case fr.APIKey == "":
		problem = `api_key: required (use "*" for every key)`
	case fr.Status != 0 && (fr.Status < 400 || fr.Status > 599):
		problem = "status: must be 0 or an HTTP error status (400-599)"
	case fr.Count < 0:
		problem = "count: must not be negative (0 means until cleared)"
	case fr.DelayMS < 0:
		problem = "delay_ms: must not be negative"
	case fr.RetryAfterMS < 0:
		problem = "retry_after_ms: must not be negative"
	case fr.SpendLimit && fr.Status != http.StatusTooManyRequests:
		problem = "spend_limit: requires status 429"
	case !StreamFailure(fr.StreamFailure).valid():
		problem = `stream_failure: must be "overloaded_error", "api_error" or "cut"`
	case fr.StreamFailAfter < 0:
		problem = "stream_fail_after: must not be negative"
	case fr.StreamDelayMS < 0:
		problem = "stream_delay_ms: must not be negative"
	case fr.Status == 0 && fr.DelayMS == 0 && !fr.Drop && fr.StreamFailure == "" && fr.StreamDelayMS == 0:
		problem = "nothing to do: set status, delay_ms, drop, stream_failure or stream_delay_ms"
	}
	if problem != "" {
		writeError(w, reqID, invalidRequest(problem))
		return
	}
	f := Fault{
		Status:     fr.Status,
		SpendLimit: fr.SpendLimit,
		RetryAfter: time.Duration(fr.RetryAfterMS) * time.Millisecond,
		Delay:      time.Duration(fr.DelayMS) * time.Millisecond,
		Drop:       fr.Drop,
		Count:      fr.Count,

		StreamFailure:   StreamFailure(fr.StreamFailure),
		StreamFailAfter: fr.StreamFailAfter,
		StreamDelay:     time.Duration(fr.StreamDelayMS) * time.Millisecond,
	}
	if !s.setFault(fr.APIKey, f, s.maxKeys) {
		writeError(w, reqID, invalidRequest(fmt.Sprintf("api_key: %d keys have a scripted fault already, the most this simulator keeps (Config.MaxKeys); clear some with DELETE /sim/faults", s.maxKeys)))
		return
	}
	s.log.Info("anthropicsim: fault set", "key", fingerprint(fr.APIKey), "fault", fmt.Sprintf("%+v", f))
	w.WriteHeader(http.StatusNoContent)
}

// handleClearFaults serves DELETE /sim/faults: every fault, or only those of
// ?api_key=. Always 204.
func (s *Server) handleClearFaults(w http.ResponseWriter, r *http.Request) {
	if k := r.URL.Query().Get("api_key"); k != "" {
		s.SetFault(k, Fault{})
		s.log.Info("anthropicsim: fault cleared", "key", fingerprint(k))
	} else {
		s.ClearFaults()
		s.log.Info("anthropicsim: all faults cleared")
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleStats serves GET /sim/stats?api_key=K: the key's [KeyStats] and, under
// "usage", its [KeyUsage].
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request, reqID string) {
	k := r.URL.Query().Get("api_key")
	if k == "" {
		writeError(w, reqID, invalidRequest("api_key: query parameter required"))
		return
	}
	writeJSON(w, http.StatusOK, struct {
		KeyStats
		Usage KeyUsage `json:"usage"`
	}{s.Stats(k), s.Usage(k)})
}
