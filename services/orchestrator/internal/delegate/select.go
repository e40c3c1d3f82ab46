package delegate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// selectionKind is what a selection decided.
type selectionKind int

const (
	// selectedAccount: run the attempt on lease.
	selectedAccount selectionKind = iota + 1
	// selectedLegacy: run the attempt in legacy mode on key, the
	// organization's default key or the environment key (legacyKey says
	// which).
	selectedLegacy
	// selectedNone: no account can take the task (reason; retryAfter when
	// one is expected to free up).
	selectedNone
	// selectedStop: the caller's context ended while selecting.
	selectedStop
)

// selection is the explicit result of choosing where an attempt runs.
type selection struct {
	kind  selectionKind
	lease *accountpoolv1.Lease
	// key and legacyKey are a legacy selection's key and its name
	// (legacyKeyDefault or legacyKeyEnvironment), which is also the
	// attempt's account name.
	key       secret.String
	legacyKey string
	// generation is the default key's DefaultKey.generation, sent back
	// with its RecordRequest so that a rejection marks only this key.
	generation string
	reason     string
	retryAfter time.Duration
}

// Names of the two keys legacy mode runs on: the attempt's account name,
// TaskMetadata.legacy_key and the activity's "legacy_key", and the usage
// row's account name the AccountPool writes for RecordRequest.legacy_key.
const (
	// legacyKeyDefault is the organization's own default key
	// (SetDefaultKey), handed out by SelectAccount.
	legacyKeyDefault = "default"
	// legacyKeyEnvironment is the operator's ANTHROPIC_API_KEY.
	legacyKeyEnvironment = "environment"
)

// The AccountPool's ErrorInfo on SelectAccount's NotFound: its domain, and
// the reason saying the organization has a default key the upstream
// rejected (reasonNoAccounts: it has none, as does a NotFound without
// ErrorInfo from an older pool).
const (
	poolErrorDomain         = "switchyard.accountpool"
	reasonDefaultKeyInvalid = "DEFAULT_KEY_INVALID"
	reasonNoAccounts        = "NO_ACCOUNTS"
)

// legacyKeyToProto is RecordRequest's legacy_key for a legacy attempt on
// the named key; UNSPECIFIED for an attempt on a lease.
func legacyKeyToProto(name string) accountpoolv1.LegacyKey {
	switch name {
	case legacyKeyDefault:
		return accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT
	case legacyKeyEnvironment:
		return accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT
	}
	return accountpoolv1.LegacyKey_LEGACY_KEY_UNSPECIFIED
}

// environmentSelection is legacy mode on the operator's environment key.
func (run *taskRun) environmentSelection() selection {
	return selection{kind: selectedLegacy, key: run.r.cfg.FallbackKey, legacyKey: legacyKeyEnvironment}
}

// notFoundReason is the AccountPool's ErrorInfo reason of a NotFound
// (reasonNoAccounts when it has none of its domain).
func notFoundReason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == poolErrorDomain && info.GetReason() != "" {
			return info.GetReason()
		}
	}
	return reasonNoAccounts
}

// selectAccount asks the pool for an account, waiting (within MaxWait and
// the caller's deadline) when every account is busy but one frees up soon.
// An error means the task cannot run at all; it is returned only before
// the first attempt, since a task that already made attempts ends with
// their outcome.
func (run *taskRun) selectAccount(ctx context.Context) (selection, error) {
	for {
		sel, err := run.selectOnce(ctx)
		if err != nil {
			if len(run.tried) > 0 {
				return selection{kind: selectedNone, reason: err.Error()}, nil
			}
			return selection{}, err
		}
		if sel.kind != selectedNone || !run.mayWait(ctx, sel.retryAfter) {
			return sel, nil
		}
		wait := sel.retryAfter + run.r.cfg.Jitter(sel.retryAfter/10+time.Millisecond)
		run.waited += wait
		if err := run.r.cfg.Sleep(ctx, wait); err != nil {
			return selection{kind: selectedStop}, nil
		}
	}
}

// prefetch is a task's first selection, made while its TrackStart
// commits.
type prefetch struct {
	done   chan struct{}
	cancel context.CancelFunc
	sel    selection
	err    error
}

