package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func TestToStatus(t *testing.T) {
	exhausted := &pool.ExhaustedError{
		RetryAfter: 3 * time.Second,
		Candidates: []pool.Candidate{
			{AccountID: "id-a", AccountName: "alpha", SkipReason: "breaker open until 2026-05-01T12:00:03Z (in 3s)"},
			{AccountID: "id-b", AccountName: "bravo", SkipReason: "excluded"},
		},
	}
	tests := []struct {
		name        string
		err         error
		code        codes.Code
		contains    []string
		absent      []string
		retryDelay  time.Duration // 0: no RetryInfo expected
		badField    string
		errorReason string
	}{
		{name: "nil", err: nil, code: codes.OK},
		{name: "field error", err: &pool.FieldError{Field: "tier", Problem: "unknown tier \"gold\"; use one of [tier1]"},
			code: codes.InvalidArgument, contains: []string{"tier: unknown tier", "tier1"}, badField: "tier"},
		{name: "wrapped field error", err: fmt.Errorf("registering: %w", &pool.FieldError{Field: "name", Problem: "required"}),
			code: codes.InvalidArgument, contains: []string{"name: required"}, badField: "name"},
		{name: "forged page token", err: pageTokenError("v2|1|{0b6f3f0e-8f6b-4c1a-9d2e-3c5a7f1e2d4b}|fp"),
			code: codes.InvalidArgument, contains: []string{"page_token: not a token", "omit it"}, badField: "page_token"},
		{name: "mismatched page token", err: pageTokenError("v2|1|0b6f3f0e-8f6b-4c1a-9d2e-3c5a7f1e2d4b|other"),
			code: codes.InvalidArgument, contains: []string{"page_token: was issued for a different"}, badField: "page_token"},
		{name: "account limit", err: fmt.Errorf("registering: %w", &pool.LimitError{Limit: pool.LimitAccountsPerOrganization, Max: 2000}),
			code: codes.FailedPrecondition, contains: []string{"its limit of 2000 accounts", "-max-accounts-per-organization"}, errorReason: ReasonAccountLimit},
		{name: "no accounts", err: pool.ErrNoAccounts, code: codes.NotFound,
			contains: []string{"no accounts in service", "legacy mode"}, errorReason: ReasonNoAccounts},
		{name: "exhausted", err: exhausted, code: codes.ResourceExhausted,
			contains: []string{"alpha", "breaker open", "bravo", "excluded"}, retryDelay: 3 * time.Second, errorReason: ReasonExhausted},
		{name: "exhausted, nothing frees up", err: &pool.ExhaustedError{Candidates: []pool.Candidate{{AccountName: "alpha", SkipReason: "invalid"}}},
			code: codes.ResourceExhausted, contains: []string{"no account frees up by itself"}, errorReason: ReasonExhausted},
		{name: "not found", err: fmt.Errorf("account 123: %w", store.ErrNotFound), code: codes.NotFound, contains: []string{"account 123"}},
		{name: "already exists", err: fmt.Errorf("creating account \"a\": %w", store.ErrAlreadyExists), code: codes.AlreadyExists},
		{name: "duplicate", err: store.ErrDuplicate, code: codes.AlreadyExists},
		{name: "unavailable", err: fmt.Errorf("dial: %w", store.ErrUnavailable), code: codes.Unavailable, contains: []string{"retry"}},
		{name: "usage query timeout", err: fmt.Errorf("summing usage: the query ran longer than the 5s a usage query may take: %w", store.ErrQueryTimeout),
			code: codes.ResourceExhausted, contains: []string{"longer than the 5s", "shorter range"}},
		{name: "live state contended", err: fmt.Errorf("%w: redis: 64 conflicting writers", pool.ErrStateContended), code: codes.Unavailable, contains: []string{"contended", "retry"}},
		{name: "live state unavailable", err: fmt.Errorf("%w: redis: dial tcp 10.0.0.7:6379: connection refused", pool.ErrStateUnavailable), code: codes.Unavailable, contains: []string{"live state", "retry"}, absent: []string{"10.0.0.7"}},
		{name: "outcome unknown", err: fmt.Errorf("creating account a: %w: read tcp: connection reset by peer", store.ErrOutcomeUnknown),
			code: codes.Unavailable, contains: []string{"may or may not have been applied", "retry", "AlreadyExists"}},
		{name: "cancelled", err: fmt.Errorf("x: %w", context.Canceled), code: codes.Canceled},
		{name: "deadline", err: context.DeadlineExceeded, code: codes.DeadlineExceeded},
		{name: "decrypt", err: fmt.Errorf("lease: %w", crypto.ErrDecrypt), code: codes.Internal},
		{name: "unknown error hides its text", err: errors.New("pq: password sk-ant-leaked"), code: codes.Internal, contains: []string{"internal error"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ToStatus(tc.err)
			st := status.Convert(err)
			require.Equal(t, tc.code, st.Code(), st.Message())
			for _, s := range tc.contains {
				require.Contains(t, st.Message(), s)
			}
			require.NotContains(t, st.Message(), "sk-ant-leaked")
			for _, s := range tc.absent {
				require.NotContains(t, st.Message(), s)
			}

			var (
				retry  *errdetails.RetryInfo
				bad    *errdetails.BadRequest
				reason string
			)
			for _, d := range st.Details() {
				switch d := d.(type) {
				case *errdetails.RetryInfo:
					retry = d
				case *errdetails.BadRequest:
					bad = d
				case *errdetails.ErrorInfo:
					reason = d.GetReason()
				}
			}
			if tc.retryDelay > 0 {
				require.NotNil(t, retry)
				require.Equal(t, tc.retryDelay, retry.GetRetryDelay().AsDuration())
			} else {
				require.Nil(t, retry)
			}
			if tc.badField != "" {
				require.NotNil(t, bad)
				require.Equal(t, tc.badField, bad.GetFieldViolations()[0].GetField())
			} else {
				require.Nil(t, bad)
			}
			require.Equal(t, tc.errorReason, reason)
		})
	}
}

// pageTokenError is decodePageToken's error for the token encoding raw,
// checked against fingerprint "fp".
func pageTokenError(raw string) error {
	_, err := decodePageToken(base64.RawURLEncoding.EncodeToString([]byte(raw)), "fp")
	return err
}
