package delegate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// bookkeepingQueued notes a record the outbox will deliver later: not lost,
// not yet acknowledged.
func (run *taskRun) bookkeepingQueued(ctx context.Context, what string) {
	run.mu.Lock()
	run.bookkeepingPending = append(run.bookkeepingPending, what)
	run.mu.Unlock()
	trace.SpanFromContext(ctx).AddEvent("bookkeeping queued", trace.WithAttributes(attribute.String("record", what)))
}

func (run *taskRun) recordRequest(ctx context.Context, a attempt, sel selection) float64 {
	p, res := run.p, a.result
	req := &accountpoolv1.RecordRequestRequest{
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
		// Which key a legacy attempt ran on: the ledger's account name,
		// and a 401/402/403 on the default key marks it invalid.
		LegacyKey:            legacyKeyToProto(sel.legacyKey),
		DefaultKeyGeneration: sel.generation,
	}
	resp := &accountpoolv1.RecordRequestResponse{}
	if !run.enqueue(ctx, targetPool, accountpoolv1.AccountPoolService_RecordRequest_FullMethodName, fmt.Sprintf("recording attempt %d", a.number), req, resp) {
		return 0
	}
	return resp.GetCostUsd()
}

// maxRuns bounds how often one request_id is run again after earlier runs
// were superseded (abandoned, or ended before any model call).
const maxRuns = 16

// trackStart starts the task's activity. It returns a response when the
// request_id already ran (a replay), and an error when the task must not
// run: its request_id's activity could not be started (so a retry could
// not tell it already ran), or was refused.
//
// A request_id may take several runs: when its activity was abandoned (its
// orchestrator died) or ended before any model call (an outage), the
// earlier run has no real outcome to replay, so the task runs again under
// the next run's activity id; the usage ledger tells the runs apart by the
// run suffix of their request id (see runRequestID).
func (run *taskRun) trackStart(ctx context.Context) (*orchestratorv1.DelegateTaskResponse, error) {
	p := run.p
	for {
		created, act, err := run.startActivity(ctx)
		if err != nil {
			return nil, err
		}
		if act == nil { // ran without an activity
			run.emitAccepted("")
			return nil, nil
		}
		if created {
			run.activityStarted = true
			run.emitAccepted(p.activityID)
			return nil, nil
		}
		if p.idempotent && act.GetStatus() == activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING && run.r.deadStarts.has(startTokenOf(act)) {
			if err := sameTask(act, p); err != nil {
				return nil, err
			}
			// An earlier send's TrackStart in this process committed,
			// its answer was lost, and that send failed without running
			// the task: the run is over though its activity says RUNNING.
			// End it (a retry may run the task again) rather than answer
			// Aborted until Activity abandons it at its deadline.
			run.endDeadRun(ctx)
			if p.run >= maxRuns {
				return nil, fmt.Errorf("%w: request_id has been started %d times without an outcome; use a new request_id", ErrRequestIDReused, maxRuns)
			}
			p.nextRun()
			continue
		}
		if !superseded(act) || !p.idempotent {
			run.activityStarted = true
			run.emitAccepted(p.activityID)
			return replay(act, p)
		}
		if err := sameTask(act, p); err != nil {
			return nil, err
		}
		if p.run >= maxRuns {
			return nil, fmt.Errorf("%w: request_id has been started %d times without an outcome; use a new request_id", ErrRequestIDReused, maxRuns)
		}
		p.nextRun()
	}
}

func (run *taskRun) emitAccepted(activityID string) {
	p := run.p
	run.emit(Event{Kind: EventAccepted, ActivityID: activityID, RequestID: p.clientRequestID, Model: p.category.Model, Category: p.Category})
}

// startActivity makes one TrackStart for the run's activity id. It returns
// no activity (and no error) when the task may run without one.
func (run *taskRun) startActivity(ctx context.Context) (bool, *activityv1.Activity, error) {
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
			"request_id":          p.clientRequestID,
			"request_fingerprint": p.fingerprint,
			"run":                 p.run,
			"start_token":         run.startToken,
		}),
		Deadline: timestamppb.New(run.deadline(ctx)),
		// A created activity is ours as sent; only a found one (a
		// replay) needs its input, output and metadata read back.
		ResponseView: activityv1.ActivityView_ACTIVITY_VIEW_BASIC,
	})
	if err != nil {
		if inv := fieldViolation(err); inv != nil {
			return false, nil, inv
		}
		if p.idempotent {
			// The start may have committed with its answer lost; the task
			// will not run on it (see trackStart).
			run.r.deadStarts.add(run.startToken)
			return false, nil, fmt.Errorf("%w: %s", ErrActivityUnavailable, status.Convert(err).Message())
		}
		run.bookkeepingFailed(ctx, "starting the activity (the task runs without one)", err)
		return false, nil, nil
	}
	// A TrackStart that committed but whose answer was lost is retried
	// (by gRPC on Unavailable) and then finds the activity it created
	// itself: the start token says it is this run's, not an earlier one's.
	mine := startTokenOf(resp.GetActivity()) == run.startToken
	return resp.GetCreated() || mine, resp.GetActivity(), nil
}

