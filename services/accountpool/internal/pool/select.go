package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
	// SessionID keys the session-affinity strategy; the other strategies
	// ignore it.
	SessionID string
	// MaxWait is how long Select may wait for an account to free up when
	// none can take the request now; zero answers at once.
	MaxWait time.Duration
	// AcceptDefaultKey asks, when the organization has no account in
	// service, for its valid default key (Selection.DefaultKey) instead of
	// ErrNoAccounts.
	AcceptDefaultKey bool
	// Explain asks for Selection.Candidates. Formatting why each account
	// was skipped costs more than the selection itself, so callers that do
	// not show it leave this off. An ExhaustedError always explains.
	Explain bool
}

// Candidate explains one account's part in a selection.
type Candidate struct {
	AccountID   string
	AccountName string
	Chosen      bool
	// SkipReason is empty for eligible accounts. It names every reason
	// that applied: excluded, not allowed, disabled, invalid, a tier the
	// table does not know, a cool-down or spend limit (until when), an open
	// breaker or its probe in flight (until when), no headroom for the
	// estimate (which bucket, how short, how long to refill), or a key that
	// cannot be decrypted.
	SkipReason string
	// FreeAt is when every reason lifts by itself; zero for eligible
	// accounts and for reasons that need someone to act (excluded, not
	// allowed, disabled, invalid, unknown tier, undecryptable key).
	FreeAt time.Time
	// Headroom is the fraction (0..1) of the tightest bucket left after the
	// reservation.
	Headroom float64
}

// Selection is a granted lease: the chosen account, its decrypted key, and,
// when asked for, the explanation.
type Selection struct {
	LeaseID     string
	AccountID   string
	AccountName string
	Tier        string
	APIKey      secret.String
	ExpireTime  time.Time
	Strategy    store.Strategy
	// Headroom of the chosen account after the reservation (see Candidate).
	Headroom float64
	// Candidates explains the chosen account and at most MaxAlternatives
	// others, the best alternatives first chosen (see explain), listed in
	// name order; set only when SelectRequest.Explain is.
	Candidates []Candidate
	// Omitted counts the accounts Candidates leaves out, and OmittedReasons
	// counts them by skip reason (the Skip* keys; an account skipped for
	// several reasons counts under each). OmittedReasons is nil when
	// nothing was omitted.
	Omitted        int
	OmittedReasons map[string]int
	// DefaultKey, when set, is the organization's default key and every
	// other field is zero: no lease (see Pool.selectDefaultKey).
	DefaultKey *DefaultKey
}

// block is one reason live state keeps an account out of a selection.
type block uint8

const (
	blockCooldown block = 1 << iota
	blockSpend
	blockBreakerOpen
	blockProbeInFlight
	blockCapacity
)

// static is a reason that needs no live state: the request or the key rules
// the account out.
type static uint8

const (
	staticNone static = iota
	staticExcluded
	staticNotAllowed
	staticKey
)

// verdict is what one account's live state says about one request. It
// holds no strings: every selection judges every account, and only an
// explanation formats them (reason).
type verdict struct {
	static       static
	blocks       block
	probe        bool // the reservation would be the half-open breaker's probe
	headroom     float64
	freeAt       time.Time // when every block has lifted
	cooldown     Cooldown
	breakerUntil time.Time
	short        shortfall
}

func (v *verdict) ok() bool { return v.static == staticNone && v.blocks == 0 }

// waitable reports whether a blocked account is worth waiting for: it
// frees up by itself (a cool-down ends, capacity refills or is given back)
// and its breaker is closed. A breaker exists to fail fast, so an account
// behind an open breaker, or a half-open one whose probe is out, is never
// waited for; the next selection after it half-opens probes it.
func (v *verdict) waitable() bool {
	return v.static == staticNone && v.blocks&(blockBreakerOpen|blockProbeInFlight) == 0
}

func (v *verdict) block(b block, until time.Time) {
	v.blocks |= b
	if until.After(v.freeAt) {
		v.freeAt = until
	}
}

func stamp(t, now time.Time) string {
	return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), t.Sub(now).Round(time.Millisecond))
}

