// Package secret holds values that must never reach a log, a trace, an error
// message or a JSON document, such as upstream API keys.
//
// A [String] redacts itself under every formatter (%v, %s, %q, %#v, %x),
// slog, encoding/json and encoding.TextMarshaler. The only way to read the
// value is [String.Reveal], which makes each use easy to find in review.
package secret

import (
	"fmt"
	"log/slog"
	"regexp"
)

// Redacted is what a String prints instead of its value.
const Redacted = "[REDACTED]"

// String is a secret string. The zero value is the empty secret.
type String struct {
	value string
}

// New wraps s.
func New(s string) String { return String{value: s} }

// Reveal returns the plaintext. Call it only where the value leaves the
// process for its one legitimate use (an upstream request header, an
// encryption call).
func (s String) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s.value == "" }

// Equal reports whether two secrets hold the same value.
func (s String) Equal(o String) bool { return s.value == o.value }

// String implements fmt.Stringer.
func (s String) String() string { return Redacted }

// GoString implements fmt.GoStringer, used by %#v.
func (s String) GoString() string { return "secret.String(" + Redacted + ")" }

// Format implements fmt.Formatter so that no verb (%x, %q, %d, ...) can print
// the value.
func (s String) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// LogValue implements slog.LogValuer.
func (s String) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (s String) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (s String) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// keyShaped matches strings that look like API keys or bearer credentials:
// Anthropic keys (sk-ant-...), other sk- keys, and Bearer tokens.
var keyShaped = regexp.MustCompile(`(?i)(sk-[a-z0-9][a-z0-9_\-]{7,}|bearer\s+[a-z0-9._~+/\-]{8,}=*)`)

// Scrub replaces anything key-shaped in s with the redaction marker. Use it
// on text that came from outside (an upstream error message) before it is
// logged, traced or returned.
func Scrub(s string) string {
	return keyShaped.ReplaceAllString(s, Redacted)
}