// deadline is when the task will have ended, for Activity to abandon the
// activity if no completion arrives (the orchestrator died): the caller's
// deadline, or the longest the task can take — the wait for a busy pool
// and every attempt with its selection and backoff.
func (run *taskRun) deadline(ctx context.Context) time.Time {
	cfg := run.r.cfg
	longest := run.start.Add(max(cfg.MaxWait, 0) + time.Duration(cfg.MaxAttempts)*(cfg.AttemptTimeout+cfg.SelectTimeout+2*time.Second))
	if dl, ok := ctx.Deadline(); ok && dl.Before(longest) {
		return dl
	}
	return longest
}

// startTokenOf is the start token the activity was started with.
func startTokenOf(act *activityv1.Activity) string {
	return act.GetMetadata().GetFields()["start_token"].GetStringValue()
}

// endDeadRun fails the run's activity, a run of this process that never
// ran, as rerunnable.
func (run *taskRun) endDeadRun(ctx context.Context) {
	p := run.p
	run.enqueue(ctx, targetActivity, activityv1.ActivityService_TrackComplete_FullMethodName, "ending a run that never ran", &activityv1.TrackCompleteRequest{
		OrganizationId: p.OrganizationID,
		ActivityId:     p.activityID,
		Status:         activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED,
		ErrorMessage:   "not run: this run's start was recorded but its answer was lost, and the task did not run on it; a later send ran it as the next run",
		Metadata:       mustStruct(map[string]any{"rerunnable": true, "run": p.run, "attempts": 0}),
	}, &activityv1.TrackCompleteResponse{})
}

// startTokens remembers the start tokens of this process's TrackStarts
// that failed for tasks that then did not run (their start may have
// committed with the answer lost). Bounded: the oldest are forgotten,
// which at worst leaves such a run to Activity's abandonment, as before.
type startTokens struct {
	mu    sync.Mutex
	set   map[string]struct{}
	order []string
}

const maxDeadStarts = 4096

func (s *startTokens) add(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[string]struct{}{}
	}
	if len(s.order) >= maxDeadStarts {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.set[tok] = struct{}{}
	s.order = append(s.order, tok)
}

func (s *startTokens) has(tok string) bool {
	if tok == "" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.set[tok]
	return ok
}

// superseded reports whether an ended activity has no outcome to replay:
// it was abandoned, or its run ended before any model call.
func superseded(act *activityv1.Activity) bool {
	switch act.GetStatus() {
	case activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED:
		return true
	case activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED:
		return act.GetMetadata().GetFields()["rerunnable"].GetBoolValue()
	}
	return false
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
	run.enqueue(ctx, targetActivity, activityv1.ActivityService_TrackProgress_FullMethodName, fmt.Sprintf("tracking progress before attempt %d", next), &activityv1.TrackProgressRequest{
		OrganizationId: run.p.OrganizationID,
		ActivityId:     run.p.activityID,
		Message:        fmt.Sprintf("attempt %d of %d after %s on account %s", next, maxAttempts, describe(prev.result), prev.accountName),
		Data: mustStruct(map[string]any{
			"attempt":             next,
			"previous_account_id": prev.accountID,
			"previous_outcome":    prev.result.Outcome.String(),
			"previous_status":     prev.result.HTTPStatus,
		}),
	}, &activityv1.TrackProgressResponse{})
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
	run.enqueue(ctx, targetActivity, activityv1.ActivityService_TrackComplete_FullMethodName, "completing the activity", &activityv1.TrackCompleteRequest{
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
			"legacy_key":   md.GetLegacyKey(),
			"duration_ms":  md.GetDurationMs(),
			"waited_ms":    run.waited.Milliseconds(),
			"selections":   run.selections,
			// A run that made no model call has no outcome of its own: a
			// retry with the same request_id runs the task again.
			"rerunnable": len(run.tried) == 0,
			"run":        run.p.run,
		}),
		ResponseView: activityv1.ActivityView_ACTIVITY_VIEW_BASIC,
	}, &activityv1.TrackCompleteResponse{})
}

// maxStoredErrorBytes keeps an activity's error message within Activity's
// limit for it.
const maxStoredErrorBytes = 8 << 10