// reason formats the verdict for an operator.
func (v *verdict) reason(a *account, now time.Time) string {
	switch v.static {
	case staticExcluded:
		return "excluded"
	case staticNotAllowed:
		return "not allowed"
	case staticKey:
		return fmt.Sprintf("key cannot be decrypted (key version %d); check the keyring", a.KeyVersion)
	}
	var reasons []string
	if v.blocks&blockSpend != 0 {
		reasons = append(reasons, "spend limit reached until "+stamp(v.cooldown.Until, now))
	}
	if v.blocks&blockCooldown != 0 {
		reasons = append(reasons, fmt.Sprintf("cooling down until %s: %s", stamp(v.cooldown.Until, now), v.cooldown.Reason))
	}
	if v.blocks&blockBreakerOpen != 0 {
		reasons = append(reasons, "breaker open until "+stamp(v.breakerUntil, now))
	}
	if v.blocks&blockProbeInFlight != 0 {
		reasons = append(reasons, "breaker half-open, its one probe is in flight until "+stamp(v.breakerUntil, now))
	}
	if v.blocks&blockCapacity != 0 {
		reasons = append(reasons, "no headroom for the estimate: "+v.short.String())
	}
	return strings.Join(reasons, "; ")
}

// judge decides whether an account's live records admit amt now, writing
// its verdict to v. It is pure, so Update can run it again atomically
// before reserving. It runs for every account on every selection, so the
// common case (no cool-down, breaker closed, room in every bucket) costs
// two comparisons and the bucket arithmetic, and writes only the fields
// that case reads.
//
// nowNS is now in Unix nanoseconds, converted once per selection.
func (p *Pool) judge(v *verdict, r Records, lim *Limits, amt *Amount, now time.Time, nowNS int64) {
	v.static, v.blocks, v.probe, v.freeAt = staticNone, 0, false, time.Time{}
	if c := r.Cooldown; !c.Until.IsZero() && c.Until.After(now) {
		v.cooldown = *c
		if c.Reason == CooldownSpendLimited {
			v.block(blockSpend, c.Until)
		} else {
			v.block(blockCooldown, c.Until)
		}
	}
	if b := r.Breaker; b.Open {
		switch p.breaker.state(*b, now) {
		case BreakerOpen:
			v.breakerUntil = b.OpenUntil
			v.block(blockBreakerOpen, b.OpenUntil)
		case BreakerHalfOpen:
			if probeInFlight(*b, now) {
				v.breakerUntil = b.ProbeUntil
				v.block(blockProbeInFlight, b.ProbeUntil)
			} else {
				v.probe = true
			}
		}
	}
	var fits bool
	v.headroom, fits = r.Buckets.fits(lim, amt, nowNS)
	if !fits {
		wait, held, short := r.Buckets.shortfall(*lim, *amt, now)
		v.short = short
		if held {
			// Only settling calls free it; their leases bound when.
			wait = max(wait, p.leaseTimeout)
		}
		v.block(blockCapacity, now.Add(wait))
	}
}

// idSet is a request's excluded or allowed ids: a few, so a linear scan
// beats a map until there are many.
type idSet struct {
	ids []string
	m   map[string]struct{}
}

func newIDSet(ids []string) idSet {
	s := idSet{ids: ids}
	if len(ids) > 8 {
		s.m = make(map[string]struct{}, len(ids))
		for _, id := range ids {
			s.m[id] = struct{}{}
		}
	}
	return s
}

func (s idSet) empty() bool { return len(s.ids) == 0 }

func (s idSet) has(id string) bool {
	if s.m != nil {
		_, ok := s.m[id]
		return ok
	}
	return slices.Contains(s.ids, id)
}

// strategy is store.Strategy as a number, so the per-account scan compares
// integers rather than strings.
type strategy uint8

const (
	leastLoaded strategy = iota
	roundRobin
	weighted
	priority
	sessionAffinity
)

func strategyOf(s store.Strategy) strategy {
	switch s {
	case store.StrategyRoundRobin:
		return roundRobin
	case store.StrategyWeighted:
		return weighted
	case store.StrategyPriority:
		return priority
	case store.StrategySessionAffinity:
		return sessionAffinity
	default:
		return leastLoaded
	}
}

// scan is one selection's pass over an organization's selectable accounts:
// it judges each under State.Read and keeps only the best choice for the
// strategy (no sorting, no per-account allocation). Scans are pooled per
// Pool, so the verdicts buffer is reused from call to call.
type scan struct {
	p        *Pool
	fi       *familyIndex
	strategy strategy
	now      time.Time
	nowNS    int64
	amt      Amount
	excluded idSet
	allowed  idSet
	pinned   string // session-affinity: the session's account
	cursor   uint64 // round-robin: the organization's turn counter
	// verdicts[i] is the latest verdict on fi.accounts[i].
	verdicts []verdict
	// limits[i] is what fi.accounts[i] is metered by in this process:
	// fi.limits, or this process's share of them (State.Share).
	limits      []Limits
	scaled      []Limits // backs limits when scaled
	scaledShare float64  // the share scaled holds, 0 for none
	// lost are accounts out of this selection after a scan chose them:
	// they lost the reservation race, or their key did not decrypt.
	lost map[int]verdict
	// freeAt is the earliest time a blocked account worth waiting for
	// frees up; capacityBlocked is set when one of them lacks only
	// capacity, which a call settling may give back sooner.
	freeAt          time.Time
	capacityBlocked bool
	visit           func(int, Records)

	// Per-pass results.
	best         int // the most headroom (priority: the lowest number first)
	bestHeadroom float64
	bestPriority int32
	pinnedIdx    int
	eligible     []int32 // round-robin, weighted: every eligible account
	totalWeight  int64
}

