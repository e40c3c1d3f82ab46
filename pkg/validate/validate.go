// Package validate holds the input rules that every Switchyard service
// applies to the same fields, so a value the Orchestrator accepts is one
// AccountPool and Activity accept too: a task is rejected at the edge, with
// InvalidArgument naming the field, instead of running and then failing to
// be recorded.
//
// Each check returns a *FieldError whose Field is the request field by its
// protobuf name and whose Problem says what to change. Messages never echo
// more than [MaxEcho] bytes of the caller's value, so a huge bad value
// cannot become a huge error.
package validate

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Limits shared by the services.
const (
	// MaxOrganizationID bounds an organization id.
	MaxOrganizationID = 128
	// MaxIdentifier bounds short labels: session_id, user_id, category,
	// agent type and name.
	MaxIdentifier = 256
	// MaxRequestID bounds a client's idempotency key.
	MaxRequestID = 128
	// MaxObjectJSON bounds a structured object (an activity's input or
	// output data) measured on its JSON encoding, which is what is stored.
	MaxObjectJSON = 1 << 20
	// MaxEcho bounds how much of a bad value an error message quotes.
	MaxEcho = 64
	// MaxStructDepth bounds the nesting of structured data (a
	// google.protobuf.Struct and what it holds, or the same data as a
	// map[string]any): the outermost object is level 1 and every object or
	// list inside another adds a level. Deeper data is InvalidArgument,
	// so that no store, encoder or reader recurses without bound on it.
	MaxStructDepth = 64
)

// FieldError is a request field the caller must fix. Both fields are safe
// to show to the caller.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Invalid returns a *FieldError for field with a formatted problem.
func Invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Quote shows a caller's value in a message, cut to MaxEcho bytes.
func Quote(s string) string {
	if len(s) > MaxEcho {
		cut := MaxEcho
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q... (%d bytes)", s[:cut], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// Truncate cuts s to at most limit bytes on a rune boundary, ending it with
// "…" when it was cut. Use it on text of any origin before it is stored or
// shown where a limit applies.
func Truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	const ellipsis = "…"
	cut := max(0, limit-len(ellipsis))
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// OrganizationID requires 1 to MaxOrganizationID printable ASCII characters
// without spaces. Organization ids travel in gRPC metadata (which carries
// only printable ASCII), row-level-security settings and log lines, so
// nothing else is accepted anywhere.
func OrganizationID(field, v string) error {
	if v == "" {
		return Invalid(field, "is required: set it to the id of the organization the call acts on")
	}
	if len(v) > MaxOrganizationID || !printableASCII(v) {
		return Invalid(field, "must be 1 to %d printable ASCII characters without spaces (letters, digits, punctuation)", MaxOrganizationID)
	}
	return nil
}

// RequestID allows an empty id, else at most MaxRequestID printable ASCII
// characters (spaces allowed).
func RequestID(field, v string) error {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return Invalid(field, "must be at most %d printable ASCII characters", MaxRequestID)
		}
	}
	if len(v) > MaxRequestID {
		return Invalid(field, "must be at most %d printable ASCII characters", MaxRequestID)
	}
	return nil
}

// Identifier allows an empty label, else at most limit bytes of valid
// UTF-8 without control characters (no NUL, newline or tab).
func Identifier(field, v string, limit int) error {
	if len(v) > limit {
		return Invalid(field, "is %d bytes long; the limit is %d", len(v), limit)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return Invalid(field, "contains a control character; use printable text only")
	}
	return nil
}

// Text allows free text of at most limit bytes: valid UTF-8 where newlines
// and tabs are fine, but not NUL, which no store can keep.
func Text(field, v string, limit int) error {
	if len(v) > limit {
		return Invalid(field, "is %d bytes long; the limit is %d", len(v), limit)
	}
	if !utf8.ValidString(v) {
		return Invalid(field, "is not valid UTF-8")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return Invalid(field, "contains a NUL character (\\u0000), which cannot be stored; remove it")
	}
	return nil
}

// JSONObject checks a structured object against what every store keeps:
// strings (keys too) that are valid UTF-8 without NUL, nesting of at most
// MaxStructDepth levels, and at most limit bytes as JSON. The size is measured on encoding/json's output, which
// escapes <, > and & as \u003c and so can be six times the raw text: a
// prompt that fits a byte limit may not fit once encoded. Objects whose
// worst-case encoding fits the limit are not encoded at all, so the check
// costs one walk of the object on the hot path.
func JSONObject(field string, m map[string]any, limit int) error {
	if len(m) == 0 {
		return nil
	}
	bound, err := inspectJSON(field, m, 1)
	if err != nil {
		return err
	}
	if bound <= limit {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Invalid(field, "is not representable as JSON: %v", err)
	}
	if len(b) > limit {
		return Invalid(field, "is %d bytes as JSON; the limit is %d: store large payloads elsewhere and reference them", len(b), limit)
	}
	return nil
}