// wait returns the selection once it is made.
func (pf *prefetch) wait() (selection, error) {
	<-pf.done
	pf.cancel()
	return pf.sel, pf.err
}

// prefetchSelection starts the task's first SelectAccount while TrackStart
// runs, so that the two round trips (and TrackStart's commit) overlap
// instead of adding up; nil when it must not. It must not for a task with a
// request_id: its TrackStart may find an earlier run to replay, and the
// lease would then have to be given back with a usage record of the same
// request id and attempt as that run's, which the ledger takes for a
// repeat. A task without one cannot be a replay, so its selection is used
// unless TrackStart refuses the task outright, which discardPrefetch
// covers.
//
// The selection writes only the run's selection state (selections,
// waited) and bookkeeping lists (under run.mu), which the task's goroutine
// reads only after wait. The lease is held while TrackStart runs, which
// during an Activity outage means up to the bookkeeping timeout before the
// task runs without an activity: capacity reserved a little longer, in
// exchange for a round trip less on every task.
func (run *taskRun) prefetchSelection(ctx context.Context) *prefetch {
	if run.p.idempotent {
		return nil
	}
	sctx, cancel := context.WithCancel(ctx)
	pf := &prefetch{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(pf.done)
		pf.sel, pf.err = run.selectAccount(sctx)
	}()
	return pf
}

// discardPrefetch waits for a prefetched selection the task will not use
// and gives its lease back to the pool the way an attempt that never left
// the process does (a usage record with no tokens, which releases the
// reservation and counts nothing against the account).
func (run *taskRun) discardPrefetch(ctx context.Context, pf *prefetch) {
	if pf == nil {
		return
	}
	// A selection still waiting for capacity is not worth finishing; one
	// that got its lease first is given back below.
	pf.cancel()
	sel, err := pf.wait()
	if err != nil || sel.kind != selectedAccount {
		return
	}
	a := attempt{number: 1, accountID: sel.lease.GetAccountId(), accountName: sel.lease.GetAccountName(),
		result: executor.Result{Outcome: executor.NotSent, ErrorMessage: "not sent: the task was refused before its first attempt"}}
	run.recordRequest(ctx, a, sel)
}

// waitBudget is how long the task may still wait for an account: what is
// left of MaxWait, and at most half of what is left before the caller's
// deadline, since an account granted at the deadline could not run the
// call (the upstream would be paid for an answer nobody receives).
func (run *taskRun) waitBudget(ctx context.Context) time.Duration {
	if run.r.cfg.MaxWait < 0 {
		return 0
	}
	left := run.r.cfg.MaxWait - run.waited
	if dl, ok := ctx.Deadline(); ok {
		left = min(left, time.Until(dl)/2)
	}
	return max(left, 0)
}

