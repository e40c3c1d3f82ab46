package delegate

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
)

func (run *taskRun) bookkeepingCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), run.r.cfg.BookkeepingTimeout)
}

func (run *taskRun) bookkeepingFailed(ctx context.Context, what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	run.mu.Lock()
	run.bookkeepingErrors = append(run.bookkeepingErrors, msg)
	run.mu.Unlock()
	trace.SpanFromContext(ctx).AddEvent("bookkeeping failed", trace.WithAttributes(attribute.String("error", msg)))
	run.r.logger.ErrorContext(ctx, "bookkeeping write failed; the task result is unaffected",
		"what", what, "error", err, "organization_id", run.p.OrganizationID, "request_id", run.p.RequestID)
}

func (run *taskRun) recordRequest(ctx context.Context, a attempt, sel selection) float64 {
	p, res := run.p, a.result
	bctx, cancel := run.bookkeepingCtx(ctx)
	defer cancel()
	resp, err := run.r.pool.RecordRequest(bctx, &accountpoolv1.RecordRequestRequest{
		OrganizationId:      p.OrganizationID,
		LeaseId:             sel.lease.GetLeaseId(),
		AccountId:           a.accountID,
		RequestId:           p.RequestID,
		Attempt:             int32(a.number),
		Outcome:             outcomeToProto(res.Outcome),
		Model:               p.category.Model,
		Category:            p.Category,
		SessionId:           p.SessionID,
		UserId:              p.UserID,
		InputTokens:         res.Usage.InputTokens,
		OutputTokens:        res.Usage.OutputTokens,
		CacheReadTokens:     res.Usage.CacheReadTokens,
		CacheCreationTokens: res.Usage.CacheCreationTokens,
		RateLimit:           rateLimitToProto(res.RateLimit),
		HttpStatus:          int32(res.HTTPStatus),
		ErrorType:           res.ErrorType,
		ErrorMessage:        res.ErrorMessage,
		UpstreamRequestId:   res.UpstreamRequestID,
		DurationMs:          res.Duration.Milliseconds(),
	})
	if err != nil {
		run.bookkeepingFailed(ctx, fmt.Sprintf("recording attempt %d", a.number), err)
		return 0
	}
	return resp.GetCostUsd()
}

// trackStart starts the task's activity. It returns a response when the
// request_id already ran (a replay), and an error when the task must not
// run: its request_id's activity could not be started (so a retry could
// not tell it already ran), or was refused.
func (run *taskRun) trackStart(ctx context.Context) (*orchestratorv1.DelegateTaskResponse, error) {
	p := run.p
	bctx, cancel := run.bookkeepingCtx(ctx)
	defer cancel()
	resp, err := run.r.activity.TrackStart(bctx, &activityv1.TrackStartRequest{
		OrganizationId: p.OrganizationID,
		ActivityId:     p.activityID,
		SessionId:      p.SessionID,
		UserId:         p.UserID,
		AgentType:      agentType,
		AgentName:      agentName,
		Category:       p.Category,
		InputData:      mustStruct(p.input),
		Metadata: mustStruct(map[string]any{
			"request_id":          p.RequestID,
			"request_fingerprint": p.fingerprint,
		}),
	})
	if err != nil {
		if inv := fieldViolation(err); inv != nil {
			return nil, inv
		}
		if p.idempotent {
			return nil, fmt.Errorf("%w: %s", ErrActivityUnavailable, status.Convert(err).Message())
		}
		run.bookkeepingFailed(ctx, "starting the activity (the task runs without one)", err)
		run.emit(Event{Kind: EventAccepted, RequestID: p.RequestID, Model: p.category.Model, Category: p.Category})
		return nil, nil
	}
	run.activityStarted = true
	run.emit(Event{Kind: EventAccepted, ActivityID: p.activityID, RequestID: p.RequestID, Model: p.category.Model, Category: p.Category})
	if resp.GetCreated() {
		return nil, nil
	}
	return replay(resp.GetActivity(), p)
}

// fieldViolation returns the InvalidArgument of another service as the
// caller's own: the edge validation should have caught it, but if a rule
// drifted the caller still learns which field to fix.
func fieldViolation(err error) error {
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return nil
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			v := br.GetFieldViolations()[0]
			return &InvalidArgumentError{Field: v.GetField(), Problem: v.GetDescription()}
		}
	}
	return &InvalidArgumentError{Field: "request", Problem: validate.Quote(st.Message())}
}

func (run *taskRun) trackProgress(ctx context.Context, next, maxAttempts int) {
	if !run.activityStarted || len(run.tried) == 0 {
		return
	}
	prev := run.tried[len(run.tried)-1]
	bctx, cancel := run.bookkeepingCtx(ctx)
	defer cancel()
	_, err := run.r.activity.TrackProgress(bctx, &activityv1.TrackProgressRequest{
		OrganizationId: run.p.OrganizationID,
		ActivityId:     run.p.activityID,
		Message:        fmt.Sprintf("attempt %d of %d after %s on account %s", next, maxAttempts, describe(prev.result), prev.accountName),
		Data: mustStruct(map[string]any{
			"attempt":             next,
			"previous_account_id": prev.accountID,
			"previous_outcome":    prev.result.Outcome.String(),
			"previous_status":     prev.result.HTTPStatus,
		}),
	})
	if err != nil {
		run.bookkeepingFailed(ctx, fmt.Sprintf("tracking progress before attempt %d", next), err)
	}
}

func (run *taskRun) trackComplete(ctx context.Context, resp *orchestratorv1.DelegateTaskResponse, runErr error) {
	if !run.activityStarted {
		return
	}
	status, errMsg := activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED, resp.GetError()
	if resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS || runErr != nil {
		status = activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED
	}
	if runErr != nil {
		errMsg = runErr.Error()
	}
	md := resp.GetMetadata()
	bctx, cancel := run.bookkeepingCtx(ctx)
	defer cancel()
	_, err := run.r.activity.TrackComplete(bctx, &activityv1.TrackCompleteRequest{
		OrganizationId: run.p.OrganizationID,
		ActivityId:     run.p.activityID,
		Status:         status,
		OutputData:     storedResult(resp),
		ErrorMessage:   validate.Truncate(errMsg, maxStoredErrorBytes),
		Metadata: mustStruct(map[string]any{
			"account_id":   md.GetAccountId(),
			"account_name": md.GetAccountName(),
			"cost_usd":     md.GetCostUsd(),
			"attempts":     md.GetAttempts(),
			"task_status":  resp.GetStatus().String(),
			"legacy_mode":  md.GetLegacyMode(),
			"duration_ms":  md.GetDurationMs(),
			"waited_ms":    run.waited.Milliseconds(),
			"selections":   run.selections,
		}),
	})
	if err != nil {
		run.bookkeepingFailed(ctx, "completing the activity", err)
	}
}

// maxStoredErrorBytes keeps an activity's error message within Activity's
// limit for it.
const maxStoredErrorBytes = 8 << 10
