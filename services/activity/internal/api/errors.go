package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// Messages for errors whose wrapped text could name internals. The caller
// already knows which organization and activity it asked about.
const (
	msgNotFound         = "activity not found in this organization; check activity_id and organization_id"
	msgAlreadyEnded     = "the activity has already ended; progress is accepted only while it is RUNNING (an ABANDONED activity accepts only a late TrackComplete)"
	msgConflict         = "the activity already ended with a different completion (status, output_data, error_message or metadata); an ended activity is never overwritten, and GetActivity shows the stored one"
	msgProgressLimit    = "the activity has reached the limit of %d progress events; report fewer, coarser steps"
	msgUnavailable      = "the activity store is unavailable; retry with backoff (a retried TrackProgress may record its event twice)"
	msgOutcomeUnknown   = "the activity store lost its connection after the write was sent, so it may or may not have been applied; retry with backoff: a retried TrackStart or TrackComplete with the same activity_id is safe, a retried TrackProgress may record its event twice"
	msgInternal         = "internal error; the server logged the details"
	msgCanceled         = "the call was cancelled"
	msgDeadlineExceeded = "the call's deadline passed before it finished"
)

// toStatus is the one translation from domain and store errors to gRPC
// statuses. Only messages written for callers are passed on: validation
// problems, and the fixed texts above. Anything unrecognised is Internal,
// with nothing of the cause in it.
func toStatus(err error) *status.Status {
	var ve *tracker.ValidationError
	switch {
	case err == nil:
		return status.New(codes.OK, "")
	case errors.As(err, &ve):
		st := status.New(codes.InvalidArgument, ve.Error())
		if withDetails, derr := st.WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: ve.Field, Description: ve.Problem}},
		}); derr == nil {
			st = withDetails
		}
		return st
	case errors.Is(err, store.ErrNotFound):
		return status.New(codes.NotFound, msgNotFound)
	case errors.Is(err, tracker.ErrCompletionConflict):
		return status.New(codes.FailedPrecondition, msgConflict)
	case errors.Is(err, store.ErrAlreadyEnded):
		return status.New(codes.FailedPrecondition, msgAlreadyEnded)
	case errors.Is(err, store.ErrProgressLimit):
		return status.New(codes.ResourceExhausted, fmt.Sprintf(msgProgressLimit, store.MaxProgressEvents))
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, msgCanceled)
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, msgDeadlineExceeded)
	case errors.Is(err, store.ErrOutcomeUnknown):
		return status.New(codes.Unavailable, msgOutcomeUnknown)
	case errors.Is(err, store.ErrUnavailable):
		return status.New(codes.Unavailable, msgUnavailable)
	default:
		return status.New(codes.Internal, msgInternal)
	}
}
