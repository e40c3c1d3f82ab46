package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

func TestToStatus(t *testing.T) {
	// secret stands for internals a wrapped error may carry: a backend's
	// address, query or credentials.
	const secret = "postgres://svc:hunter2@10.0.0.5:5432"
	validation := &tracker.ValidationError{Field: "activity_id", Problem: "must be a UUID"}

	tests := []struct {
		name    string
		err     error
		code    codes.Code
		message string
	}{
		{"nil", nil, codes.OK, ""},
		{"validation", validation, codes.InvalidArgument, "activity_id: must be a UUID"},
		{"wrapped validation", fmt.Errorf("starting: %w", validation), codes.InvalidArgument, "activity_id: must be a UUID"},
		{"struct too deep", validate.Struct("input_data", deepStruct(validate.MaxStructDepth+1)), codes.InvalidArgument,
			"input_data" + strings.Repeat(".a", validate.MaxStructDepth) + ": is nested more than 64 levels deep (every object and list is a level); flatten the data"},
		{"not found", store.ErrNotFound, codes.NotFound, msgNotFound},
		{"wrapped not found", fmt.Errorf("querying %s: %w", secret, store.ErrNotFound), codes.NotFound, msgNotFound},
		{"already ended", fmt.Errorf("appending progress: %w", store.ErrAlreadyEnded), codes.FailedPrecondition, msgAlreadyEnded},
		{"completion conflict", fmt.Errorf("completing: %w", tracker.ErrCompletionConflict), codes.FailedPrecondition, msgConflict},
		{"conflict that is also already ended", errors.Join(store.ErrAlreadyEnded, tracker.ErrCompletionConflict), codes.FailedPrecondition, msgConflict},
		{"progress limit", fmt.Errorf("appending: %w", store.ErrProgressLimit), codes.ResourceExhausted, fmt.Sprintf(msgProgressLimit, store.MaxProgressEvents)},
		{"cancelled", fmt.Errorf("querying %s: %w", secret, context.Canceled), codes.Canceled, msgCanceled},
		{"deadline", fmt.Errorf("querying %s: %w", secret, context.DeadlineExceeded), codes.DeadlineExceeded, msgDeadlineExceeded},
		{"unavailable", fmt.Errorf("appending progress: %w: connecting to %s: connection refused", store.ErrUnavailable, secret), codes.Unavailable, msgUnavailable},
		{"cancelled while unavailable", errors.Join(context.Canceled, store.ErrUnavailable), codes.Canceled, msgCanceled},
		{"outcome unknown", fmt.Errorf("appending progress: %w: reading from %s: connection reset by peer", store.ErrOutcomeUnknown, secret), codes.Unavailable, msgOutcomeUnknown},
		{"cancelled with the outcome unknown", errors.Join(context.Canceled, store.ErrOutcomeUnknown), codes.Canceled, msgCanceled},
		{"unknown", fmt.Errorf("connecting to %s: connection refused", secret), codes.Internal, msgInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := toStatus(tc.err)
			require.Equal(t, tc.code, st.Code())
			require.Equal(t, tc.message, st.Message())
			require.NotContains(t, st.Message(), "hunter2")
		})
	}
}

func TestToStatusNamesTheFieldInDetails(t *testing.T) {
	st := toStatus(fmt.Errorf("wrapped: %w", &tracker.ValidationError{Field: "page_size", Problem: "must be between 1 and 500"}))
	require.Equal(t, codes.InvalidArgument, st.Code())
	require.Len(t, st.Details(), 1)
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	require.True(t, ok, "detail is %T", st.Details()[0])
	require.Len(t, br.GetFieldViolations(), 1)
	require.Equal(t, "page_size", br.GetFieldViolations()[0].GetField())
	require.Equal(t, "must be between 1 and 500", br.GetFieldViolations()[0].GetDescription())
}

func TestFailLogsOnlyWhatTheCallerIsNotTold(t *testing.T) {
	var buf bytes.Buffer
	s := New(nil, slog.New(slog.NewTextHandler(&buf, nil)))

	err := s.fail(context.Background(), "GetActivity", fmt.Errorf("getting: %w", store.ErrNotFound))
	require.Error(t, err)
	require.Empty(t, buf.String(), "expected outcomes are not server errors")

	err = s.fail(context.Background(), "GetActivity", errors.New("disk on fire"))
	require.Error(t, err)
	require.Contains(t, buf.String(), "disk on fire")
	require.Contains(t, buf.String(), "GetActivity")

	buf.Reset()
	err = s.fail(context.Background(), "TrackProgress", fmt.Errorf("appending: %w: connection refused", store.ErrUnavailable))
	require.Error(t, err)
	require.Contains(t, buf.String(), "connection refused", "an unavailable store is logged: the caller only hears to retry")
}
