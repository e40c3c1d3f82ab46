package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// SelectRequest asks for one account for one model call.
type SelectRequest struct {
	OrgID string
	// Model decides the capacity bucket (its family).
	Model                 string
	EstimatedInputTokens  int64
	EstimatedOutputTokens int64
	// Excluded accounts are never selected (the task already tried them).
	Excluded []string
	// Allowed, when not empty, are the only candidates.
	Allowed []string
	// Strategy overrides the organization's setting; empty uses it.
	Strategy store.Strategy
}

// Candidate explains one account's part in a selection.
type Candidate struct {
	AccountID   string
	AccountName string
	Chosen      bool
	// SkipReason is empty for eligible accounts.
	SkipReason string
	// Headroom is the fraction (0..1) of the tightest bucket left after the
	// reservation.
	Headroom float64
}

// Selection is a granted lease: the chosen account, its decrypted key, and
// the explanation.
type Selection struct {
	LeaseID     string
	AccountID   string
	AccountName string
	Tier        string
	APIKey      secret.String
	ExpireTime  time.Time
	Strategy    store.Strategy
	Candidates  []Candidate
}

// verdict is what one account's live state says about one request.
type verdict struct {
	ok       bool
	probe    bool // the reservation would be the half-open breaker's probe
	reason   string
	headroom float64
	freeAt   time.Time // when every blocker has lifted
}

func stamp(t, now time.Time) string {
	return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Millisecond))
}

func (p *Pool) judge(l Live, lim Limits, amt Amount, now time.Time) verdict {
	v := verdict{ok: true}
	var reasons []string
	block := func(reason string, until time.Time) {
		v.ok = false
		reasons = append(reasons, reason)
		if until.After(v.freeAt) {
			v.freeAt = until
		}
	}
	if c := l.Cooldown; c.Until.After(now) {
		if c.Reason == CooldownSpendLimited {
			block("spend limit reached until "+stamp(c.Until, now), c.Until)
		} else {
			block(fmt.Sprintf("cooling down until %s: %s", stamp(c.Until, now), c.Reason), c.Until)
		}
	}
	switch p.breaker.state(l.Breaker, now) {
	case BreakerOpen:
		block("breaker open until "+stamp(l.Breaker.OpenUntil, now), l.Breaker.OpenUntil)
	case BreakerHalfOpen:
		if probeInFlight(l.Breaker, now) {
			block("breaker half-open, its one probe is in flight until "+stamp(l.Breaker.ProbeUntil, now), l.Breaker.ProbeUntil)
		} else {
			v.probe = true
		}
	}
	c := l.Buckets.check(lim, amt, now)
	v.headroom = c.headroom
	if !c.fits {
		block("no headroom for the estimate: "+c.short, now.Add(c.wait))
	}
	v.reason = strings.Join(reasons, "; ")
	return v
}

