package api

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits"
)

func TestToStatus(t *testing.T) {
	cases := []struct {
		name        string
		err         error
		code        codes.Code
		msgContains string
	}{
		{"invalid argument", &delegate.InvalidArgumentError{Field: "prompt", Problem: "is required"}, codes.InvalidArgument, "prompt: is required"},
		{"wrapped invalid argument", fmt.Errorf("x: %w", &delegate.InvalidArgumentError{Field: "category", Problem: "unknown"}), codes.InvalidArgument, "category"},
		{"no accounts", delegate.ErrNoAccounts, codes.FailedPrecondition, "ANTHROPIC_API_KEY"},
		{"no accounts names the default key", delegate.ErrNoAccounts, codes.FailedPrecondition, "SetDefaultKey"},
		{"default key invalid", delegate.ErrDefaultKeyInvalid, codes.FailedPrecondition, "default key was rejected by the upstream"},
		{"default key invalid says how to fix it", fmt.Errorf("x: %w", delegate.ErrDefaultKeyInvalid), codes.FailedPrecondition, "set it again with AccountPoolService.SetDefaultKey"},
		{"in progress", fmt.Errorf("%w (activity a)", delegate.ErrInProgress), codes.Aborted, "still running"},
		{"request id reused", delegate.ErrRequestIDReused, codes.InvalidArgument, "different task"},
		{"pool unavailable", fmt.Errorf("%w: connection refused", delegate.ErrPoolUnavailable), codes.Unavailable, "unavailable"},
		{"activity unavailable", fmt.Errorf("%w: connection refused", delegate.ErrActivityUnavailable), codes.Unavailable, "nothing ran"},
		{"outbox full", fmt.Errorf("%w: the bookkeeping outbox is full", delegate.ErrBookkeepingUnavailable), codes.Unavailable, "outbox is full"},
		{"selection timeout", fmt.Errorf("%w (10s)", delegate.ErrSelectionTimeout), codes.DeadlineExceeded, "timed out"},
		{"pool invalid argument", &delegate.PoolError{Code: int(codes.InvalidArgument), Message: "session_id: bad"}, codes.InvalidArgument, "session_id"},
		{"pool permission denied", &delegate.PoolError{Code: int(codes.PermissionDenied), Message: "PermissionDenied: no"}, codes.PermissionDenied, "refused"},
		{"pool internal", &delegate.PoolError{Code: int(codes.Internal), Message: "Internal: boom"}, codes.Unavailable, "refused"},
		{"concurrency limit", &delegate.LimitError{Limit: limits.LimitConcurrent, Limits: limits.Limits{MaxConcurrent: 7, PerSecond: 1, Burst: 1}, RetryAfter: time.Second}, codes.ResourceExhausted, "max_concurrent_tasks 7"},
		{"rate limit", fmt.Errorf("x: %w", &delegate.LimitError{Limit: limits.LimitRate, Limits: limits.Limits{MaxConcurrent: 7, PerSecond: 0.5, Burst: 3}, RetryAfter: 2 * time.Second}), codes.ResourceExhausted, "tasks_per_second 0.5 with a burst of 3"},
		{"cancelled", context.Canceled, codes.Canceled, "cancelled"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "deadline"},
		{"unexpected", errors.New("secret internals sk-ant-xyz"), codes.Internal, "internal error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(toStatus(tc.err))
			require.Equal(t, tc.code, st.Code())
			require.Contains(t, st.Message(), tc.msgContains)
			require.NotContains(t, st.Message(), "sk-ant")
		})
	}
}

func TestInvalidArgumentCarriesFieldViolation(t *testing.T) {
	st := status.Convert(toStatus(&delegate.InvalidArgumentError{Field: "load_skills", Problem: "unknown skill"}))
	require.Len(t, st.Details(), 1)
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	require.True(t, ok)
	require.Equal(t, "load_skills", br.GetFieldViolations()[0].GetField())
}

// A task refused by a limit says when to retry (RetryInfo) and which limit
// (ErrorInfo), so clients can back off without parsing the message.
func TestLimitErrorCarriesRetryInfo(t *testing.T) {
	cases := []struct {
		err   *delegate.LimitError
		delay time.Duration
		value string
	}{
		{&delegate.LimitError{Limit: limits.LimitRate, Limits: limits.Limits{MaxConcurrent: 1, PerSecond: 4, Burst: 2}, RetryAfter: 250 * time.Millisecond}, 250 * time.Millisecond, "4"},
		{&delegate.LimitError{Limit: limits.LimitConcurrent, Limits: limits.Limits{MaxConcurrent: 9, PerSecond: 4, Burst: 2}, RetryAfter: time.Second}, time.Second, "9"},
	}
	for _, tc := range cases {
		t.Run(tc.err.Limit, func(t *testing.T) {
			st := status.Convert(toStatus(tc.err))
			require.Equal(t, codes.ResourceExhausted, st.Code())
			require.Contains(t, st.Message(), tc.err.Limit)
			require.Contains(t, st.Message(), "nothing ran")
			var retry *errdetails.RetryInfo
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.RetryInfo:
					retry = d
				case *errdetails.ErrorInfo:
					info = d
				}
			}
			require.NotNil(t, retry)
			require.Equal(t, tc.delay, retry.GetRetryDelay().AsDuration())
			require.NotNil(t, info)
			require.Equal(t, "ORGANIZATION_TASK_LIMIT", info.GetReason())
			require.Equal(t, tc.err.Limit, info.GetMetadata()["limit"])
			require.Equal(t, tc.value, info.GetMetadata()["value"])
		})
	}
}
