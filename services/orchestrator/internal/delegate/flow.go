package delegate

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

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
	r       *Runner
	p       *prepared
	start   time.Time
	observe Observer
	// startToken identifies this process's TrackStart of the task, so a
	// retried TrackStart can tell its own activity from an earlier run's.
	startToken string

	activityStarted bool
	legacy          bool
	// legacyKey names the key of a legacy-mode task (legacyKeyDefault or
	// legacyKeyEnvironment); empty for a task on pool accounts.
	legacyKey string
	tried     []attempt
	// exhausted says why no further account could be selected, and
	// retryAfter when the pool expects one to free up; set when the
	// selection that ended the attempts was exhausted.
	exhausted  string
	retryAfter time.Duration
	waited     time.Duration
	selections []any // one summary per selection, for the activity
	// voidText is the failed attempt whose text the client has seen and
	// must discard before the next attempt's text; 0 when none.
	voidText int

	mu                 sync.Mutex // guards the bookkeeping lists: progress is written concurrently
	bookkeepingErrors  []string
	bookkeepingPending []string
	progress           sync.WaitGroup // stream progress writes in flight
}

// attempts runs model calls until one succeeds, one fails in a way another
// account would not fix, the attempt budget is spent, no account is left, or
// the caller's context ends. It returns an error only when the task cannot
// run at all (see Run).
//
// first, when set, is the first selection, started while TrackStart ran
// (see prefetchSelection).
func (run *taskRun) attempts(ctx context.Context, first *prefetch) error {
	maxAttempts := run.r.cfg.MaxAttempts
	for n := 1; n <= maxAttempts; n++ {
		if ctx.Err() != nil {
			if n == 1 {
				run.discardPrefetch(ctx, first)
			}
			return nil
		}
		if n > 1 {
			run.trackProgress(ctx, n, maxAttempts)
			if err := run.r.cfg.Sleep(ctx, run.backoff(n)); err != nil {
				return nil
			}
		}
		var (
			sel selection
			err error
		)
		if n == 1 && first != nil {
			sel, err = first.wait()
		} else {
			sel, err = run.selectAccount(ctx)
		}
		if err != nil {
			return err
		}
		switch sel.kind {
		case selectedStop:
			return nil
		case selectedNone:
			run.exhausted, run.retryAfter = sel.reason, sel.retryAfter
			return nil
		case selectedLegacy:
			run.legacy, run.legacyKey = true, sel.legacyKey
		}
		a := run.call(ctx, n, sel)
		run.tried = append(run.tried, a)
		if a.result.Outcome == executor.Success || !a.result.Outcome.Retryable() || run.legacy {
			return nil
		}
	}
	return nil
}

// excludedAccounts is every account already tried: a task never runs on
// the same account twice.
func (run *taskRun) excludedAccounts() []string {
	var ids []string
	for _, a := range run.tried {
		if a.accountID != "" {
			ids = append(ids, a.accountID)
		}
	}
	return ids
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

// call makes attempt n on the selected account (or, in legacy mode, on the
// selection's key under its name), streams its text to the observer and
// the activity's progress, and settles it with the pool.
func (run *taskRun) call(ctx context.Context, n int, sel selection) attempt {
	p := run.p
	a := attempt{number: n, accountName: sel.legacyKey}
	key := sel.key
	if sel.lease != nil {
		a.accountID, a.accountName, key = sel.lease.GetAccountId(), sel.lease.GetAccountName(), secret.New(sel.lease.GetApiKey())
	}
	attrs := []attribute.KeyValue{
		attribute.Int("switchyard.attempt", n),
		attribute.String("switchyard.account_id", a.accountID),
		attribute.String("switchyard.account_name", a.accountName),
		attribute.Bool("switchyard.legacy_mode", run.legacy),
		attribute.String("gen_ai.request.model", p.category.Model),
	}
	if sel.legacyKey != "" {
		attrs = append(attrs, attribute.String("switchyard.legacy_key", sel.legacyKey))
	}
	ctx, span := run.r.tracer.Start(ctx, "delegate.attempt", trace.WithAttributes(attrs...))
	defer span.End()
	if run.voidText != 0 {
		run.emit(Event{Kind: EventRestart, Attempt: run.voidText})
		run.voidText = 0
	}
	run.emit(Event{Kind: EventAttemptStarted, Attempt: n, AccountID: a.accountID, AccountName: a.accountName, Legacy: run.legacy})

	meter := run.newStreamMeter(ctx, a)
	callCtx, cancel := context.WithTimeout(ctx, run.r.cfg.AttemptTimeout)
	a.result = run.r.exec.Call(callCtx, executor.Request{
		APIKey: key, Model: p.category.Model, MaxTokens: p.maxTokens,
		System: p.system, Prompt: p.Prompt, UserID: p.UserID,
		OnText: func(delta string) {
			run.emit(Event{Kind: EventText, Attempt: n, Text: delta})
			meter.add(delta)
		},
	})
	cancel()
	run.progress.Wait() // no stream progress may land after what follows
	if a.result.Outcome == executor.UpstreamError && ctx.Err() != nil {
		a.result.Outcome = executor.Cancelled // our timeout wrapper hid the caller's cancellation
	}
	span.SetAttributes(attribute.String("switchyard.outcome", a.result.Outcome.String()), attribute.Int("http.response.status_code", a.result.HTTPStatus))
	for _, w := range a.result.Warnings {
		span.AddEvent("upstream value clamped", trace.WithAttributes(attribute.String("warning", w)))
		run.r.logger.WarnContext(ctx, "upstream reported an implausible value; recorded clamped",
			"warning", w, "organization_id", p.OrganizationID, "request_id", p.RequestID, "attempt", n, "account_id", a.accountID)
	}
	if a.result.Outcome != executor.Success {
		span.SetStatus(codes.Error, a.result.Outcome.String())
		run.emit(Event{Kind: EventAttemptFailed, Attempt: n, Outcome: a.result.Outcome.String(), HTTPStatus: a.result.HTTPStatus, Reason: errorText(a.result)})
		if meter.chars > 0 {
			run.voidText = n // a next attempt first tells the client to discard it
		}
	}
	a.costUSD = run.recordRequest(ctx, a, sel)
	return a
}
