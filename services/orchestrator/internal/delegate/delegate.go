// Package delegate runs DelegateTask: the flow of one task, from the
// request to its recorded result.
//
// For one task it validates the request, resolves the category and skills,
// starts the activity, then makes up to MaxAttempts model calls, each on an
// account the AccountPool selects and never on an account already tried,
// settling every attempt with RecordRequest and announcing every retry with
// TrackProgress, and finally completes the activity. The unary call and the
// stream run the same flow; the stream also hands an Observer every event
// as it happens (see Event).
//
// Decisions worth knowing:
//
//   - The activity is started before the first account is selected, not
//     after: its id is derived from (organization, request_id), so a retried
//     request finds the earlier run before it reserves any capacity or calls
//     the model. With a request_id the model is called only once the
//     activity is started: if Activity cannot be reached the task fails with
//     Unavailable before any model call, so a retry cannot run it twice.
//     Without a request_id the task runs without an activity and says so.
//   - Bookkeeping (RecordRequest, TrackProgress, TrackComplete) goes through
//     an outbox (package outbox): stored (on disk with OutboxDir) before the
//     answer, tried at once, and retried in the background, in order per
//     task, until the target acknowledges it. It runs detached from the
//     caller's cancellation, so a caller that gives up does not lose the
//     records of work already done. A record that waits is listed in the
//     response's bookkeeping_pending; one the target refused in
//     bookkeeping_errors. Neither fails the task.
//   - Legacy mode (the organization has no accounts in service) makes exactly
//     one attempt: there is no other account to fail over to. It runs on
//     the organization's own default key when SelectAccount hands one out
//     (account name and legacy_key "default"), else on the environment key
//     FallbackKey ("environment"), so an organization is billed to the
//     operator only when it has no key of its own. A default key the
//     upstream rejected (DEFAULT_KEY_INVALID) fails the task unless
//     EnvironmentFallbackOnInvalidKey. The environment key is also used
//     when the AccountPool cannot be reached at all (Unavailable), unless
//     FailWhenPoolUnavailable; any other answer of the pool, a slow
//     selection included, fails the task. The default key is a secret like
//     a lease's key: it lives in a secret.String and is never logged,
//     traced, stored or put in an error.
//   - Errors that are not an account's fault (the request could not be
//     sent, the upstream said the request is invalid) are not retried on
//     another account and do not count against the account's breaker.
package delegate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/categories"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/outbox"
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
	// FallbackKey is the environment key of legacy mode (ANTHROPIC_API_KEY),
	// for organizations with neither accounts in service nor a default key
	// of their own; zero means those get FailedPrecondition.
	FallbackKey secret.String
	// EnvironmentFallbackOnInvalidKey runs an organization whose default
	// key the upstream rejected on FallbackKey. Off by default: a broken
	// customer key then fails the task (ErrDefaultKeyInvalid) instead of
	// silently billing the operator until the customer sets it again.
	EnvironmentFallbackOnInvalidKey bool
	// FailWhenPoolUnavailable makes an unreachable AccountPool fail the task
	// with Unavailable instead of running it on FallbackKey.
	FailWhenPoolUnavailable bool
	// PoolConnected reports whether the client has a connection to the
	// AccountPool: an Unavailable from a connected pool is the pool's own
	// answer, not its absence, and never falls back to FallbackKey.
	// Default: never connected (every Unavailable is an absence).
	PoolConnected func() bool
	// AttemptTimeout bounds one model call; default 10m. The caller's
	// deadline always applies as well.
	AttemptTimeout time.Duration
	// SelectTimeout bounds one SelectAccount call beyond the wait it asks
	// the pool for (see MaxWait); default 10s. A selection that takes
	// longer fails the task with ErrSelectionTimeout (it never falls back
	// to FallbackKey: the pool is up, only slow).
	SelectTimeout time.Duration
	// BookkeepingTimeout bounds TrackStart and each delivery attempt of a
	// bookkeeping record; default 10s.
	BookkeepingTimeout time.Duration
	// OutboxDir, when set, keeps bookkeeping records on disk (fsync) until
	// delivered, so a restarted orchestrator delivers what a killed one
	// left; empty keeps them in memory, delivered across outages of the
	// other services but lost with the process.
	OutboxDir string
	// OutboxMaxRecords bounds the records waiting for delivery; a task
	// that arrives when it is reached fails with Unavailable before it
	// runs. Default 100,000.
	OutboxMaxRecords int
	// MaxPromptBytes bounds the prompt; default 512 KiB.
	MaxPromptBytes int
	// MaxWait bounds how long one task waits, in all, for an account to free
	// up when every account is busy; default 10s, negative disables
	// waiting. The pool does the waiting (SelectAccountRequest.max_wait);
	// the caller's deadline always applies as well.
	MaxWait time.Duration
	// ProgressInterval is the least time between two progress events of an
	// attempt whose answer is streaming in; default 5s. The interval doubles
	// after every progressEventsPerStep events, so that one long stream
	// cannot exhaust the activity's progress-event cap.
	ProgressInterval time.Duration
	// Sleep waits for d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a random duration in [0, d); tests replace it.
	Jitter func(d time.Duration) time.Duration
	// Now is the clock for progress events; tests replace it. Default
	// time.Now.
	Now func() time.Time
	// Meter receives the task and outbox metrics (telemetry.go); nil for
	// none.
	Meter metric.MeterProvider
	// Limiter admits each task of an organization before anything of it
	// runs (limits.Limiter: concurrency and rate per organization); a
	// refused task returns its *LimitError having selected no account and
	// started no activity. Nil admits every task.
	Limiter TaskLimiter
}

