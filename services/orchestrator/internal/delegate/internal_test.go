package delegate

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"google.golang.org/protobuf/types/known/structpb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
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

// A large organization's selection is explained in part by the pool; the
// summary keeps its counts of the rest, and stays a valid activity value.
func TestSelectionSummaryKeepsThePoolsCountsOfTheRest(t *testing.T) {
	resp := &accountpoolv1.SelectAccountResponse{
		Lease: &accountpoolv1.Lease{AccountName: "a-1"},
		Candidates: []*accountpoolv1.Candidate{
			{AccountName: "a-1", Chosen: true, Headroom: 0.5},
			{AccountName: "a-2", SkipReason: "cooling down"},
		},
		OmittedCandidates: 9998,
		OmittedReasons:    map[string]int32{"eligible": 9000, "cooling_down": 998},
	}
	s := selectionSummary(resp)
	require.Equal(t, float64(9998), s["not_explained"])
	require.Equal(t, map[string]any{"eligible": float64(9000), "cooling_down": float64(998)}, s["not_explained_reasons"])
	st, err := structpb.NewStruct(s)
	require.NoError(t, err)
	require.Equal(t, float64(998), st.GetFields()["not_explained_reasons"].GetStructValue().GetFields()["cooling_down"].GetNumberValue())

	small := selectionSummary(&accountpoolv1.SelectAccountResponse{Lease: &accountpoolv1.Lease{AccountName: "a-1"}})
	require.NotContains(t, small, "not_explained", "nothing omitted, nothing said")
}
