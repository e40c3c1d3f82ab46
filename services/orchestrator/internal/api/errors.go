package api

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
)

// toStatus is the one place where the Orchestrator's errors become gRPC
// statuses. Messages of domain errors are written for the caller; anything
// unexpected becomes Internal without details.
func toStatus(err error) error {
	var inv *delegate.InvalidArgumentError
	var poolErr *delegate.PoolError
	var limitErr *delegate.LimitError
	switch {
	case errors.As(err, &inv):
		st := status.New(codes.InvalidArgument, inv.Error())
		if withDetails, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: inv.Field, Description: inv.Problem},
		}}); derr == nil {
			st = withDetails
		}
		return st.Err()
	case errors.As(err, &limitErr):
		return limitStatus(limitErr)
	case errors.Is(err, delegate.ErrNoAccounts):
		return status.Error(codes.FailedPrecondition, err.Error()+": register an account with AccountPoolService.RegisterAccount, set the organization's default key with AccountPoolService.SetDefaultKey, or set ANTHROPIC_API_KEY for the orchestrator")
	case errors.Is(err, delegate.ErrDefaultKeyInvalid):
		// The caller's to fix (set the key again, or register an account);
		// the message names no key material.
		return status.Error(codes.FailedPrecondition, err.Error()+", or register an account with AccountPoolService.RegisterAccount")
	case errors.Is(err, delegate.ErrInProgress):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, delegate.ErrRequestIDReused):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, delegate.ErrPoolUnavailable), errors.Is(err, delegate.ErrActivityUnavailable),
		errors.Is(err, delegate.ErrBookkeepingUnavailable):
		return status.Error(codes.Unavailable, err.Error()+"; nothing ran, retry later")
	case errors.Is(err, delegate.ErrSelectionTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error()+"; nothing ran, retry later")
	case errors.As(err, &poolErr):
		// The pool's code is kept: an InvalidArgument of the pool is the
		// caller's to fix, anything else is an outage of the pool.
		code := codes.Code(poolErr.Code)
		if code != codes.InvalidArgument && code != codes.FailedPrecondition && code != codes.PermissionDenied {
			code = codes.Unavailable
		}
		return status.Error(code, poolErr.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the caller cancelled the request")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the request's deadline passed")
	default:
		return status.Error(codes.Internal, "internal error")
	}
}

// Domain and reason of the ErrorInfo on a task refused by an organization
// limit; its metadata names the limit and its value.
const (
	errorDomain       = "switchyard.orchestrator"
	reasonTaskLimited = "ORGANIZATION_TASK_LIMIT"
)

// limitStatus is a task refused by an organization limit: RESOURCE_EXHAUSTED,
// a message naming the limit and its value, a google.rpc.RetryInfo (when a
// retry may succeed) and an ErrorInfo for programs.
func limitStatus(e *delegate.LimitError) error {
	st := status.New(codes.ResourceExhausted, e.Error()+"; nothing ran, retry after "+e.RetryAfter.String()+
		" (an administrator changes the limit with AccountPoolService.UpdateOrganizationSettings task_limits)")
	if withDetails, derr := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)},
		&errdetails.ErrorInfo{Domain: errorDomain, Reason: reasonTaskLimited, Metadata: map[string]string{"limit": e.Limit, "value": e.Value()}},
	); derr == nil {
		st = withDetails
	}
	return st.Err()
}
