// Package delegate runs DelegateTask: the flow of DESIGN §2.
//
// For one task it validates the request, resolves the category and skills,
// starts the activity, then makes up to MaxAttempts model calls, each on an
// account the AccountPool selects and never on an account already tried,
// settling every attempt with RecordRequest and announcing every retry with
// TrackProgress, and finally completes the activity.
//
// Decisions worth knowing:
//
//   - The activity is started before the first account is selected, not
//     after: its id is derived from (organization, request_id), so a retried
//     request finds the earlier run before it reserves any capacity or calls
//     the model. The account of each attempt is in the progress events and
//     the completion metadata instead of the start metadata.
//   - Bookkeeping (RecordRequest, TrackProgress, TrackComplete) runs on a
//     context detached from the caller's cancellation, with its own timeout,
//     so a caller that gives up does not lose the records of work already
//     done. A bookkeeping failure never fails the task; it is logged, traced
//     and listed in the response's bookkeeping_errors.
//   - Legacy mode (the organization has no accounts in service) makes exactly
//     one attempt with the fallback key: there is no other account to fail
//     over to.
package delegate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/categories"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/skills"
)

// Executor makes one model call; *executor.Client is the real one.
type Executor interface {
	Call(ctx context.Context, req executor.Request) executor.Result
}

// Config tunes a Runner. Zero values take the documented defaults.
type Config struct {
	Categories categories.Table
	Skills     *skills.Library
	// MaxAttempts bounds the model calls of one task; default 3.
	MaxAttempts int
	// FallbackKey is the key of legacy mode (ANTHROPIC_API_KEY); zero means
	// organizations without accounts get FailedPrecondition.
	FallbackKey secret.String
	// FailWhenPoolUnavailable makes an unreachable AccountPool fail the task
	// with Unavailable instead of running it on FallbackKey.
	FailWhenPoolUnavailable bool
	// AttemptTimeout bounds one model call; default 10m. The caller's
	// deadline always applies as well.
	AttemptTimeout time.Duration
	// BookkeepingTimeout bounds each call to AccountPool.RecordRequest and
	// the Activity service; default 10s.
	BookkeepingTimeout time.Duration
	// MaxPromptBytes bounds the prompt; default 512 KiB.
	MaxPromptBytes int
	// MaxWait bounds how long one task waits, in all, for an account to free
	// up when the pool says every account is busy but one frees up soon;
	// default 10s, negative disables waiting. The caller's deadline always
	// applies as well.
	MaxWait time.Duration
	// Sleep waits for d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a random duration in [0, d); tests replace it.
	Jitter func(d time.Duration) time.Duration
}

// Limits on request fields.
const (
	maxIDBytes        = 128
	maxSkills         = 32
	maxMaxTokens      = 128_000
	defaultPromptSize = 512 << 10
	agentType         = "ai_executor"
	agentName         = "built-in"
	legacyAccountName = "default"
)

// Runner runs tasks. It is safe for concurrent use.
type Runner struct {
	cfg      Config
	pool     accountpoolv1.AccountPoolServiceClient
	activity activityv1.ActivityServiceClient
	exec     Executor
	logger   *slog.Logger
	tracer   trace.Tracer
}

// New returns a Runner over the two services' clients and an executor.
func New(cfg Config, pool accountpoolv1.AccountPoolServiceClient, activity activityv1.ActivityServiceClient, exec Executor, logger *slog.Logger, tp trace.TracerProvider) *Runner {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Minute
	}
	if cfg.BookkeepingTimeout <= 0 {
		cfg.BookkeepingTimeout = 10 * time.Second
	}
	if cfg.MaxPromptBytes <= 0 {
		cfg.MaxPromptBytes = defaultPromptSize
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 10 * time.Second
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d)
		}
	}
	if cfg.Skills == nil {
		cfg.Skills, _ = skills.Load("")
	}
	if cfg.Categories.IsZero() {
		cfg.Categories = categories.Default()
	}
	return &Runner{cfg: cfg, pool: pool, activity: activity, exec: exec, logger: logger,
		tracer: tp.Tracer("github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate")}
}