// mayWait reports whether the pool's answer "busy, free in retryAfter" is
// worth waiting for: within the wait budget and before the caller's
// deadline.
func (run *taskRun) mayWait(ctx context.Context, retryAfter time.Duration) bool {
	if retryAfter <= 0 || run.r.cfg.MaxWait < 0 || run.waited+retryAfter > run.r.cfg.MaxWait {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= retryAfter {
		return false
	}
	return true
}

// selectOnce makes one SelectAccount call and reads its answer:
//
//   - a lease: run on it;
//   - the organization's default key (it has no account in service; the
//     request always accepts it, so legacy mode costs no extra round
//     trip): legacy mode on that key before the first attempt, else no
//     further account;
//   - NotFound (no account in service, no default key handed out): before
//     the first attempt, legacy mode on the environment key, except that a
//     DEFAULT_KEY_INVALID reason (the organization's own key was rejected
//     by the upstream) fails the task with ErrDefaultKeyInvalid unless
//     EnvironmentFallbackOnInvalidKey: a broken customer key must not
//     silently bill the operator. After an attempt: no further account;
//   - ResourceExhausted: no account now, maybe one after RetryInfo;
//   - Unavailable (the pool cannot be reached): the fallback key, unless
//     FailWhenPoolUnavailable or there is none;
//   - DeadlineExceeded of our own SelectTimeout: ErrSelectionTimeout;
//   - anything else: the pool refused, the task fails with that error.
//
// The pool is asked to wait for an account itself, for what is left of the
// task's wait budget: it is woken when capacity is given back, so a busy
// pool costs a waiting task one call per attempt rather than a poll loop.
// A pool that answers at once anyway (an older one, or nothing to wait
// for) leaves selectAccount to sleep on its RetryInfo.
func (run *taskRun) selectOnce(ctx context.Context) (selection, error) {
	p := run.p
	budget := run.waitBudget(ctx)
	sctx, cancel := context.WithTimeout(ctx, run.r.cfg.SelectTimeout+budget)
	defer cancel()
	var maxWait *durationpb.Duration
	if budget > 0 {
		maxWait = durationpb.New(budget)
		start := time.Now()
		defer func() { run.waited += time.Since(start) }()
	}
	resp, err := run.r.pool.SelectAccount(sctx, &accountpoolv1.SelectAccountRequest{
		MaxWait:               maxWait,
		OrganizationId:        p.OrganizationID,
		Model:                 p.category.Model,
		EstimatedInputTokens:  p.estimate.InputTokens,
		EstimatedOutputTokens: p.estimate.OutputTokens,
		Category:              p.Category,
		ExcludedAccountIds:    run.excludedAccounts(),
		SessionId:             p.SessionID,
		RequestId:             p.RequestID,
		// Legacy mode is one attempt of a task, never a failover target:
		// only the first selection may be answered with the key.
		AcceptDefaultKey: len(run.tried) == 0,
	})
	if err == nil {
		run.selections = append(run.selections, selectionSummary(resp))
		switch {
		case resp.GetLease() != nil:
			return selection{kind: selectedAccount, lease: resp.GetLease()}, nil
		case resp.GetDefaultKey().GetApiKey() != "":
			if len(run.tried) > 0 {
				// Every account tried went out of service meanwhile; legacy
				// mode is one attempt of a task, not a failover target.
				return selection{kind: selectedNone, reason: "the organization has no other account in service"}, nil
			}
			return selection{kind: selectedLegacy, key: secret.New(resp.GetDefaultKey().GetApiKey()), legacyKey: legacyKeyDefault,
				generation: resp.GetDefaultKey().GetGeneration()}, nil
		}
		return selection{}, &PoolError{Code: int(codes.Internal), Message: "the pool answered without a lease or a default key"}
	}
	if ctx.Err() != nil {
		return selection{kind: selectedStop}, nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound:
		if len(run.tried) > 0 {
			return selection{kind: selectedNone, reason: "the organization has no other account in service"}, nil
		}
		if notFoundReason(st) == reasonDefaultKeyInvalid {
			if !run.r.cfg.EnvironmentFallbackOnInvalidKey || run.r.cfg.FallbackKey.IsZero() {
				return selection{}, ErrDefaultKeyInvalid
			}
			return run.environmentSelection(), nil
		}
		if run.r.cfg.FallbackKey.IsZero() {
			return selection{}, ErrNoAccounts
		}
		return run.environmentSelection(), nil
	case codes.ResourceExhausted:
		reason, retryAfter := exhaustedDetails(err)
		return selection{kind: selectedNone, reason: reason, retryAfter: retryAfter}, nil
	case codes.Unavailable:
		// The fallback key is for a pool that cannot be reached at all. A
		// pool that is connected and answers Unavailable (its database is
		// down, its schema not migrated) is up enough to say so, and its
		// organizations' calls must not be billed to the operator.
		if len(run.tried) == 0 && !run.r.cfg.FailWhenPoolUnavailable && !run.r.cfg.FallbackKey.IsZero() && !run.r.cfg.PoolConnected() {
			run.bookkeepingFailed(ctx, "account pool unavailable, running on the fallback key", err)
			return run.environmentSelection(), nil
		}
		if len(run.tried) > 0 {
			return selection{kind: selectedNone, reason: "the account pool became unavailable: " + st.Message()}, nil
		}
		return selection{}, fmt.Errorf("%w: %s", ErrPoolUnavailable, st.Message())
	case codes.DeadlineExceeded:
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			return selection{}, fmt.Errorf("%w (%s)", ErrSelectionTimeout, run.r.cfg.SelectTimeout)
		}
	}
	return selection{}, &PoolError{Code: int(st.Code()), Message: fmt.Sprintf("%s: %s", st.Code(), executor.Clean(st.Message(), 1024))}
}
