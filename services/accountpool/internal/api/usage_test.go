package api

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

var usageNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// usageServer is a Server on memstore whose clock stands at usageNow, with
// ranges capped at 10 days (totals) and 2 days (rows), and usage rows of
// org at the given times.
func usageServer(t *testing.T, org string, at ...time.Time) *Server {
	t.Helper()
	spec, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	keys, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	st := memstore.New()
	for i, ts := range at {
		_, err := st.InsertUsage(t.Context(), store.UsageRecord{ID: uuid.NewString(), OrganizationID: org, AccountName: "environment",
			RequestID: uuid.NewString(), Attempt: 1, Outcome: store.OutcomeSuccess, Model: "m", InputTokens: int64(i + 1), CreateTime: ts})
		require.NoError(t, err)
	}
	p, err := pool.New(pool.Config{Store: st, Keys: keys, Now: func() time.Time { return usageNow },
		Usage: pool.UsageLimits{MaxRange: 10 * 24 * time.Hour, MaxRecordsRange: 2 * 24 * time.Hour}})
	require.NoError(t, err)
	return New(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestGetUsageRangeCaps(t *testing.T) {
	org := "org-" + uuid.NewString()
	s := usageServer(t, org)
	ts := timestamppb.New
	tests := []struct {
		name     string
		req      *accountpoolv1.GetUsageRequest
		contains []string // empty: the request is accepted
	}{
		{"no range: the last 24 hours", &accountpoolv1.GetUsageRequest{IncludeRecords: true}, nil},
		{"totals at the cap", &accountpoolv1.GetUsageRequest{StartTime: ts(usageNow.Add(-10 * 24 * time.Hour)), EndTime: ts(usageNow)}, nil},
		{"totals over the cap", &accountpoolv1.GetUsageRequest{StartTime: ts(usageNow.Add(-10*24*time.Hour - time.Second)), EndTime: ts(usageNow)},
			[]string{"at most 10 days", "spans 10 days", "shorter ranges"}},
		{"over the cap measured to now when end_time is unset", &accountpoolv1.GetUsageRequest{StartTime: ts(usageNow.Add(-11 * 24 * time.Hour))},
			[]string{"at most 10 days", "spans 11 days"}},
		{"a far past end_time still bounds the range", &accountpoolv1.GetUsageRequest{StartTime: ts(usageNow.Add(-400 * 24 * time.Hour)), EndTime: ts(usageNow.Add(-395 * 24 * time.Hour))}, nil},
		{"rows at the cap", &accountpoolv1.GetUsageRequest{IncludeRecords: true, StartTime: ts(usageNow.Add(-48 * time.Hour)), EndTime: ts(usageNow)}, nil},
		{"rows over the cap", &accountpoolv1.GetUsageRequest{IncludeRecords: true, StartTime: ts(usageNow.Add(-72 * time.Hour)), EndTime: ts(usageNow)},
			[]string{"with include_records", "at most 2 days", "spans 3 days", "totals alone (up to 10 days)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.OrganizationId = org
			_, err := s.GetUsage(t.Context(), tc.req)
			if len(tc.contains) == 0 {
				require.NoError(t, err)
				return
			}
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			for _, c := range tc.contains {
				require.Contains(t, status.Convert(err).Message(), c)
			}
			var br *errdetails.BadRequest
			for _, d := range status.Convert(err).Details() {
				if b, ok := d.(*errdetails.BadRequest); ok {
					br = b
				}
			}
			require.NotNil(t, br)
			require.Equal(t, "start_time", br.GetFieldViolations()[0].GetField())
		})
	}
}

// Without start_time the range is the 24 hours before end_time, or before
// now: an older row is not summed.
func TestGetUsageDefaultRangeIsTheLastDay(t *testing.T) {
	org := "org-" + uuid.NewString()
	s := usageServer(t, org,
		usageNow.Add(-25*time.Hour),   // before the default range: 1 token
		usageNow.Add(-23*time.Hour),   // inside: 2
		usageNow.Add(-time.Minute),    // inside: 3
		usageNow.Add(-47*time.Hour),   // inside the day before end_time below: 4
		usageNow.Add(-24*time.Hour-1), // just before the range: 5
	)
	res, err := s.GetUsage(t.Context(), &accountpoolv1.GetUsageRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.GetTotal().GetRequests())
	require.Equal(t, int64(2+3), res.GetTotal().GetInputTokens())

	res, err = s.GetUsage(t.Context(), &accountpoolv1.GetUsageRequest{OrganizationId: org, EndTime: timestamppb.New(usageNow.Add(-24 * time.Hour))})
	require.NoError(t, err)
	require.Equal(t, int64(1+4+5), res.GetTotal().GetInputTokens(), "the 24 hours before end_time")
}