// Task is one DelegateTask request.
type Task struct {
	OrganizationID string
	SessionID      string
	UserID         string
	Category       string
	Skills         []string
	Prompt         string
	RequestID      string
	MaxTokens      int64
}

// Errors of Run other than InvalidArgumentError. The api package maps each
// to its gRPC code.
var (
	// ErrNoAccounts: the organization has no accounts in service and no
	// fallback key is configured.
	ErrNoAccounts = errors.New("the organization has no accounts in service and the orchestrator has no fallback ANTHROPIC_API_KEY")
	// ErrInProgress: a task with the same request_id is still running.
	ErrInProgress = errors.New("a task with this request_id is still running")
	// ErrRequestIDReused: the request_id was used before for a different task.
	ErrRequestIDReused = errors.New("request_id was already used for a different task")
	// ErrPoolUnavailable: the AccountPool could not be reached and falling
	// back to the environment key is off (or there is none).
	ErrPoolUnavailable = errors.New("the account pool is unavailable")
)

// InvalidArgumentError says which request field is wrong and how.
type InvalidArgumentError struct {
	Field   string
	Problem string
}

func (e *InvalidArgumentError) Error() string { return e.Field + ": " + e.Problem }

func invalid(field, format string, args ...any) error {
	return &InvalidArgumentError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// prepared is a validated task.
type prepared struct {
	Task
	category    categories.Category
	system      string
	maxTokens   int64
	estimate    categories.Estimate
	activityID  string
	fingerprint string
}

func (r *Runner) prepare(t Task) (*prepared, error) {
	switch {
	case t.OrganizationID == "":
		return nil, invalid("organization_id", "is required")
	case len(t.OrganizationID) > maxIDBytes:
		return nil, invalid("organization_id", "must be at most %d bytes", maxIDBytes)
	case strings.TrimSpace(t.Prompt) == "":
		return nil, invalid("prompt", "is required and must not be blank")
	case len(t.Prompt) > r.cfg.MaxPromptBytes:
		return nil, invalid("prompt", "is %d bytes; the limit is %d", len(t.Prompt), r.cfg.MaxPromptBytes)
	case !utf8.ValidString(t.Prompt):
		return nil, invalid("prompt", "must be valid UTF-8")
	case t.Category == "":
		return nil, invalid("category", "is required; known categories: %s", strings.Join(r.cfg.Categories.Names(), ", "))
	case len(t.Skills) > maxSkills:
		return nil, invalid("load_skills", "names %d skills; at most %d can be loaded", len(t.Skills), maxSkills)
	case t.MaxTokens < 0 || t.MaxTokens > maxMaxTokens:
		return nil, invalid("max_tokens", "must be between 0 (the category's default) and %d", maxMaxTokens)
	case len(t.RequestID) > maxIDBytes || !printable(t.RequestID):
		return nil, invalid("request_id", "must be at most %d printable ASCII characters", maxIDBytes)
	case len(t.SessionID) > 256:
		return nil, invalid("session_id", "must be at most 256 bytes")
	case len(t.UserID) > 256:
		return nil, invalid("user_id", "must be at most 256 bytes")
	}
	cat, err := r.cfg.Categories.Lookup(t.Category)
	if err != nil {
		return nil, invalid("category", "%v", err)
	}
	system, err := r.cfg.Skills.SystemPrompt(t.Skills)
	if err != nil {
		return nil, invalid("load_skills", "%v", err)
	}
	p := &prepared{Task: t, category: cat, system: system, maxTokens: cat.MaxTokens}
	if t.MaxTokens > 0 {
		p.maxTokens = t.MaxTokens
	}
	p.estimate = categories.EstimateFor(cat, system, t.Prompt, p.maxTokens)
	if t.RequestID == "" {
		p.RequestID = uuid.NewString()
		p.activityID = uuid.NewString()
	} else {
		p.activityID = ActivityID(t.OrganizationID, t.RequestID)
	}
	sum := sha256.Sum256([]byte(strings.Join(append([]string{t.Category, t.Prompt, fmt.Sprint(t.MaxTokens)}, t.Skills...), "\x00")))
	p.fingerprint = hex.EncodeToString(sum[:16])
	return p, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestNamespace scopes the UUIDs derived from request ids.
var requestNamespace = uuid.MustParse("6f0c1d1e-5a55-4c39-9a43-7c3d5e0b9a11")

// ActivityID is the activity id of a task with a client-given request id:
// the same (organization, request id) always maps to the same activity, which
// is what makes a retried DelegateTask idempotent.
func ActivityID(organizationID, requestID string) string {
	return uuid.NewSHA1(requestNamespace, []byte(organizationID+"\x00"+requestID)).String()
}

// Run executes one task. The returned response carries the task's outcome
// (SUCCESS, FAILED, RATE_LIMITED); an error means the task could not be run
// at all (*InvalidArgumentError, ErrNoAccounts, ErrInProgress,
// ErrRequestIDReused, ErrPoolUnavailable, or the caller's context error).
func (r *Runner) Run(ctx context.Context, t Task) (*orchestratorv1.DelegateTaskResponse, error) {
	p, err := r.prepare(t)
	if err != nil {
		return nil, err
	}
	run := &taskRun{r: r, p: p, start: time.Now()}
	if replay, err := run.trackStart(ctx); replay != nil || err != nil {
		return replay, err
	}
	runErr := run.attempts(ctx)
	resp := run.response()
	run.trackComplete(ctx, resp, runErr)
	resp.Metadata.BookkeepingErrors = run.bookkeepingErrors
	if runErr != nil {
		return nil, runErr
	}
	return resp, nil
}

// attempt is what happened on one model call.
type attempt struct {
	number      int
	accountID   string
	accountName string
	result      executor.Result
	costUSD     float64
}

// taskRun is the state of one task while it runs.
type taskRun struct {
	r     *Runner
	p     *prepared
	start time.Time

	activityStarted   bool
	legacy            bool
	tried             []attempt
	excluded          []string
	exhausted         string // why no further account could be selected
	retryAfter        time.Duration
	waited            time.Duration
	selections        []any // one summary per selection, for the activity
	bookkeepingErrors []string
}

func (run *taskRun) bookkeepingCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), run.r.cfg.BookkeepingTimeout)
}

