package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// RecordRequest is what the upstream answered to one attempt.
type RecordRequest struct {
	OrgID     string
	LeaseID   string
	AccountID string
	// RequestID and Attempt identify the attempt; recording one twice
	// changes nothing the second time.
	RequestID         string
	Attempt           int32
	Outcome           store.Outcome
	Model             string
	Category          string
	SessionID         string
	UserID            string
	Tokens            Tokens
	Headers           RateLimitHeaders
	HTTPStatus        int32
	ErrorType         string
	UpstreamRequestID string
	DurationMS        int64
	// LegacyKey, for a legacy-mode call (no AccountID), names the key it
	// ran on; it is ignored otherwise.
	LegacyKey LegacyKey
	// DefaultKeyGeneration is, with LegacyKeyOrganizationDefault, the
	// DefaultKey.Generation the call ran on; empty from an older caller.
	DefaultKeyGeneration string
}

// RecordResult is what Record did.
type RecordResult struct {
	CostUSD float64
	// UsageID is the ledger row, empty for rate- and spend-limited attempts.
	UsageID string
	// Duplicate is true when the attempt was already recorded and nothing
	// changed.
	Duplicate bool
}

// writesRow reports whether an outcome gets a ledger row: a 429 is no model
// call, so it updates capacity but bills nothing.
func writesRow(o store.Outcome) bool {
	return o != store.OutcomeRateLimited && o != store.OutcomeSpendLimited
}

// Record settles a lease with what the upstream answered.
//
// A request without an account id records a legacy-mode call: it writes
// the ledger row (account name DefaultKeyAccountName or
// EnvironmentKeyAccountName, by LegacyKey), since no pool account, lease,
// bucket or breaker was involved, and an AUTH_FAILED outcome on the
// organization's default key marks that key invalid (recordLegacy).
//
// The ledger insert comes first; the row is keyed by the upstream call
// (request id, attempt, upstream request id), so a retried RecordRequest
// finds its row and a second real call under the same attempt gets one of
// its own. The lease is the gate for everything else: it settles once, so
// a retried RecordRequest settles capacity and counts a breaker outcome
// exactly once — also when the first call wrote the row but stopped
// before settling. Rate-limited attempts write no row; for them, too, the
// lease dedupes.
//
// Errors: store.ErrNotFound when the account is not in the organization
// (an account deleted while a lease was in flight is still found for two
// lease timeouts); store errors from the ledger insert or the INVALID
// status write.
func (p *Pool) Record(ctx context.Context, r RecordRequest) (RecordResult, error) {
	now := p.now()
	if r.AccountID == "" {
		return p.recordLegacy(ctx, r, now)
	}
	v, err := p.view(ctx, r.OrgID)
	if err != nil {
		return RecordResult{}, err
	}
	a, found := v.account(r.AccountID)
	deleted := false
	if !found {
		g, ok := v.gone[r.AccountID]
		if !ok {
			return RecordResult{}, fmt.Errorf("account %s: %w", r.AccountID, store.ErrNotFound)
		}
		a, deleted = g.account, true
	}

	res, err := p.insertUsage(ctx, r, a.ID, a.Name, now)
	if err != nil {
		return res, err
	}

	// A repeated RecordRequest (its first answer was lost, or the first
	// write's outcome was unknown) finds its row already written, but the
	// first call may have stopped before settling the lease: settle it now.
	// Settle settles a lease once, so capacity and the breaker still see
	// each call exactly once.
	//
	// Without a lease (expired and forgotten, or from before a restart)
	// the model's family and the account's current quota key are the best
	// guess at where the call was metered.
	family := FamilyOf(r.Model)
	st := &settlement{
		p: p, view: v, account: a, family: family, deleted: deleted, duplicate: res.Duplicate,
		// Cache reads do not count toward the input-tokens-per-minute
		// limit; cache writes do.
		used:    Amount{Requests: 1, Input: r.Tokens.Input + r.Tokens.CacheCreation, Output: r.Tokens.Output},
		headers: r.Headers, outcome: r.Outcome,
		// The ledger insert may have waited for its group commit: capacity
		// is settled as of now, not as of the call's arrival here.
		now: p.now(),
	}
	err = p.state.Settle(ctx, r.OrgID, r.AccountID, r.LeaseID, ref(a, family), st.settle)
	if err != nil {
		return RecordResult{}, fmt.Errorf("settling lease %s on account %s: %w", r.LeaseID, a.ID, err)
	}
	if st.was != LeaseSettled {
		p.changes.Notify(r.OrgID)
	}
	if st.was == LeaseOpen {
		p.countLeases(ctx, -1)
	}
	if st.was == LeaseSettled {
		res.Duplicate = res.Duplicate || !writesRow(r.Outcome)
		return res, nil
	}
	if res.Duplicate && st.was == LeaseUnknown {
		return res, nil
	}
	if deleted {
		return res, nil
	}
	if r.SessionID != "" && (r.Outcome == store.OutcomeRateLimited || r.Outcome == store.OutcomeSpendLimited) {
		// A session pinned to an account that answered 429 moves on: its
		// next call goes wherever there is capacity and is pinned there.
		if err := p.state.UnpinSession(ctx, r.OrgID, r.SessionID, a.ID); err != nil {
			return RecordResult{}, fmt.Errorf("unpinning session from account %s: %w", a.ID, err)
		}
	}
	if r.Outcome == store.OutcomeAuthFailed {
		if err := p.markInvalid(ctx, r.OrgID, a.ID, r.HTTPStatus); err != nil {
			return RecordResult{}, err
		}
	}
	return res, nil
}

