package anthropicsim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// spendLimitCode is Anthropic's error code for an organization over its monthly
// spend limit, carried in error.details.error_code.
const spendLimitCode = "enforced_spend_limit_reached"

// apiError is one error answer in Anthropic's shape.
type apiError struct {
	status     int
	typ        string // error.type
	msg        string
	code       string        // error.details.error_code, optional
	retryAfter time.Duration // retry-after header when > 0
}

type errorBody struct {
	Type      string      `json:"type"`
	Error     errorObject `json:"error"`
	RequestID string      `json:"request_id"`
}

type errorObject struct {
	Type    string        `json:"type"`
	Message string        `json:"message"`
	Details *errorDetails `json:"details,omitempty"`
}

type errorDetails struct {
	ErrorCode string `json:"error_code"`
}

func writeError(w http.ResponseWriter, reqID string, e apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("retry-after", itoa(retryAfterSeconds(e.retryAfter)))
	}
	body := errorBody{Type: "error", Error: errorObject{Type: e.typ, Message: e.msg}, RequestID: reqID}
	if e.code != "" {
		body.Error.Details = &errorDetails{ErrorCode: e.code}
	}
	writeJSON(w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

func methodNotAllowed(w http.ResponseWriter, reqID, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, reqID, apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error", msg: "method not allowed; use " + allow})
}

func invalidRequest(msg string) apiError {
	return apiError{status: http.StatusBadRequest, typ: "invalid_request_error", msg: msg}
}

// statusError is the error a scripted fault answers with for status.
func statusError(status int) apiError {
	e := apiError{status: status, typ: "api_error", msg: "HTTP " + itoa(int64(status)) + " (simulated)"}
	switch status {
	case http.StatusBadRequest:
		e.typ, e.msg = "invalid_request_error", "invalid request (simulated)"
	case http.StatusUnauthorized:
		e.typ, e.msg = "authentication_error", "invalid x-api-key (simulated)"
	case http.StatusPaymentRequired:
		e.typ, e.msg = "billing_error", "your credit balance is too low to access the Anthropic API (simulated)"
	case http.StatusForbidden:
		e.typ, e.msg = "permission_error", "your API key does not have permission to use the specified resource (simulated)"
	case http.StatusNotFound:
		e.typ, e.msg = "not_found_error", "not found (simulated)"
	case http.StatusRequestEntityTooLarge:
		e.typ, e.msg = "request_too_large", "request exceeds the maximum allowed number of bytes (simulated)"
	case http.StatusTooManyRequests:
		e.typ, e.msg = "rate_limit_error", "number of requests has exceeded your rate limit (simulated)"
	case http.StatusGatewayTimeout:
		e.typ, e.msg = "timeout_error", "request timed out (simulated)"
	case 529:
		e.typ, e.msg = "overloaded_error", "Overloaded (simulated)"
	default:
		if status < 500 {
			e.typ = "invalid_request_error"
		}
	}
	return e
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, ceilDiv(int64(d), int64(time.Second)))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