func (run *taskRun) bookkeepingFailed(ctx context.Context, what string, err error) {
	msg := fmt.Sprintf("%s: %v", what, err)
	run.bookkeepingErrors = append(run.bookkeepingErrors, msg)
	trace.SpanFromContext(ctx).AddEvent("bookkeeping failed", trace.WithAttributes(attribute.String("error", msg)))
	run.r.logger.ErrorContext(ctx, "bookkeeping write failed; the task result is unaffected",
		"what", what, "error", err, "organization_id", run.p.OrganizationID, "request_id", run.p.RequestID)
}

// attempts runs model calls until one succeeds, one fails in a way another
// account would not fix, the attempt budget is spent, no account is left, or
// the caller's context ends. It returns an error only when the task cannot
// run at all (see Run).
func (run *taskRun) attempts(ctx context.Context) error {
	maxAttempts := run.r.cfg.MaxAttempts
	for n := 1; n <= maxAttempts; n++ {
		if ctx.Err() != nil {
			return nil
		}
		if n > 1 {
			run.trackProgress(ctx, n, maxAttempts)
			if err := run.r.cfg.Sleep(ctx, run.backoff(n)); err != nil {
				return nil
			}
		}
		lease, err := run.selectAccount(ctx)
		if err != nil {
			return err
		}
		if lease == nil && !run.legacy {
			return nil // nothing left to try; run.exhausted says why
		}
		a := run.call(ctx, n, lease)
		run.tried = append(run.tried, a)
		if a.result.Outcome == executor.Success || !a.result.Outcome.Retryable() || run.legacy {
			return nil
		}
		run.excluded = append(run.excluded, a.accountID)
	}
	return nil
}