// settlement is what RecordRequest does to an account's live records, as
// one value rather than a closure over the request, which would escape to
// the heap field by field.
type settlement struct {
	p         *Pool
	view      *orgView
	account   *account
	family    Family // the model's, for a lease that is unknown
	deleted   bool   // the account is deleted: only its group's records change
	duplicate bool   // the ledger row was already there
	used      Amount
	headers   RateLimitHeaders
	outcome   store.Outcome
	now       time.Time
	// was is the lease's status before the settle, set by settle.
	was LeaseStatus
}

// settle is the State.Settle callback. It may run more than once (an
// optimistic State retries on conflict), so it only computes from its
// arguments and records what it saw in was.
func (s *settlement) settle(lease Lease, was LeaseStatus, l *Live) error {
	s.was = was
	a := s.account
	switch {
	case was == LeaseSettled:
		return nil
	case s.duplicate && was == LeaseUnknown:
		// Nothing tells whether this call was already charged; the row
		// says it was recorded, so it was.
		return nil
	case s.deleted && (a.QuotaGroup == "" || was == LeaseUnknown):
		// Its own live records went with it; only a quota group's shared
		// ones still need this call's usage.
		return nil
	}
	// The headers are at most as old as the call, or the lease timeout
	// when the lease is unknown.
	family, age := s.family, s.p.leaseTimeout
	if was != LeaseUnknown {
		family, age = lease.Ref.Family, s.now.Sub(lease.IssueTime)
	}
	lim, knownTier := s.view.meteredLimits(a, family, s.p.tiers)
	// The share of the state that runs this (see scan.useShare).
	share := s.p.state.Share()
	lim = lim.scaled(share)
	headers := s.headers
	if share < 1 {
		headers = headers.scaled(share)
	}
	if s.deleted {
		lim, knownTier = lease.Limits, lease.Limits.valid()
	}
	if knownTier {
		if was == LeaseOpen {
			l.Buckets.settle(lim, lease.Reserved, s.used, s.now)
		} else {
			// The reservation is gone (released when the lease expired,
			// or never known here); the upstream still metered the call.
			l.Buckets.charge(lim, s.used, s.now)
		}
		l.Buckets.calibrate(lim, headers, age, s.now)
	}
	coolDown(&l.Cooldown, s.outcome, s.headers, s.now)
	if !s.deleted {
		// A deleted account's breaker record stays dropped.
		probe := ""
		if lease.Probe {
			probe = lease.ID
		}
		s.p.breaker.observe(&l.Breaker, probe, s.outcome, s.now)
	}
	return nil
}

