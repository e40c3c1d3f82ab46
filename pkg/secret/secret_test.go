package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/secret"
)

const canary = "sk-ant-canary-0123456789abcdef"

func TestStringNeverPrintsItsValue(t *testing.T) {
	s := secret.New(canary)
	type wrapper struct {
		Key secret.String
		Ptr *secret.String
	}
	w := wrapper{Key: s, Ptr: &s}

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
		outputs = append(outputs, fmt.Sprintf(verb, s), fmt.Sprintf(verb, w), fmt.Sprintf(verb, []secret.String{s}))
	}
	outputs = append(outputs, fmt.Sprint(s), fmt.Sprintln(s, &s))

	j, err := json.Marshal(w)
	require.NoError(t, err)
	outputs = append(outputs, string(j))

	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("key", "key", s, "wrapped", w)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("key", "key", s, "ptr", &s)
	outputs = append(outputs, buf.String())

	for _, out := range outputs {
		require.NotContains(t, out, canary)
		require.NotContains(t, out, fmt.Sprintf("%x", canary))
		require.True(t, strings.Contains(out, secret.Redacted), "output %q should show the redaction marker", out)
	}
}

func TestRevealReturnsTheValue(t *testing.T) {
	s := secret.New(canary)
	require.Equal(t, canary, s.Reveal())
	require.False(t, s.IsZero())
	require.True(t, secret.String{}.IsZero())
	require.True(t, s.Equal(secret.New(canary)))
	require.False(t, s.Equal(secret.New("other")))
}

func TestScrubRemovesKeyShapedText(t *testing.T) {
	cases := map[string]string{
		"invalid x-api-key sk-ant-api03-AbC_def-123456789 provided": "invalid x-api-key [REDACTED] provided",
		"Authorization: Bearer abcdefghijklmnop":                    "Authorization: [REDACTED]",
		"overloaded_error: Overloaded":                              "overloaded_error: Overloaded",
		"task-ant and sk-short stay":                                "task-ant and sk-short stay",
	}
	for in, want := range cases {
		require.Equal(t, want, secret.Scrub(in), in)
	}
}