// backoff is the pause before attempt n (n >= 2). Failing over after a
// 429 or a rejected key goes to a different account with its own limits, so
// it only gets a little jitter, which keeps a burst of failovers from
// landing on the next account at the same instant. After a server error or
// an overload the upstream itself may be struggling, so the pause grows
// exponentially (full jitter, 100ms base, 2s cap).
func (run *taskRun) backoff(n int) time.Duration {
	prev := run.tried[len(run.tried)-1].result.Outcome
	if prev != executor.UpstreamError {
		return run.r.cfg.Jitter(50 * time.Millisecond)
	}
	return run.r.cfg.Jitter(min(2*time.Second, 100*time.Millisecond<<(n-2)))
}

// selectAccount asks the pool for an account, waiting (within MaxWait and
// the caller's deadline) when every account is busy but one frees up soon.
// It returns (nil, nil) and sets run.exhausted when no account can take the
// task, and switches run.legacy on when the task must run on the fallback
// key.
func (run *taskRun) selectAccount(ctx context.Context) (*accountpoolv1.Lease, error) {
	for {
		lease, err := run.selectOnce(ctx)
		if err != nil || lease != nil || run.legacy || !run.mayWait(ctx) {
			return lease, err
		}
		wait := run.retryAfter + run.r.cfg.Jitter(run.retryAfter/10+time.Millisecond)
		run.waited += wait
		if err := run.r.cfg.Sleep(ctx, wait); err != nil {
			return nil, nil
		}
		run.exhausted, run.retryAfter = "", 0
	}
}