func (p *Pool) newScan(fi *familyIndex, s store.Strategy, now time.Time, amt Amount, r *SelectRequest) *scan {
	sc, _ := p.scans.Get().(*scan)
	if sc == nil {
		sc = &scan{}
		sc.visit = sc.judgeOne
	}
	sc.p, sc.fi, sc.strategy, sc.now, sc.nowNS, sc.amt = p, fi, strategyOf(s), now, now.UnixNano(), amt
	sc.excluded, sc.allowed = newIDSet(r.Excluded), newIDSet(r.Allowed)
	sc.pinned, sc.cursor, sc.lost, sc.freeAt, sc.capacityBlocked = "", 0, nil, time.Time{}, false
	if cap(sc.verdicts) < len(fi.accounts) {
		sc.verdicts = make([]verdict, len(fi.accounts))
	}
	sc.verdicts = sc.verdicts[:len(fi.accounts)]
	sc.scaledShare = 0 // scaled is another selection's
	sc.useShare(p.state.Share())
	return sc
}

// useShare meters the scan by share of every limit. A State that can
// switch where it keeps its records (DegradingState) may switch between two
// calls, so the share is read again inside each callback, when the state
// that runs it is the one whose share it reports.
func (sc *scan) useShare(share float64) {
	if share >= 1 {
		sc.limits = sc.fi.limits
		return
	}
	if sc.scaledShare == share {
		sc.limits = sc.scaled
		return
	}
	sc.scaled = sc.scaled[:0]
	for _, l := range sc.fi.limits {
		sc.scaled = append(sc.scaled, l.scaled(share))
	}
	sc.limits, sc.scaledShare = sc.scaled, share
}

func (sc *scan) free() {
	p := sc.p
	sc.p, sc.fi, sc.lost, sc.limits = nil, nil, nil, nil
	sc.excluded, sc.allowed = idSet{}, idSet{}
	p.scans.Put(sc)
}

// noteBlocked takes a blocked account's verdict into the time the first
// account frees up, if it is worth waiting for.
func (sc *scan) noteBlocked(vd *verdict) {
	if !vd.waitable() {
		return
	}
	if vd.blocks == blockCapacity {
		sc.capacityBlocked = true
	}
	if t := vd.freeAt; !t.IsZero() && (sc.freeAt.IsZero() || t.Before(sc.freeAt)) {
		sc.freeAt = t
	}
}

// pass reads every selectable account's live state once and returns the
// strategy's choice, an index into fi.accounts, or -1 when none is
// eligible.
func (sc *scan) pass(ctx context.Context) (int, error) {
	sc.best, sc.pinnedIdx, sc.eligible, sc.totalWeight = -1, -1, sc.eligible[:0], 0
	if err := sc.p.state.Read(ctx, sc.fi.refSet(sc.p.state), sc.visit); err != nil {
		return -1, fmt.Errorf("reading live state: %w", err)
	}
	switch {
	case sc.pinnedIdx >= 0:
		return sc.pinnedIdx, nil
	case sc.strategy == roundRobin && len(sc.eligible) > 0:
		// The turn counts over the accounts eligible now, so the share is
		// even among them whichever others are out.
		return int(sc.eligible[sc.cursor%uint64(len(sc.eligible))]), nil
	case sc.strategy == weighted && sc.totalWeight > 0:
		n := sc.p.rand(sc.totalWeight)
		for _, i := range sc.eligible {
			if n -= int64(max(0, sc.fi.accounts[i].Weight)); n < 0 {
				return int(i), nil
			}
		}
	}
	// Weighted with no weight among the eligible falls back to the most
	// headroom: weight 0 marks a standby account.
	return sc.best, nil
}

