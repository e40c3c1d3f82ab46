package tracker

import (
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// Limits; the package comment explains how they add up.
const (
	MaxObjectBytes          = validate.MaxObjectJSON // input_data, output_data
	MaxMetadataBytes        = 64 << 10               // metadata, per call
	MaxProgressDataBytes    = 4 << 10
	MaxProgressMessageBytes = 2 << 10
	MaxErrorMessageBytes    = 16 << 10
	MaxIdentifierBytes      = validate.MaxIdentifier // session_id, user_id, agent_type, agent_name, category

	DefaultPageSize = 50
	MaxPageSize     = 500
	// maxPageBytes keeps a list response well inside the 4 MiB gRPC
	// default, leaving room for one maximal activity (about 2.2 MiB).
	maxPageBytes = 3 << 20
	// maxPageTokenBytes rejects garbage before decoding it.
	maxPageTokenBytes = 512
)

// ValidationError is a request the caller must fix; see validate.FieldError.
type ValidationError = validate.FieldError

func invalid(field, format string, args ...any) error {
	return validate.Invalid(field, format, args...)
}

func checkOrganization(org string) error {
	return validate.OrganizationID("organization_id", org)
}

// checkIdentifier checks a short optional label.
func checkIdentifier(field, v string) error {
	return validate.Identifier(field, v, MaxIdentifierBytes)
}

// checkText checks free text, where newlines and tabs are fine.
func checkText(field, v string, limit int) error {
	return validate.Text(field, v, limit)
}

// parseActivityID accepts a UUID in 8-4-4-4-12 form and returns it in
// lowercase, so that the same id in another case is the same activity.
func parseActivityID(v string) (string, error) {
	if v == "" {
		return "", invalid("activity_id", "is required")
	}
	u, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		return "", invalid("activity_id", "must be a UUID in 8-4-4-4-12 form such as 0190f5a4-4c1e-7d3a-9b2e-1c2d3e4f5a6b; got %s", validate.Quote(v))
	}
	if u == uuid.Nil {
		return "", invalid("activity_id", "must not be the nil UUID")
	}
	return u.String(), nil
}

// checkObject checks a JSON object against what any store can keep and
// against its size limit, measured on its JSON encoding.
func checkObject(field string, m map[string]any, limit int) error {
	return validate.JSONObject(field, m, limit)
}

// microUTC is t in UTC truncated to the microsecond, as the clock is, so
// a stored time reads back equal in every store; zero stays zero.
func microUTC(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
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