// mayWait reports whether the pool's answer "busy, free in retryAfter" is
// worth waiting for: within the wait budget and before the caller's
// deadline.
func (run *taskRun) mayWait(ctx context.Context) bool {
	if run.retryAfter <= 0 || run.r.cfg.MaxWait < 0 || run.waited+run.retryAfter > run.r.cfg.MaxWait {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= run.retryAfter {
		return false
	}
	return true
}

func (run *taskRun) selectOnce(ctx context.Context) (*accountpoolv1.Lease, error) {
	p := run.p
	resp, err := run.r.pool.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{
		OrganizationId:        p.OrganizationID,
		Model:                 p.category.Model,
		EstimatedInputTokens:  p.estimate.InputTokens,
		EstimatedOutputTokens: p.estimate.OutputTokens,
		Category:              p.Category,
		ExcludedAccountIds:    run.excluded,
		SessionId:             p.SessionID,
		RequestId:             p.RequestID,
	})
	if err == nil {
		run.selections = append(run.selections, selectionSummary(resp))
		return resp.GetLease(), nil
	}
	if ctx.Err() != nil {
		return nil, nil
	}
	switch poolErrorKind(err) {
	case poolNoAccounts:
		if len(run.tried) > 0 {
			run.exhausted = "the organization has no other account in service"
			return nil, nil
		}
		if run.r.cfg.FallbackKey.IsZero() {
			return nil, ErrNoAccounts
		}
		run.legacy = true
		return nil, nil
	case poolExhausted:
		run.exhausted, run.retryAfter = exhaustedDetails(err)
		return nil, nil
	default:
		if len(run.tried) == 0 && !run.r.cfg.FailWhenPoolUnavailable && !run.r.cfg.FallbackKey.IsZero() {
			run.bookkeepingFailed(ctx, "account pool unavailable, running on the fallback key", err)
			run.legacy = true
			return nil, nil
		}
		if len(run.tried) > 0 {
			run.exhausted = "the account pool became unavailable: " + err.Error()
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %v", ErrPoolUnavailable, err)
	}
}

// call makes one model call on the lease (or the fallback key in legacy
// mode) and settles it with the pool.
func (run *taskRun) call(ctx context.Context, n int, lease *accountpoolv1.Lease) attempt {
	p := run.p
	a := attempt{number: n, accountName: legacyAccountName}
	key := run.r.cfg.FallbackKey
	if lease != nil {
		a.accountID, a.accountName, key = lease.GetAccountId(), lease.GetAccountName(), secret.New(lease.GetApiKey())
	}
	ctx, span := run.r.tracer.Start(ctx, "delegate.attempt", trace.WithAttributes(
		attribute.Int("switchyard.attempt", n),
		attribute.String("switchyard.account_id", a.accountID),
		attribute.String("switchyard.account_name", a.accountName),
		attribute.Bool("switchyard.legacy_mode", run.legacy),
		attribute.String("gen_ai.request.model", p.category.Model),
	))
	defer span.End()

	callCtx, cancel := context.WithTimeout(ctx, run.r.cfg.AttemptTimeout)
	a.result = run.r.exec.Call(callCtx, executor.Request{
		APIKey: key, Model: p.category.Model, MaxTokens: p.maxTokens,
		System: p.system, Prompt: p.Prompt, UserID: p.UserID,
	})
	cancel()
	if a.result.Outcome == executor.UpstreamError && ctx.Err() != nil {
		a.result.Outcome = executor.Cancelled // our timeout wrapper hid the caller's cancellation
	}
	span.SetAttributes(attribute.String("switchyard.outcome", a.result.Outcome.String()), attribute.Int("http.response.status_code", a.result.HTTPStatus))
	if a.result.Outcome != executor.Success {
		span.SetStatus(codes.Error, a.result.Outcome.String())
	}
	a.costUSD = run.recordRequest(ctx, a, lease)
	return a
}

func (run *taskRun) recordRequest(ctx context.Context, a attempt, lease *accountpoolv1.Lease) float64 {
	p, res := run.p, a.result
	bctx, cancel := run.bookkeepingCtx(ctx)
	defer cancel()
	resp, err := run.r.pool.RecordRequest(bctx, &accountpoolv1.RecordRequestRequest{
		OrganizationId:      p.OrganizationID,
		LeaseId:             lease.GetLeaseId(),
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
		InputData: mustStruct(map[string]any{
			"prompt":      p.Prompt,
			"load_skills": stringsToAny(p.Skills),
			"model":       p.category.Model,
			"max_tokens":  p.maxTokens,
		}),
		Metadata: mustStruct(map[string]any{
			"request_id":          p.RequestID,
			"request_fingerprint": p.fingerprint,
		}),
	})
	if err != nil {
		run.bookkeepingFailed(ctx, "starting the activity", err)
		return nil, nil
	}
	run.activityStarted = true
	if resp.GetCreated() {
		return nil, nil
	}
	return replay(resp.GetActivity(), p)
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
		OutputData:     resultToStruct(resp),
		ErrorMessage:   errMsg,
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

// response builds the task's result from its attempts.
func (run *taskRun) response() *orchestratorv1.DelegateTaskResponse {
	p := run.p
	md := &orchestratorv1.TaskMetadata{
		Model:      p.category.Model,
		DurationMs: time.Since(run.start).Milliseconds(),
		ActivityId: p.activityID,
		Attempts:   int32(len(run.tried)),
		RequestId:  p.RequestID,
		LegacyMode: run.legacy,
	}
	if !run.activityStarted {
		md.ActivityId = ""
	}
	resp := &orchestratorv1.DelegateTaskResponse{Metadata: md}
	rateLimited := 0
	var retryAfter time.Duration
	for _, a := range run.tried {
		u := a.result.Usage
		md.InputTokens += u.InputTokens
		md.OutputTokens += u.OutputTokens
		md.CacheReadTokens += u.CacheReadTokens
		md.CacheCreationTokens += u.CacheCreationTokens
		md.CostUsd += a.costUSD
		md.AccountId, md.AccountName = a.accountID, a.accountName
		md.AttemptDetails = append(md.AttemptDetails, &orchestratorv1.Attempt{
			Number: int32(a.number), AccountId: a.accountID, AccountName: a.accountName,
			Outcome: a.result.Outcome.String(), HttpStatus: int32(a.result.HTTPStatus),
			Error: errorText(a.result), DurationMs: a.result.Duration.Milliseconds(),
		})
		switch a.result.Outcome {
		case executor.Success:
			resp.Status, resp.Output = orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, a.result.Text
			md.StopReason = a.result.StopReason
			if a.result.Model != "" {
				md.Model = a.result.Model
			}
		case executor.RateLimited, executor.SpendLimited:
			rateLimited++
			if ra := a.result.RateLimit.RetryAfter; ra > 0 && (retryAfter == 0 || ra < retryAfter) {
				retryAfter = ra
			}
		}
	}
	if resp.Status == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
		return resp
	}
	if rateLimited == len(run.tried) && (len(run.tried) > 0 || run.exhausted != "") {
		resp.Status = orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED
		// The pool knows best when an account frees up; the upstream's
		// retry-after is the fallback.
		if run.retryAfter > 0 {
			retryAfter = run.retryAfter
		}
		md.RetryAfterMs = retryAfter.Milliseconds()
	} else {
		resp.Status = orchestratorv1.TaskStatus_TASK_STATUS_FAILED
	}
	resp.Error = run.failureMessage(rateLimited)
	return resp
}

func (run *taskRun) failureMessage(rateLimited int) string {
	var parts []string
	for _, a := range run.tried {
		parts = append(parts, fmt.Sprintf("%s (%s)", a.accountName, describe(a.result)))
	}
	var msg string
	switch {
	case len(run.tried) == 0:
		msg = "no attempt was made"
	case rateLimited == len(run.tried):
		msg = fmt.Sprintf("all %d attempts were rate limited: %s", len(run.tried), strings.Join(parts, ", "))
	default:
		last := run.tried[len(run.tried)-1]
		msg = fmt.Sprintf("attempt %d of %d failed on account %s: %s", last.number, len(run.tried), last.accountName, errorText(last.result))
		if len(parts) > 1 {
			msg += "; accounts tried: " + strings.Join(parts, ", ")
		}
	}
	if run.exhausted != "" {
		msg += "; no further account could be selected: " + run.exhausted
	}
	return msg
}

func describe(r executor.Result) string {
	switch {
	case r.HTTPStatus != 0 && r.ErrorType != "":
		s := fmt.Sprintf("%d %s", r.HTTPStatus, r.ErrorType)
		if r.RateLimit.RetryAfter > 0 {
			s += fmt.Sprintf(", retry after %s", r.RateLimit.RetryAfter)
		}
		return s
	case r.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d", r.HTTPStatus)
	default:
		return r.Outcome.String()
	}
}

func errorText(r executor.Result) string {
	if r.Outcome == executor.Success {
		return ""
	}
	if r.ErrorMessage == "" {
		return describe(r)
	}
	return describe(r) + ": " + r.ErrorMessage
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxSkippedInSummary bounds the explanation kept per selection, so an
// organization with many accounts cannot blow the activity's metadata
// limit.
const maxSkippedInSummary = 20

// selectionSummary condenses the pool's explanation of one selection for
// the activity's metadata: the strategy, the chosen account and its
// headroom, and why the others were skipped.
func selectionSummary(resp *accountpoolv1.SelectAccountResponse) map[string]any {
	summary := map[string]any{
		"strategy": resp.GetStrategy().String(),
		"account":  resp.GetLease().GetAccountName(),
	}
	var skipped []any
	omitted := 0
	for _, c := range resp.GetCandidates() {
		switch {
		case c.GetChosen():
			summary["headroom"] = c.GetHeadroom()
		case c.GetSkipReason() == "":
		case len(skipped) < maxSkippedInSummary:
			skipped = append(skipped, c.GetAccountName()+": "+c.GetSkipReason())
		default:
			omitted++
		}
	}
	if len(skipped) > 0 {
		summary["skipped"] = skipped
	}
	if omitted > 0 {
		summary["skipped_omitted"] = omitted
	}
	return summary
}