// judgeOne is the Read callback: it judges account i and keeps it if it
// beats the best so far.
func (sc *scan) judgeOne(i int, r Records) {
	if i == 0 {
		// Read visits the refs in order: this is the start of a pass.
		sc.useShare(sc.p.state.Share())
	}
	a, vd := sc.fi.accounts[i], &sc.verdicts[i]
	switch {
	case !sc.excluded.empty() && sc.excluded.has(a.ID):
		*vd = verdict{static: staticExcluded}
		return
	case !sc.allowed.empty() && !sc.allowed.has(a.ID):
		*vd = verdict{static: staticNotAllowed}
		return
	case sc.lost != nil:
		if lost, ok := sc.lost[i]; ok {
			*vd = lost
			sc.noteBlocked(vd)
			return
		}
	}
	sc.p.judge(vd, r, &sc.limits[i], &sc.amt, sc.now, sc.nowNS)
	if !vd.ok() {
		sc.noteBlocked(vd)
		return
	}
	h := vd.headroom
	switch sc.strategy {
	case roundRobin:
		sc.eligible = append(sc.eligible, int32(i))
		return
	case priority:
		if sc.best < 0 || a.Priority < sc.bestPriority || (a.Priority == sc.bestPriority && h > sc.bestHeadroom) {
			sc.best, sc.bestPriority, sc.bestHeadroom = i, a.Priority, h
		}
		return
	case weighted:
		sc.eligible = append(sc.eligible, int32(i))
		sc.totalWeight += int64(max(0, a.Weight))
	case sessionAffinity:
		if a.ID == sc.pinned {
			sc.pinnedIdx = i
		}
	}
	// Most headroom; ties keep the view's order (name, then id), so the
	// choice is deterministic.
	if sc.best < 0 || h > sc.bestHeadroom {
		sc.best, sc.bestHeadroom = i, h
	}
}

// lose takes account i out of the rest of this selection.
func (sc *scan) lose(i int, vd verdict) {
	if sc.lost == nil {
		sc.lost = map[int]verdict{}
	}
	sc.lost[i] = vd
	sc.verdicts[i] = vd
	sc.noteBlocked(&vd)
}

// Select picks an account for one model call and reserves the estimate on
// it (see selectNow). When no account can take the request now, it waits
// up to r.MaxWait for one to free up: woken when capacity is given back
// anywhere the state is shared (a call settles, a lease expires), and at
// the time the first account frees up by itself (a cool-down ends, a
// bucket refills). It stops waiting early when nothing could free up
// within the wait: no account is worth waiting for (all behind open
// breakers, excluded, disabled or invalid), or the first frees up after
// the wait ends and no account lacks only capacity that a settling call
// could give back. The answer is then the last ExhaustedError.
func (p *Pool) Select(ctx context.Context, r SelectRequest) (Selection, error) {
	if r.MaxWait <= 0 {
		return p.selectNow(ctx, r)
	}
	end := time.Now().Add(r.MaxWait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Taken before looking: capacity freed between the look and the
		// wait still wakes it.
		freed := p.state.Freed(r.OrgID)
		sel, err := p.selectNow(ctx, r)
		var ex *ExhaustedError
		if !errors.As(err, &ex) {
			return sel, err
		}
		left := time.Until(end)
		if ex.RetryAfter <= 0 || left <= 0 || (ex.RetryAfter > left && !ex.settleMayFree) {
			return sel, err
		}
		wait := min(ex.RetryAfter, left)
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-freed:
			timer.Stop()
		case <-timer.C:
		case <-ctx.Done():
			return Selection{}, ctx.Err()
		}
	}
}

