package telemetry

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiterLetsAMessageThroughOncePerInterval(t *testing.T) {
	l := &limiter{every: time.Minute, last: map[string]limitState{}}
	t0 := time.Unix(1_000_000, 0)
	n, ok := l.allow("collector down", t0)
	require.True(t, ok)
	require.Zero(t, n)
	for i := range 3 {
		_, ok = l.allow("collector down", t0.Add(time.Duration(i+1)*time.Second))
		require.False(t, ok)
	}
	_, ok = l.allow("another error", t0.Add(time.Second))
	require.True(t, ok, "each message has its own interval")
	n, ok = l.allow("collector down", t0.Add(time.Minute))
	require.True(t, ok)
	require.Equal(t, 3, n, "the next line says how many were left out")
}

// Bad OTLP settings fail start-up naming the variable, never quoting the
// value, which may be a token or a password.
func TestCheckOTLPEnvNamesTheVariableNotTheValue(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer SECRET-1"},
		{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=SECRET-2%ZZ"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:SECRET-3@host:bad"},
	} {
		t.Setenv(tc.name, tc.value)
		err := checkOTLPEnv()
		if err == nil || !strings.Contains(err.Error(), tc.name) || strings.Contains(err.Error(), "SECRET") {
			t.Fatalf("%s=%q: got %v", tc.name, tc.value, err)
		}
		t.Setenv(tc.name, "")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def,x-tenant=acme")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
	if err := checkOTLPEnv(); err != nil {
		t.Fatal(err)
	}
}