// Select picks an account for one model call and reserves the estimate on
// it. It reads only the in-memory view and the live state (the store only
// on an organization's first use).
//
// Errors: ErrNoAccounts when the organization has no account ACTIVE or
// INVALID; *ExhaustedError when none of them can take the request now;
// *FieldError for an unknown strategy.
func (p *Pool) Select(ctx context.Context, r SelectRequest) (Selection, error) {
	if r.Strategy != "" && !validStrategy(r.Strategy) {
		return Selection{}, &FieldError{Field: "strategy", Message: fmt.Sprintf("unknown strategy %q; use %q or %q", r.Strategy, store.StrategyLeastLoaded, store.StrategyRoundRobin)}
	}
	if err := p.expireLeases(ctx); err != nil {
		return Selection{}, err
	}
	v, err := p.view(ctx, r.OrgID)
	if err != nil {
		return Selection{}, err
	}
	if !slices.ContainsFunc(v.accounts, inService) {
		return Selection{}, ErrNoAccounts
	}
	strategy := cmp.Or(r.Strategy, v.settings.SelectionStrategy, store.StrategyLeastLoaded)
	now := p.now()
	family := FamilyOf(r.Model)
	amt := Amount{Requests: 1, Input: max(0, r.EstimatedInputTokens), Output: max(0, r.EstimatedOutputTokens)}
	excluded, allowed := set(r.Excluded), set(r.Allowed)

	cands := make([]Candidate, len(v.accounts))
	type option struct {
		i        int
		a        *account
		ref      Ref
		lim      Limits
		headroom float64
	}
	opts := make([]option, 0, len(v.accounts))
	refs := make([]Ref, 0, len(v.accounts))
	for i, a := range v.accounts {
		cands[i] = Candidate{AccountID: a.ID, AccountName: a.Name}
		lim, knownTier := p.tiers.Limits(a.Tier, family)
		switch {
		case excluded[a.ID]:
			cands[i].SkipReason = "excluded"
		case len(allowed) > 0 && !allowed[a.ID]:
			cands[i].SkipReason = "not allowed"
		case a.Status == store.StatusDisabled:
			cands[i].SkipReason = "disabled"
		case a.Status == store.StatusInvalid:
			cands[i].SkipReason = "invalid: the upstream rejected its key; an admin must set it ACTIVE or rotate the key"
		case !knownTier:
			cands[i].SkipReason = fmt.Sprintf("tier %q is not in the limits table", a.Tier)
		default:
			rf := ref(a, family)
			opts = append(opts, option{i: i, a: a, ref: rf, lim: lim})
			refs = append(refs, rf)
		}
	}

	var freeAt time.Time
	noteFree := func(t time.Time) {
		if !t.IsZero() && (freeAt.IsZero() || t.Before(freeAt)) {
			freeAt = t
		}
	}
	lives, err := p.state.Snapshot(ctx, refs)
	if err != nil {
		return Selection{}, fmt.Errorf("reading live state: %w", err)
	}
	eligible := opts[:0]
	for j, o := range opts {
		vd := p.judge(lives[j], o.lim, amt, now)
		cands[o.i].Headroom = vd.headroom
		if !vd.ok {
			cands[o.i].SkipReason = vd.reason
			noteFree(vd.freeAt)
			continue
		}
		o.headroom = vd.headroom
		eligible = append(eligible, o)
	}

	switch strategy {
	case store.StrategyRoundRobin:
		if len(eligible) > 1 {
			c, err := p.state.NextCursor(ctx, r.OrgID)
			if err != nil {
				return Selection{}, fmt.Errorf("advancing round-robin cursor: %w", err)
			}
			k := int(c % uint64(len(eligible)))
			eligible = slices.Concat(eligible[k:], eligible[:k])
		}
	default:
		// Most headroom first; ties keep the view's order (name, then id),
		// so the choice is deterministic.
		slices.SortStableFunc(eligible, func(x, y option) int { return cmp.Compare(y.headroom, x.headroom) })
	}

	for _, o := range eligible {
		leaseID := uuid.NewString()
		expire := now.Add(p.leaseTimeout)
		var vd verdict
		err := p.state.Update(ctx, o.ref, func(l *Live) error {
			vd = p.judge(*l, o.lim, amt, now)
			if !vd.ok {
				return errNotAdmitted
			}
			l.Buckets.take(o.lim, amt, now)
			if vd.probe {
				l.Breaker.ProbeLease, l.Breaker.ProbeUntil = leaseID, expire
			}
			return nil
		})
		if errors.Is(err, errNotAdmitted) {
			// Another selection got there first.
			cands[o.i].SkipReason, cands[o.i].Headroom = vd.reason, vd.headroom
			noteFree(vd.freeAt)
			continue
		}
		if err != nil {
			return Selection{}, fmt.Errorf("reserving capacity on account %s: %w", o.a.ID, err)
		}
		lease := Lease{ID: leaseID, Ref: o.ref, AccountName: o.a.Name, Tier: o.a.Tier, Reserved: amt, Probe: vd.probe, IssueTime: now, ExpireTime: expire}
		key, err := p.keys.Decrypt(o.a.KeyCiphertext, o.a.OrganizationID, o.a.ID)
		if err != nil {
			// A key that does not decrypt (a KEK version missing from the
			// keyring) is an operator problem; the other accounts can still
			// serve.
			p.logger.ErrorContext(ctx, "account key cannot be decrypted; skipping the account",
				"organization_id", r.OrgID, "account_id", o.a.ID, "key_version", o.a.KeyVersion, "error", err)
			if rerr := p.release(ctx, lease, now); rerr != nil {
				return Selection{}, rerr
			}
			cands[o.i].SkipReason = fmt.Sprintf("key cannot be decrypted (key version %d); check the keyring", o.a.KeyVersion)
			continue
		}
		if err := p.state.AddLease(ctx, lease); err != nil {
			return Selection{}, fmt.Errorf("recording lease: %w", err)
		}
		cands[o.i].Chosen, cands[o.i].Headroom = true, vd.headroom
		return Selection{
			LeaseID:     leaseID,
			AccountID:   o.a.ID,
			AccountName: o.a.Name,
			Tier:        o.a.Tier,
			APIKey:      key,
			ExpireTime:  expire,
			Strategy:    strategy,
			Candidates:  cands,
		}, nil
	}

	e := &ExhaustedError{Candidates: cands}
	if !freeAt.IsZero() {
		e.RetryAfter = max(freeAt.Sub(now), time.Millisecond)
	}
	return Selection{}, e
}

// inService reports whether an account keeps its organization out of legacy
// mode; see ErrNoAccounts for why INVALID counts.
func inService(a *account) bool {
	return a.Status == store.StatusActive || a.Status == store.StatusInvalid
}

func set(ids []string) map[string]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// release gives a lease's reservation back and frees its probe slot.
func (p *Pool) release(ctx context.Context, l Lease, now time.Time) error {
	lim, known := p.tiers.Limits(l.Tier, l.Ref.Family)
	err := p.state.Update(ctx, l.Ref, func(live *Live) error {
		if known {
			live.Buckets.give(lim, l.Reserved, now)
		}
		if live.Breaker.ProbeLease == l.ID {
			live.Breaker.ProbeLease, live.Breaker.ProbeUntil = "", time.Time{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("releasing lease %s: %w", l.ID, err)
	}
	return nil
}

// expireLeases releases every lease that outlived LeaseTimeout unsettled.
// It runs at the start of every selection and account read, which are the
// only consumers of capacity, so no background goroutine is needed.
func (p *Pool) expireLeases(ctx context.Context) error {
	now := p.now()
	expired, err := p.state.ExpireLeases(ctx, now)
	if err != nil {
		return fmt.Errorf("expiring leases: %w", err)
	}
	for _, l := range expired {
		if err := p.release(ctx, l, now); err != nil {
			return err
		}
	}
	return nil
}