// selectNow picks an account for one model call and reserves the estimate
// on it, without waiting. It reads only the in-memory view and the live
// state (the store only on an organization's first use).
//
// Every strategy chooses among the same eligible accounts: ACTIVE, with a
// known tier, neither excluded nor outside Allowed, not cooling down, not
// spend-limited, breaker closed (or half-open with its probe slot free),
// and with headroom for the estimate in all three buckets. The choice is
// then reserved atomically (State.Update re-checks eligibility); an
// account that lost a race to another selection is dropped and the scan
// runs again, so buckets are never overdrawn.
//
// Errors: ErrNoAccounts (ErrDefaultKeyInvalid when its default key was
// rejected) when the organization has no account ACTIVE or INVALID and no
// default key is handed out; *ExhaustedError when none of them can take the request now;
// *FieldError for an unknown strategy.
func (p *Pool) selectNow(ctx context.Context, r SelectRequest) (Selection, error) {
	if r.Strategy != "" && !validStrategy(r.Strategy) {
		return Selection{}, unknownStrategy("strategy", r.Strategy)
	}
	if err := p.expireLeases(ctx); err != nil {
		return Selection{}, err
	}
	v, err := p.view(ctx, r.OrgID)
	if err != nil {
		return Selection{}, err
	}
	if v.inService == 0 {
		return p.selectDefaultKey(v, &r)
	}
	strategy := cmp.Or(r.Strategy, v.settings.SelectionStrategy, store.StrategyLeastLoaded)
	now := p.now()
	family := FamilyOf(r.Model)
	fi := v.family(family, p.tiers)
	amt := Amount{Requests: 1, Input: max(0, r.EstimatedInputTokens), Output: max(0, r.EstimatedOutputTokens)}
	sc := p.newScan(fi, strategy, now, amt, &r)
	defer sc.free()

	affinity := strategy == store.StrategySessionAffinity && r.SessionID != ""
	switch {
	case strategy == store.StrategyRoundRobin && len(fi.accounts) > 1:
		if sc.cursor, err = p.state.NextCursor(ctx, r.OrgID); err != nil {
			return Selection{}, fmt.Errorf("advancing round-robin cursor: %w", err)
		}
	case affinity:
		if sc.pinned, err = p.state.SessionAccount(ctx, r.OrgID, r.SessionID, now, p.pinTTL); err != nil {
			return Selection{}, fmt.Errorf("reading the session's account: %w", err)
		}
	}

	for {
		i, err := sc.pass(ctx)
		if err != nil {
			return Selection{}, err
		}
		if i < 0 {
			break
		}
		a := fi.accounts[i]
		key, err := p.keys.Decrypt(a.KeyCiphertext, a.OrganizationID, a.ID)
		if err != nil {
			// A key that does not decrypt (a KEK version missing from the
			// keyring) is an operator problem; the other accounts can still
			// serve.
			p.logger.ErrorContext(ctx, "account key cannot be decrypted; skipping the account",
				"organization_id", r.OrgID, "account_id", a.ID, "key_version", a.KeyVersion, "error", err)
			sc.lose(i, verdict{static: staticKey, headroom: sc.verdicts[i].headroom})
			continue
		}
		expire := now.Add(p.leaseTimeout)
		lease := Lease{ID: newID(), Ref: fi.refs[i], AccountName: a.Name, Tier: a.Tier, Reserved: amt, IssueTime: now, ExpireTime: expire}
		var vd verdict
		err = p.state.Reserve(ctx, &lease, func(l *Live) error {
			// Metered by the share of the state that runs this.
			lim, amt := fi.limits[i].scaled(p.state.Share()), amt // copies: their addresses must not escape
			lease.Limits = lim
			p.judge(&vd, l.Records(), &lim, &amt, now, now.UnixNano())
			if !vd.ok() {
				return errNotAdmitted
			}
			l.Buckets.reserve(amt)
			lease.Probe = vd.probe
			if vd.probe {
				l.Breaker.ProbeLease, l.Breaker.ProbeUntil = lease.ID, expire
			}
			return nil
		})
		if errors.Is(err, errNotAdmitted) {
			sc.lose(i, vd) // another selection got there first
			continue
		}
		if err != nil {
			return Selection{}, fmt.Errorf("reserving capacity on account %s: %w", a.ID, err)
		}
		p.countLeases(ctx, 1)
		p.changes.Notify(r.OrgID)
		if affinity && a.ID != sc.pinned {
			// The lease stands either way: a pin that failed to save costs
			// the next call of the session a cache hit, not its account.
			if err := p.state.PinSession(ctx, r.OrgID, r.SessionID, a.ID, now, p.pinTTL, p.maxPins); err != nil {
				p.logger.WarnContext(ctx, "pinning a session to its account failed", "organization_id", r.OrgID, "account_id", a.ID, "error", err)
			}
		}
		sc.verdicts[i] = vd
		sel := Selection{
			LeaseID:     lease.ID,
			AccountID:   a.ID,
			AccountName: a.Name,
			Tier:        a.Tier,
			APIKey:      key,
			ExpireTime:  expire,
			Strategy:    strategy,
			Headroom:    vd.headroom,
		}
		if r.Explain {
			x := sc.explain(v, i)
			sel.Candidates, sel.Omitted, sel.OmittedReasons = x.candidates, x.omitted, x.reasons
		}
		return sel, nil
	}

	x := sc.explain(v, -1)
	e := &ExhaustedError{Candidates: x.candidates, Omitted: x.omitted, OmittedReasons: x.reasons, settleMayFree: sc.capacityBlocked}
	if !sc.freeAt.IsZero() {
		e.RetryAfter = max(sc.freeAt.Sub(now), time.Millisecond)
	}
	return Selection{}, e
}

// inService reports whether an account keeps its organization out of legacy
// mode; see ErrNoAccounts for why INVALID counts.
func inService(a *account) bool {
	return a.Status == store.StatusActive || a.Status == store.StatusInvalid
}
