package delegate

import (
	"encoding/json"
	"strings"
	"testing"

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
