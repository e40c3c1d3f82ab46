package delegate

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/outbox"
)

// Outbox targets and the lanes of a task: a task's usage records go in one
// lane and its activity records in another, each in order.
const (
	targetPool     = "accountpool"
	targetActivity = "activity"
)

func (p *prepared) lane(target string) string { return p.activityID + "/" + target }

// deliver sends one outbox record with the typed client of its method. A
// record may be delivered long after its task, from the outbox's own
// goroutine, so the organization the call acts for (which the client
// forwards, see auth.ForwardOrganization) comes from the record itself.
func (r *Runner) deliver(ctx context.Context, rec outbox.Record) ([]byte, error) {
	switch rec.Method {
	case accountpoolv1.AccountPoolService_RecordRequest_FullMethodName:
		return send(ctx, rec, &accountpoolv1.RecordRequestRequest{}, r.pool.RecordRequest)
	case activityv1.ActivityService_TrackProgress_FullMethodName:
		return send(ctx, rec, &activityv1.TrackProgressRequest{}, r.activity.TrackProgress)
	case activityv1.ActivityService_TrackComplete_FullMethodName:
		return send(ctx, rec, &activityv1.TrackCompleteRequest{}, r.activity.TrackComplete)
	}
	return nil, permanent(fmt.Errorf("no delivery for method %s", rec.Method))
}

// orgRequest is a request that names its organization.
type orgRequest interface {
	proto.Message
	GetOrganizationId() string
}

// send decodes rec into req, calls it on behalf of its organization and
// encodes the answer.
func send[Req orgRequest, Resp proto.Message](ctx context.Context, rec outbox.Record, req Req,
	call func(context.Context, Req, ...grpc.CallOption) (Resp, error)) ([]byte, error) {
	if err := proto.Unmarshal(rec.Body, req); err != nil {
		return nil, permanent(err)
	}
	resp, err := call(auth.WithActingOrganization(ctx, req.GetOrganizationId()), req)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(resp)
}

// permanent marks an error no retry can fix.
func permanent(err error) error {
	return status.Error(codes.Internal, "undeliverable record: "+err.Error())
}

// retryable says which delivery errors are worth retrying: the target could
// not be reached, was not ready, or did not answer in time. Anything else
// is the target refusing the record (InvalidArgument, FailedPrecondition,
// PermissionDenied, ...), which a retry would only repeat.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Unknown, codes.Canceled:
		return true
	}
	return false
}

// enqueue hands a bookkeeping call to the outbox and says what became of
// its first delivery: delivered (resp filled), pending (queued, delivered
// later) or failed (the target refused it, or it could not be stored).
func (run *taskRun) enqueue(ctx context.Context, target, method, what string, req, resp proto.Message) (delivered bool) {
	body, err := proto.Marshal(req)
	if err != nil {
		run.bookkeepingFailed(ctx, what, err)
		return false
	}
	res, err := run.r.outbox.Enqueue(ctx, outbox.Record{Lane: run.p.lane(target), Target: target, Method: method, Body: body})
	switch {
	case err != nil:
		run.bookkeepingFailed(ctx, what, err)
	case res.Err != nil:
		run.bookkeepingFailed(ctx, what, res.Err)
	case res.Pending():
		run.bookkeepingQueued(ctx, what)
	default:
		if err := proto.Unmarshal(res.Response, resp); err != nil {
			run.bookkeepingFailed(ctx, what+" (reading the answer)", err)
			return false
		}
		return true
	}
	return false
}
