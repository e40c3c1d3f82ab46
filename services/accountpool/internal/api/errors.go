package api

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// errorDomain is the google.rpc.ErrorInfo domain of this service's errors.
const errorDomain = "switchyard.accountpool"

// ErrorInfo reasons, stable for callers that branch on them (the
// SelectAccount contract in accountpool.proto names them).
const (
	// ReasonNoAccounts: no account in service and no default key handed
	// out (none configured, or not accepted).
	ReasonNoAccounts = "NO_ACCOUNTS"
	// ReasonDefaultKeyInvalid: no account in service, and the
	// organization's default key was rejected by the upstream.
	ReasonDefaultKeyInvalid = "DEFAULT_KEY_INVALID"
	ReasonExhausted         = "ACCOUNTS_EXHAUSTED"
	// ReasonAccountLimit: RegisterAccount refused, the organization has
	// as many accounts as -max-accounts-per-organization allows.
	ReasonAccountLimit = "ACCOUNT_LIMIT_REACHED"
)

// ToStatus translates an error from the pool or the store into a gRPC
// status error. It is the only place that does, so every RPC answers the
// same condition with the same code. Messages come from domain errors,
// which never carry an API key; errors it does not recognise become
// Internal with a generic message (the handler logs the original).
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	var (
		field     *pool.FieldError
		exhausted *pool.ExhaustedError
		limit     *pool.LimitError
	)
	switch {
	case errors.As(err, &field):
		return withDetails(codes.InvalidArgument, field.Error(), &errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field.Field, Description: field.Problem}},
		})
	case errors.As(err, &limit):
		// FailedPrecondition, not ResourceExhausted: nothing frees up by
		// itself, so a retry (callers retry ResourceExhausted with backoff)
		// cannot succeed until someone deletes accounts or raises the
		// limit.
		return withDetails(codes.FailedPrecondition, limit.Error(),
			&errdetails.ErrorInfo{Reason: ReasonAccountLimit, Domain: errorDomain, Metadata: map[string]string{"limit": strconv.Itoa(limit.Max)}},
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "organization", Description: limit.Error()}}},
		)
	case errors.Is(err, pool.ErrDefaultKeyInvalid):
		return withDetails(codes.NotFound,
			"the organization has no accounts in service (none active or invalid) and the upstream rejected its default key; set the default key again (SetDefaultKey), or the orchestrator runs it in legacy mode on its environment key only if its operator allows that",
			&errdetails.ErrorInfo{Reason: ReasonDefaultKeyInvalid, Domain: errorDomain})
	case errors.Is(err, pool.ErrNoAccounts):
		return withDetails(codes.NotFound,
			"the organization has no accounts in service (none active or invalid) and no default key was handed out; the orchestrator runs such an organization in legacy mode on its environment key (ANTHROPIC_API_KEY)",
			&errdetails.ErrorInfo{Reason: ReasonNoAccounts, Domain: errorDomain})
	case errors.As(err, &exhausted):
		details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: ReasonExhausted, Domain: errorDomain}}
		if exhausted.RetryAfter > 0 {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(exhausted.RetryAfter)})
		}
		return withDetails(codes.ResourceExhausted, exhausted.Error(), details...)
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists), errors.Is(err, store.ErrDuplicate):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrOutcomeUnknown):
		return status.Error(codes.Unavailable, "the account store lost its connection after the write was sent, so it may or may not have been applied; "+
			"retry with backoff: a retry never applies a write twice, but if the first attempt was applied, "+
			"a retried RegisterAccount answers AlreadyExists and a retried DeleteAccount NotFound")
	case errors.Is(err, store.ErrQueryTimeout):
		// Not Unavailable: the same read would run as long again.
		return status.Error(codes.ResourceExhausted, err.Error()+"; ask for a shorter range (start_time, end_time), or for the totals without include_records")
	case errors.Is(err, pool.ErrStateContended):
		return status.Error(codes.Unavailable, "the pool's live state is too contended right now; retry with backoff")
	case errors.Is(err, pool.ErrStateUnavailable):
		// The message is fixed: the cause names Redis's address.
		return status.Error(codes.Unavailable, "the pool's live state (Redis) is unavailable; retry with backoff")
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, "the account store is unavailable; retry with backoff")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the call was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the call's deadline passed")
	default:
		return status.Error(codes.Internal, "internal error; the server logged the details")
	}
}

func withDetails(c codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st := status.New(c, msg)
	for _, d := range details {
		// WithDetails fails only for messages that cannot be marshalled,
		// which these generated ones always can.
		if withD, err := st.WithDetails(d); err == nil {
			st = withD
		}
	}
	return st.Err()
}