// unboundedJSON is inspectJSON's bound for a value it cannot bound (a
// type it does not know, a NaN): the object is then encoded and measured.
const unboundedJSON = math.MaxInt / 2

// inspectJSON rejects strings, keys included, that a store cannot keep and
// returns an upper bound of v's encoded size: six bytes per string byte
// (the longest escape), quotes, separators, 24 per number. depth is the
// level v would have as an object or list; deeper than MaxStructDepth is
// rejected, which also bounds the recursion.
func inspectJSON(field string, v any, depth int) (int, error) {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return 0, Invalid(field, "contains a string that is not valid UTF-8")
		}
		if strings.IndexByte(v, 0) >= 0 {
			return 0, Invalid(field, "contains a NUL character (\\u0000), which cannot be stored; remove it")
		}
		return 6*len(v) + 2, nil
	case map[string]any:
		if depth > MaxStructDepth {
			return 0, tooDeepIn(field)
		}
		total := 2
		for k, e := range v {
			kb, err := inspectJSON(field, k, depth)
			if err != nil {
				return 0, err
			}
			eb, err := inspectJSON(field, e, depth+1)
			if err != nil {
				return 0, err
			}
			total = min(unboundedJSON, total+kb+eb+2) // the colon and a comma
		}
		return total, nil
	case []any:
		if depth > MaxStructDepth {
			return 0, tooDeepIn(field)
		}
		total := 2
		for _, e := range v {
			eb, err := inspectJSON(field, e, depth+1)
			if err != nil {
				return 0, err
			}
			total = min(unboundedJSON, total+eb+1)
		}
		return total, nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return unboundedJSON, nil // encoding fails: let json.Marshal say so
		}
		return 24, nil
	case int, int32, int64, bool, nil:
		return 24, nil
	}
	return unboundedJSON, nil
}

// Struct checks a google.protobuf.Struct from a request before it is
// converted: every number finite (NaN and ±Inf have no JSON form, and
// converting them would silently turn them into strings) and nesting at
// most MaxStructDepth levels. The error's Field is the first bad value's
// path below field, such as input_data.a.b[2]. The walk stops at the
// limit, so its own recursion is bounded by MaxStructDepth whatever the
// input. A nil Struct is valid. Strings and size are JSONObject's to
// check, after conversion.
func Struct(field string, s *structpb.Struct) error {
	if p := checkStruct(s, 1); p != nil {
		p.Field = Truncate(field+p.Field, 4*MaxEcho)
		return p
	}
	return nil
}

// checkStruct checks s, an object at level depth. A problem's Field is
// its path relative to s, built only when there is one.
func checkStruct(s *structpb.Struct, depth int) *FieldError {
	if depth > MaxStructDepth {
		return tooDeep()
	}
	for k, v := range s.GetFields() {
		if p := checkValue(v, depth); p != nil {
			p.Field = "." + Truncate(k, MaxEcho) + p.Field
			return p
		}
	}
	return nil
}

// checkValue checks v, held by an object or list at level depth.
func checkValue(v *structpb.Value, depth int) *FieldError {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		if f := k.NumberValue; math.IsNaN(f) || math.IsInf(f, 0) {
			return &FieldError{Problem: fmt.Sprintf("is %v, which JSON cannot represent; send a finite number, or a string or null instead", f)}
		}
	case *structpb.Value_StructValue:
		return checkStruct(k.StructValue, depth+1)
	case *structpb.Value_ListValue:
		if depth+1 > MaxStructDepth {
			return tooDeep()
		}
		for i, e := range k.ListValue.GetValues() {
			if p := checkValue(e, depth+1); p != nil {
				p.Field = "[" + strconv.Itoa(i) + "]" + p.Field
				return p
			}
		}
	}
	return nil
}

func tooDeepIn(field string) error {
	p := tooDeep()
	p.Field = field
	return p
}

func tooDeep() *FieldError {
	return &FieldError{Problem: fmt.Sprintf("is nested more than %d levels deep (every object and list is a level); flatten the data", MaxStructDepth)}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
