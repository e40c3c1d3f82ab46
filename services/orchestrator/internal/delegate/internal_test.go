package delegate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
)

func TestStoredResultFitsTheActivity(t *testing.T) {
	small := &orchestratorv1.DelegateTaskResponse{Status: orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, Output: "hello",
		Metadata: &orchestratorv1.TaskMetadata{Model: "m"}}
	s := storedResult(small)
	require.Equal(t, "hello", s.GetFields()["output"].GetStringValue())
	require.False(t, s.GetFields()["metadata"].GetStructValue().GetFields()["outputTruncated"].GetBoolValue())

	for _, output := range []string{strings.Repeat("a", 2<<20), strings.Repeat("<", 400<<10)} {
		big := &orchestratorv1.DelegateTaskResponse{Status: orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, Output: output,
			Metadata: &orchestratorv1.TaskMetadata{Model: "m"}}
		s := storedResult(big)
		raw, err := json.Marshal(s.AsMap())
		require.NoError(t, err)
		require.LessOrEqual(t, len(raw), validate.MaxObjectJSON, "Activity accepts it")
		require.NoError(t, validate.JSONObject("output_data", s.AsMap(), validate.MaxObjectJSON))
		stored := s.GetFields()["output"].GetStringValue()
		require.NotEmpty(t, stored)
		require.True(t, strings.HasPrefix(output, strings.TrimSuffix(stored, "…")), "a prefix of the answer")
		require.True(t, s.GetFields()["metadata"].GetStructValue().GetFields()["outputTruncated"].GetBoolValue())
		require.Len(t, big.Output, len(output), "the caller's answer is untouched")
	}
}

func TestProgressSchedule(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	s := newProgressSchedule(start, 5*time.Second)
	var at []time.Duration
	for sec := 1; sec <= 3600; sec++ { // an hour of deltas, one a second
		if now := start.Add(time.Duration(sec) * time.Second); s.take(now) {
			at = append(at, now.Sub(start))
		}
	}
	require.Len(t, at, maxStreamProgress, "bounded, however long the stream")
	require.Equal(t, 5*time.Second, at[0])
	require.Equal(t, 40*time.Second, at[7], "every 5s for the first 8")
	require.Equal(t, 50*time.Second, at[8], "then every 10s")
	require.Equal(t, 120*time.Second, at[15])
	require.Equal(t, 600*time.Second, at[31], "the last at the default attempt timeout")
	require.False(t, s.take(start.Add(2*time.Hour)))
}