// TaskLimiter admits tasks per organization; *limits.Limiter is the real
// one. release is called once when the admitted task ends.
type TaskLimiter interface {
	Acquire(ctx context.Context, orgID string) (release func(), err error)
}

// LimitError is a task refused by the Limiter: which limit, its value and
// when to retry.
type LimitError = limits.Error

// Limits and names of the flow.
const (
	maxSkills         = 32
	defaultPromptSize = 512 << 10
	agentType         = "ai_executor"
	agentName         = "built-in"
)

// Runner runs tasks. It is safe for concurrent use. Its outbox delivers
// bookkeeping in the background while RunOutbox runs; Drain and Close end
// it.
type Runner struct {
	cfg      Config
	pool     accountpoolv1.AccountPoolServiceClient
	activity activityv1.ActivityServiceClient
	exec     Executor
	logger   *slog.Logger
	tracer   trace.Tracer
	outbox   *outbox.Outbox
	metrics  taskMetrics
	// deadStarts are this process's starts that did not run (trackStart).
	deadStarts startTokens
}

// New returns a Runner over the two services' clients and an executor. It
// opens the outbox (and finds in it what an earlier process left).
func New(cfg Config, pool accountpoolv1.AccountPoolServiceClient, activity activityv1.ActivityServiceClient, exec Executor, logger *slog.Logger, tp trace.TracerProvider) (*Runner, error) {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Minute
	}
	if cfg.SelectTimeout <= 0 {
		cfg.SelectTimeout = 10 * time.Second
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
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = 5 * time.Second
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PoolConnected == nil {
		cfg.PoolConnected = func() bool { return false }
	}
	if cfg.Skills == nil {
		cfg.Skills, _ = skills.Load("")
	}
	if cfg.Categories.IsZero() {
		cfg.Categories = categories.Default()
	}
	r := &Runner{cfg: cfg, pool: pool, activity: activity, exec: exec, logger: logger,
		tracer: tp.Tracer("github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate")}
	ob, err := outbox.Open(outbox.Config{
		Dir: cfg.OutboxDir, MaxRecords: cfg.OutboxMaxRecords, Deliver: r.deliver, Retryable: retryable,
		AttemptTimeout: cfg.BookkeepingTimeout, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	r.outbox = ob
	r.metrics = newTaskMetrics(cfg.Meter, ob)
	return r, nil
}

// RunOutbox delivers pending bookkeeping until ctx ends.
func (r *Runner) RunOutbox(ctx context.Context) { r.outbox.Run(ctx) }

// Drain refuses new tasks and waits until the outbox has delivered every
// record or ctx ends (RunOutbox must still run). It returns the records
// left: kept on disk with OutboxDir, lost without.
func (r *Runner) Drain(ctx context.Context) int { return r.outbox.Drain(ctx) }

// Close releases the outbox.
func (r *Runner) Close() error { return r.outbox.Close() }

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

// Errors of Run other than InvalidArgumentError and PoolError. The api
// package maps each to its gRPC code.
var (
	// ErrNoAccounts: the organization has no accounts in service and no
	// default key, and no fallback key is configured.
	ErrNoAccounts = errors.New("the organization has no accounts in service and no default key, and the orchestrator has no fallback ANTHROPIC_API_KEY")
	// ErrDefaultKeyInvalid: the organization has no accounts in service
	// and its default key was rejected by the upstream (401, 402 or 403);
	// falling back to the environment key is off
	// (EnvironmentFallbackOnInvalidKey) or there is none. Nothing ran.
	ErrDefaultKeyInvalid = errors.New("the organization has no accounts in service and its default key was rejected by the upstream; set it again with AccountPoolService.SetDefaultKey")
	// ErrInProgress: a task with the same request_id is still running.
	ErrInProgress = errors.New("a task with this request_id is still running")
	// ErrRequestIDReused: the request_id was used before for a different task.
	ErrRequestIDReused = errors.New("request_id was already used for a different task")
	// ErrPoolUnavailable: the AccountPool could not be reached and falling
	// back to the environment key is off (or there is none).
	ErrPoolUnavailable = errors.New("the account pool is unavailable")
	// ErrSelectionTimeout: the AccountPool did not answer SelectAccount
	// within SelectTimeout. Nothing ran.
	ErrSelectionTimeout = errors.New("selecting an account timed out: the account pool is reachable but did not answer in time")
	// ErrBookkeepingUnavailable: the outbox is full (AccountPool or
	// Activity has been down for long) or the orchestrator is shutting
	// down. Nothing ran.
	ErrBookkeepingUnavailable = errors.New("the orchestrator cannot take tasks now")
	// ErrActivityUnavailable: the task has a request_id and its activity,
	// which guards against running it twice, could not be started. Nothing
	// ran; retrying with the same request_id is safe.
	ErrActivityUnavailable = errors.New("the activity service is unavailable, so a task with a request_id cannot be started safely")
)

// InvalidArgumentError says which request field is wrong and how.
type InvalidArgumentError = validate.FieldError

// PoolError is an answer of the AccountPool that is neither a selection nor
// one of the errors the flow handles (no accounts, busy, unreachable): the
// pool refused the selection. Code is the pool's gRPC code, kept so the
// caller sees the same class of error.
type PoolError struct {
	Code    int
	Message string
}

func (e *PoolError) Error() string { return "the account pool refused the selection: " + e.Message }

// Run executes one task. The returned response carries the task's outcome
// (SUCCESS, FAILED, RATE_LIMITED); an error means the task could not be run
// at all (*InvalidArgumentError, *LimitError, *PoolError, ErrNoAccounts,
// ErrDefaultKeyInvalid, ErrInProgress,
// ErrRequestIDReused, ErrPoolUnavailable, ErrSelectionTimeout,
// ErrActivityUnavailable, or the caller's context error).
func (r *Runner) Run(ctx context.Context, t Task) (*orchestratorv1.DelegateTaskResponse, error) {
	return r.Stream(ctx, t, nil)
}

// Stream is Run that also hands observe every event of the task as it
// happens (nil observes nothing). observe runs on the task's goroutine and
// must not block for long: a slow observer slows the upstream read.
func (r *Runner) Stream(ctx context.Context, t Task, observe Observer) (*orchestratorv1.DelegateTaskResponse, error) {
	p, err := r.prepare(t)
	if err != nil {
		return nil, err
	}
	// The organization's limits come before anything with a cost: a
	// refused task leases nothing, writes no activity and no record.
	if r.cfg.Limiter != nil {
		release, err := r.cfg.Limiter.Acquire(ctx, p.OrganizationID)
		if err != nil {
			var le *LimitError
			if errors.As(err, &le) {
				trace.SpanFromContext(ctx).AddEvent("task refused by an organization limit", trace.WithAttributes(
					attrOrganization.String(p.OrganizationID), attribute.String("switchyard.limit", le.Limit),
					attribute.Int64("switchyard.retry_after_ms", le.RetryAfter.Milliseconds())))
			}
			return nil, err
		}
		defer release()
	}
	if err := r.outbox.Admit(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBookkeepingUnavailable, err)
	}
	run := &taskRun{r: r, p: p, start: time.Now(), observe: observe, startToken: uuid.NewString()}
	first := run.prefetchSelection(ctx)
	if replay, err := run.trackStart(ctx); replay != nil || err != nil {
		run.discardPrefetch(ctx, first)
		run.report(ctx, replay, err)
		return replay, err
	}
	runErr := run.attempts(ctx, first)
	resp := run.response()
	run.trackComplete(ctx, resp, runErr)
	resp.Metadata.BookkeepingErrors = run.bookkeepingErrors
	resp.Metadata.BookkeepingPending = run.bookkeepingPending
	run.report(ctx, resp, runErr)
	if runErr != nil {
		return nil, runErr
	}
	return resp, nil
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
