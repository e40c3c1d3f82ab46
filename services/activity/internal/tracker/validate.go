package tracker

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits; the package comment explains how they add up.
const (
	MaxObjectBytes          = 1 << 20  // input_data, output_data
	MaxMetadataBytes        = 64 << 10 // metadata, per call
	MaxProgressDataBytes    = 4 << 10
	MaxProgressMessageBytes = 2 << 10
	MaxErrorMessageBytes    = 16 << 10
	MaxIdentifierBytes      = 256 // organization_id, session_id, user_id, agent_type, agent_name, category

	DefaultPageSize = 50
	MaxPageSize     = 500
	// maxPageBytes keeps a list response well inside the 4 MiB gRPC
	// default, leaving room for one maximal activity (about 2.2 MiB).
	maxPageBytes = 3 << 20
	// maxPageTokenBytes rejects garbage before decoding it.
	maxPageTokenBytes = 512
)

// ValidationError is a request the caller must fix. Field is the request
// field at fault, by its protobuf name; Problem says what is wrong and how
// to fix it. Both are safe to show to the caller.
type ValidationError struct {
	Field   string
	Problem string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Problem }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// quote shows a bad value to the caller without echoing an unbounded
// string back.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}

func checkOrganization(org string) error {
	if org == "" {
		return invalid("organization_id", "is required: every activity belongs to one organization")
	}
	return checkIdentifier("organization_id", org)
}

// checkIdentifier checks a short optional label.
func checkIdentifier(field, v string) error {
	if len(v) > MaxIdentifierBytes {
		return invalid(field, "is %d bytes long; the limit is %d", len(v), MaxIdentifierBytes)
	}
	if !utf8.ValidString(v) {
		return invalid(field, "is not valid UTF-8")
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return invalid(field, "contains a control character; use printable text only")
	}
	return nil
}

// checkText checks free text, where newlines and tabs are fine.
func checkText(field, v string, limit int) error {
	if len(v) > limit {
		return invalid(field, "is %d bytes long; the limit is %d", len(v), limit)
	}
	if !utf8.ValidString(v) {
		return invalid(field, "is not valid UTF-8")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return invalid(field, "contains a NUL character (\\u0000), which cannot be stored; remove it")
	}
	return nil
}

// parseActivityID accepts a UUID in 8-4-4-4-12 form and returns it in
// lowercase, so that the same id in another case is the same activity.
func parseActivityID(v string) (string, error) {
	if v == "" {
		return "", invalid("activity_id", "is required")
	}
	u, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		return "", invalid("activity_id", "must be a UUID in 8-4-4-4-12 form such as 0190f5a4-4c1e-7d3a-9b2e-1c2d3e4f5a6b; got %s", quote(v))
	}
	if u == uuid.Nil {
		return "", invalid("activity_id", "must not be the nil UUID")
	}
	return u.String(), nil
}

// checkObject checks a JSON object against what any store can keep and
// against its size limit, measured on its JSON encoding.
func checkObject(field string, m map[string]any, limit int) error {
	if len(m) == 0 {
		return nil
	}
	if err := checkJSONStrings(field, m); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return invalid(field, "is not representable as JSON: %v", err)
	}
	if len(b) > limit {
		return invalid(field, "is %d bytes as JSON; the limit is %d: store large payloads elsewhere and reference them", len(b), limit)
	}
	return nil
}

// checkJSONStrings rejects strings, keys included, that jsonb cannot
// store or that JSON encoding would silently alter.
func checkJSONStrings(field string, v any) error {
	check := func(s string) error {
		if !utf8.ValidString(s) {
			return invalid(field, "contains a string that is not valid UTF-8")
		}
		if strings.IndexByte(s, 0) >= 0 {
			return invalid(field, "contains a NUL character (\\u0000), which cannot be stored; remove it")
		}
		return nil
	}
	switch v := v.(type) {
	case string:
		return check(v)
	case map[string]any:
		for k, e := range v {
			if err := check(k); err != nil {
				return err
			}
			if err := checkJSONStrings(field, e); err != nil {
				return err
			}
		}
	case []any:
		for _, e := range v {
			if err := checkJSONStrings(field, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// ceilMicro rounds a filter bound up to the microsecond. Stored times have
// microsecond precision, so "start >= from" and "start < to" select the
// same rows with the rounded bound, and every store sees the same value.
func ceilMicro(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	r := t.UTC().Truncate(time.Microsecond)
	if r.Before(t) {
		r = r.Add(time.Microsecond)
	}
	return r
}