// coolDown applies the cool-down an outcome asks for; a later deadline
// always wins over an earlier one, so concurrent 429s cannot shorten it.
func coolDown(c *Cooldown, o store.Outcome, h RateLimitHeaders, now time.Time) {
	if !c.Until.After(now) {
		*c = Cooldown{}
	}
	extend := func(until time.Time, reason CooldownReason) {
		if until.After(c.Until) {
			c.Until, c.Reason = until, reason
		}
	}
	switch o {
	case store.OutcomeRateLimited:
		if h.RetryAfter > 0 {
			extend(now.Add(h.RetryAfter), CooldownRateLimited)
		} else {
			extend(now.Add(defaultRateLimitCooldown), CooldownRateLimited)
		}
	case store.OutcomeSpendLimited:
		until := now.Add(h.RetryAfter)
		if r := h.latestReset(); r.After(until) {
			until = r
		}
		if !until.After(now) {
			until = now.Add(defaultSpendLimitCooldown)
		}
		extend(until, CooldownSpendLimited)
	default:
		if h.RetryAfter > 0 {
			extend(now.Add(h.RetryAfter), CooldownRetryAfter)
		}
	}
}

// markInvalid takes an account whose key the upstream rejected out of
// selection, durably: the status goes through the store, so a restart does
// not bring the key back. Only ACTIVE accounts change; an admin's DISABLED
// stays.
func (p *Pool) markInvalid(ctx context.Context, orgID, id string, httpStatus int32) error {
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		a, ok := v.account(id)
		if !ok || a.Status != store.StatusActive {
			return v, nil
		}
		invalid := store.StatusInvalid
		updated, err := p.store.UpdateAccount(ctx, orgID, id, store.AccountUpdate{Status: &invalid, UpdateTime: store.Normalize(p.now())})
		if err != nil {
			return nil, fmt.Errorf("marking account %s invalid: %w", id, err)
		}
		p.logger.WarnContext(ctx, "upstream rejected the account's key; account marked invalid until an admin sets it active",
			"organization_id", orgID, "account_id", id, "account_name", a.Name, "http_status", httpStatus)
		return v.with(updated), nil
	})
	return err
}

// insertUsage writes the attempt's ledger row when its outcome has one.
// res.Duplicate is true when the row was already there (the same upstream
// call was recorded before); res is then the stored row's.
func (p *Pool) insertUsage(ctx context.Context, r RecordRequest, accountID, accountName string, now time.Time) (res RecordResult, err error) {
	res = RecordResult{CostUSD: p.pricing.Cost(r.Model, r.Tokens)}
	if !writesRow(r.Outcome) {
		return res, nil
	}
	row, err := p.store.InsertUsage(ctx, store.UsageRecord{
		ID:                  newID(),
		OrganizationID:      r.OrgID,
		AccountID:           accountID,
		AccountName:         accountName,
		RequestID:           r.RequestID,
		Attempt:             r.Attempt,
		Outcome:             r.Outcome,
		Model:               r.Model,
		Category:            r.Category,
		SessionID:           r.SessionID,
		UserID:              r.UserID,
		InputTokens:         r.Tokens.Input,
		OutputTokens:        r.Tokens.Output,
		CacheReadTokens:     r.Tokens.CacheRead,
		CacheCreationTokens: r.Tokens.CacheCreation,
		CostUSD:             res.CostUSD,
		HTTPStatus:          r.HTTPStatus,
		ErrorType:           r.ErrorType,
		UpstreamRequestID:   r.UpstreamRequestID,
		DurationMS:          r.DurationMS,
		CreateTime:          store.Normalize(now),
	})
	if errors.Is(err, store.ErrDuplicate) {
		return RecordResult{CostUSD: row.CostUSD, UsageID: row.ID, Duplicate: true}, nil
	}
	if err != nil {
		return RecordResult{}, fmt.Errorf("writing usage row: %w", err)
	}
	res.UsageID = row.ID
	return res, nil
}
