package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// propertyPool builds a pool for one rapid run; assertions go to t, so a
// failure shrinks instead of aborting the whole test.
func propertyPool(t require.TestingT, c *fakeclock.Clock, mods ...func(*Config)) *Pool {
	spec, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	keys, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	cfg := Config{
		Store:  memstore.New(),
		Keys:   keys,
		Now:    c.Now,
		Jitter: func(d time.Duration) time.Duration { return d },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mods {
		m(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	return p
}

// modelBreaker is the documented breaker, written from the spec rather than
// from breaker.go: closed → open after 5 consecutive counted failures →
// half-open after 5s·2^(openings-1), capped at 5m → one probe → closed or
// open again.
type modelBreaker struct {
	failures   int32
	opens      int
	open       bool
	openUntil  time.Time
	probe      string
	probeUntil time.Time
}

func (b *modelBreaker) trip(now time.Time) {
	bound := breakerBase << b.opens
	if b.opens >= 7 || bound > breakerMax {
		bound = breakerMax
	}
	b.open, b.opens, b.openUntil = true, b.opens+1, now.Add(bound)
	b.probe, b.probeUntil = "", time.Time{}
}

func (b *modelBreaker) state(now time.Time) BreakerState {
	switch {
	case !b.open:
		return BreakerClosed
	case now.Before(b.openUntil):
		return BreakerOpen
	default:
		return BreakerHalfOpen
	}
}

type modelLease struct {
	id, account string
	task        int
	probe       bool
	expires     time.Time
	expired     bool
	sel         Selection
}

type modelTask struct {
	tried    []string
	attempts int
	done     bool
}

// poolModel is what the pool must agree with after every step.
type poolModel struct {
	now       time.Time
	status    map[string]store.Status
	quota     map[string]string // account → quota key
	cooldowns map[string]time.Time
	breakers  map[string]*modelBreaker
	leases    []*modelLease // unsettled
	tasks     []*modelTask
}

// expire is the pool's lazy lease expiry: it runs where the pool's does,
// before a selection and an account read.
func (m *poolModel) expire() {
	for _, l := range m.leases {
		if !l.expired && !l.expires.After(m.now) {
			l.expired = true
			if b := m.breakers[l.account]; b.probe == l.id {
				b.probe, b.probeUntil = "", time.Time{}
			}
		}
	}
}

// blocked says why the model forbids selecting the account now, "" if it
// does not.
func (m *poolModel) blocked(id string, excluded []string) string {
	b := m.breakers[id]
	switch {
	case slices.Contains(excluded, id):
		return "excluded"
	case m.status[id] != store.StatusActive:
		return string(m.status[id])
	case m.cooldowns[m.quota[id]].After(m.now):
		return "cooling down"
	case b.state(m.now) == BreakerOpen:
		return "breaker open"
	case b.state(m.now) == BreakerHalfOpen && b.probe != "" && m.now.Before(b.probeUntil):
		return "probe in flight"
	}
	return ""
}

func (m *poolModel) coolDown(id string, until time.Time) {
	qk := m.quota[id]
	if until.After(m.cooldowns[qk]) {
		m.cooldowns[qk] = until
	}
}

// TestPoolStateMachine drives the pool with random selections, settlements,
// clock moves and admin changes, as tasks of up to three attempts, and
// checks after every step that
//   - a task never tries the same account twice;
//   - a selection never returns a disabled, invalid, open, probing,
//     cooling-down or excluded account;
//   - an exhausted selection blocks no account for a reason the model does
//     not know (only capacity is left to the pool);
//   - every account's status, breaker and cool-down equal the model's.
func TestPoolStateMachine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		c := newClock()
		p := propertyPool(t, c, func(cfg *Config) { cfg.LeaseTimeout = 30 * time.Second })
		org := "org-property"
		m := &poolModel{
			now: c.Now(), status: map[string]store.Status{}, quota: map[string]string{},
			cooldowns: map[string]time.Time{}, breakers: map[string]*modelBreaker{},
		}
		var ids []string
		n := rapid.IntRange(1, 4).Draw(t, "accounts")
		for i := range n {
			group := rapid.SampledFrom([]string{"", "", "shared"}).Draw(t, "quota group")
			info, err := p.RegisterAccount(ctx, NewAccount{
				OrgID: org, Name: fmt.Sprint("acct-", i), APIKey: secret.New(fmt.Sprint("sk-ant-", i)),
				Tier: rapid.SampledFrom([]string{"tier1", "tier2", "tier4"}).Draw(t, "tier"), QuotaGroup: group,
				Weight: int32(rapid.IntRange(1, 3).Draw(t, "weight")), Priority: int32(rapid.IntRange(0, 2).Draw(t, "priority")),
			})
			require.NoError(t, err)
			id := info.Account.ID
			ids = append(ids, id)
			m.status[id], m.quota[id], m.breakers[id] = store.StatusActive, newAccount(info.Account).quotaKey, &modelBreaker{}
		}
		requests := 0

		// try runs one selection for task (nil: outside any task) and checks
		// it against the model; it returns the lease, nil when the pool
		// had no account to give.
		try := func(t *rapid.T, req SelectRequest, task *modelTask, taskID int) *modelLease {
			m.expire()
			sel, err := p.Select(ctx, req)
			var ex *ExhaustedError
			switch {
			case errors.As(err, &ex):
				for _, cand := range ex.Candidates {
					if m.blocked(cand.AccountID, req.Excluded) == "" && (len(req.Allowed) == 0 || slices.Contains(req.Allowed, cand.AccountID)) {
						require.True(t, strings.HasPrefix(cand.SkipReason, "no headroom for the estimate"),
							"%s is eligible by the model but skipped: %q", cand.AccountName, cand.SkipReason)
					}
				}
				return nil
			case errors.Is(err, ErrNoAccounts):
				for _, id := range ids {
					require.NotContains(t, []store.Status{store.StatusActive, store.StatusInvalid}, m.status[id])
				}
				return nil
			}
			require.NoError(t, err)
			id := sel.AccountID
			require.Empty(t, m.blocked(id, req.Excluded), "selected an account the model rules out")
			if task != nil {
				require.NotContains(t, task.tried, id, "a task never tries the same account twice")
				task.tried, task.attempts = append(task.tried, id), task.attempts+1
			}
			b := m.breakers[id]
			l := &modelLease{id: sel.LeaseID, account: id, task: taskID, expires: sel.ExpireTime, sel: sel}
			if b.state(m.now) == BreakerHalfOpen {
				l.probe, b.probe, b.probeUntil = true, sel.LeaseID, sel.ExpireTime
			}
			m.leases = append(m.leases, l)
			return l
		}
		attempt := func(t *rapid.T) *modelLease {
			var task *modelTask
			var taskID int
			if open := slices.IndexFunc(m.tasks, func(k *modelTask) bool { return !k.done }); open >= 0 && rapid.Bool().Draw(t, "continue a task") {
				taskID, task = open, m.tasks[open]
			} else {
				taskID, task = len(m.tasks), &modelTask{}
				m.tasks = append(m.tasks, task)
			}
			if task.attempts >= 3 || slices.ContainsFunc(m.leases, func(l *modelLease) bool { return l.task == taskID }) {
				t.Skip("the task has an attempt in flight or used its three")
			}
			l := try(t, SelectRequest{
				OrgID: org, Model: rapid.SampledFrom([]string{"claude-sonnet-4-5", "claude-haiku-4-5"}).Draw(t, "model"),
				EstimatedInputTokens:  int64(rapid.IntRange(0, 2_000).Draw(t, "input")),
				EstimatedOutputTokens: int64(rapid.IntRange(0, 500).Draw(t, "output")),
				Excluded:              slices.Clone(task.tried),
				Strategy:              rapid.SampledFrom(store.Strategies()).Draw(t, "strategy"),
				SessionID:             rapid.SampledFrom([]string{"", "s1", "s2"}).Draw(t, "session"),
				Explain:               rapid.Bool().Draw(t, "explain"),
			}, task, taskID)
			if l == nil {
				task.done = true
			}
			return l
		}
		settle := func(t *rapid.T, l *modelLease) {
			// Upstream errors are drawn most often, so breakers open,
			// half-open and probe within a run.
			// rapid favours the first values of a list: upstream errors
			// come first, so breakers open, half-open and are probed
			// within a run.
			outcome := rapid.SampledFrom([]store.Outcome{
				store.OutcomeUpstreamError, store.OutcomeUpstreamError, store.OutcomeSuccess, store.OutcomeUpstreamError,
				store.OutcomeRateLimited, store.OutcomeSuccess, store.OutcomeUpstreamError, store.OutcomeClientError,
				store.OutcomeSpendLimited, store.OutcomeCancelled, store.OutcomeAuthFailed, store.OutcomeSuccess,
			}).Draw(t, "outcome")
			// 429s usually say when to come back; other answers rarely do
			// (a 529 may).
			retryAfter := time.Duration(0)
			if outcome == store.OutcomeRateLimited || outcome == store.OutcomeSpendLimited || rapid.IntRange(0, 9).Draw(t, "has retry-after") == 0 {
				retryAfter = time.Duration(rapid.SampledFrom([]int{1, 5, 0, 30}).Draw(t, "retry-after")) * time.Second
			}
			requests++
			_, err := p.Record(ctx, RecordRequest{
				OrgID: org, LeaseID: l.id, AccountID: l.account, RequestID: fmt.Sprint("req-", requests), Attempt: 1,
				Outcome: outcome, Model: "claude-sonnet-4-5", SessionID: "s1",
				Tokens:  Tokens{Input: int64(rapid.IntRange(0, 2_000).Draw(t, "used input")), Output: int64(rapid.IntRange(0, 500).Draw(t, "used output"))},
				Headers: RateLimitHeaders{RetryAfter: retryAfter},
			})
			require.NoError(t, err)
			m.leases = slices.DeleteFunc(m.leases, func(x *modelLease) bool { return x == l })

			// The model of what settling does.
			task := &modelTask{}
			if l.task >= 0 {
				task = m.tasks[l.task]
			}
			switch outcome {
			case store.OutcomeRateLimited:
				m.coolDown(l.account, m.now.Add(cmpOr(retryAfter, defaultRateLimitCooldown)))
			case store.OutcomeSpendLimited:
				m.coolDown(l.account, m.now.Add(cmpOr(retryAfter, defaultSpendLimitCooldown)))
			case store.OutcomeAuthFailed:
				if m.status[l.account] == store.StatusActive {
					m.status[l.account] = store.StatusInvalid
				}
			case store.OutcomeSuccess, store.OutcomeClientError, store.OutcomeCancelled:
				task.done = true
			}
			if outcome != store.OutcomeRateLimited && outcome != store.OutcomeSpendLimited && retryAfter > 0 {
				m.coolDown(l.account, m.now.Add(retryAfter))
			}
			b := m.breakers[l.account]
			probe := l.probe && b.probe == l.id
			if probe {
				b.probe, b.probeUntil = "", time.Time{}
			}
			switch outcome {
			case store.OutcomeSuccess:
				if !b.open || probe {
					*b = modelBreaker{}
				}
			case store.OutcomeUpstreamError:
				switch {
				case probe:
					b.failures++
					b.trip(m.now)
				case !b.open:
					if b.failures++; b.failures >= breakerThreshold {
						b.trip(m.now)
					}
				}
			}
		}

		// rapid draws the actions in key order, favouring the first: the
		// numbers make calls the common case and admin changes the rare one.
		actions := map[string]func(*rapid.T){
			"1 attempt": func(t *rapid.T) {
				// Most attempts are answered at once; some stay in flight.
				if l := attempt(t); l != nil && rapid.IntRange(0, 3).Draw(t, "answered") > 0 {
					settle(t, l)
				}
			},
			"2 call one account repeatedly": func(t *rapid.T) {
				// Calls aimed at one account, failing more often than not:
				// its breaker opens, half-opens and is probed within a run.
				id := rapid.SampledFrom(ids).Draw(t, "account")
				for range rapid.IntRange(1, 6).Draw(t, "calls") {
					l := try(t, SelectRequest{OrgID: org, Model: "claude-sonnet-4-5", Allowed: []string{id}, Strategy: store.StrategyPriority}, nil, -1)
					if l == nil {
						return
					}
					settle(t, l)
				}
			},
			"3 settle an attempt in flight": func(t *rapid.T) {
				if len(m.leases) == 0 {
					t.Skip("no lease to settle")
				}
				settle(t, rapid.SampledFrom(m.leases).Draw(t, "lease"))
			},
			"4 advance the clock": func(t *rapid.T) {
				d := rapid.SampledFrom([]time.Duration{5 * time.Second, time.Second, 31 * time.Second, 10 * time.Second, time.Millisecond, 90 * time.Second, time.Hour}).Draw(t, "advance")
				c.Advance(d)
				m.now = c.Now()
			},
			"5 admin change": func(t *rapid.T) {
				id := rapid.SampledFrom(ids).Draw(t, "account")
				switch rapid.SampledFrom([]string{"activate", "rotate", "retier", "disable"}).Draw(t, "change") {
				case "activate":
					active := store.StatusActive
					_, err := p.UpdateAccount(ctx, org, id, AccountChanges{Status: &active})
					require.NoError(t, err)
					m.status[id], *m.breakers[id] = store.StatusActive, modelBreaker{}
				case "disable":
					disabled := store.StatusDisabled
					_, err := p.UpdateAccount(ctx, org, id, AccountChanges{Status: &disabled})
					require.NoError(t, err)
					m.status[id] = store.StatusDisabled
				case "rotate":
					_, err := p.RotateKey(ctx, org, id, secret.New("sk-ant-rotated-"+id[:8]))
					require.NoError(t, err)
					if m.status[id] == store.StatusInvalid {
						m.status[id] = store.StatusActive
					}
					*m.breakers[id] = modelBreaker{}
				case "retier":
					tier := rapid.SampledFrom([]string{"tier1", "tier2", "scale"}).Draw(t, "tier")
					_, err := p.UpdateAccount(ctx, org, id, AccountChanges{Tier: &tier})
					require.NoError(t, err)
				}
			},
			"": func(t *rapid.T) {
				m.expire()
				infos, err := p.ListAccounts(ctx, org)
				require.NoError(t, err)
				require.Len(t, infos, len(ids))
				for _, info := range infos {
					id, b := info.Account.ID, m.breakers[info.Account.ID]
					require.Equal(t, m.status[id], info.Account.Status, info.Account.Name)
					require.Equal(t, b.state(m.now), info.Breaker.State, info.Account.Name)
					require.Equal(t, b.failures, info.Breaker.ConsecutiveFailures, info.Account.Name)
					if b.open {
						require.Equal(t, b.openUntil, info.Breaker.OpenUntil, info.Account.Name)
					}
					want := m.cooldowns[m.quota[id]]
					if !want.After(m.now) {
						want = time.Time{}
					}
					require.Equal(t, want, info.CooldownUntil, info.Account.Name)
				}
			},
		}
		// A breaker needs five failures in a row and a cool-down to pass:
		// several rounds of rapid's default 30 steps give it the room.
		for range 4 {
			t.Repeat(actions)
		}
	})
}

func cmpOr(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}

// TestConcurrentReservationsNeverPassTheLimit runs random concurrent
// selections against random accounts and quota groups with the clock
// stopped: for every quota key, what was granted fits its buckets, and the
// buckets account for exactly what was granted.
func TestConcurrentReservationsNeverPassTheLimit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		c := newClock()
		p := propertyPool(t, c)
		org := "org-concurrent"
		limits := map[string]Limits{}
		quotaOf := map[string]string{}
		for i := range rapid.IntRange(1, 4).Draw(t, "accounts") {
			tier := rapid.SampledFrom([]string{"tier1", "tier2"}).Draw(t, "tier")
			group := rapid.SampledFrom([]string{"", "g1", "g2"}).Draw(t, "group")
			info, err := p.RegisterAccount(ctx, NewAccount{OrgID: org, Name: fmt.Sprint("acct-", i), APIKey: secret.New("sk-ant-x"), Tier: tier, QuotaGroup: group})
			require.NoError(t, err)
			qk := newAccount(info.Account).quotaKey
			lim, _ := p.tiers.Limits(tier, FamilySonnet)
			if old, ok := limits[qk]; ok { // a group is metered at its accounts' lowest limits
				lim = Limits{RPM: min(old.RPM, lim.RPM), InputTPM: min(old.InputTPM, lim.InputTPM), OutputTPM: min(old.OutputTPM, lim.OutputTPM)}
			}
			limits[qk], quotaOf[info.Account.ID] = lim, qk
		}
		strategy := rapid.SampledFrom(store.Strategies()).Draw(t, "strategy")
		workers := rapid.IntRange(2, 12).Draw(t, "workers")
		type grant struct {
			account string
			amt     Amount
		}
		plans := make([][]Amount, workers)
		for w := range plans {
			for range rapid.IntRange(1, 25).Draw(t, "selections") {
				plans[w] = append(plans[w], Amount{
					Requests: 1,
					Input:    int64(rapid.IntRange(0, 8_000).Draw(t, "input")),
					Output:   int64(rapid.IntRange(0, 2_000).Draw(t, "output")),
				})
			}
		}
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			grants []grant
			errs   []error
		)
		for _, plan := range plans {
			wg.Go(func() {
				for _, amt := range plan {
					sel, err := p.Select(ctx, SelectRequest{
						OrgID: org, Model: "claude-sonnet-4-5", EstimatedInputTokens: amt.Input, EstimatedOutputTokens: amt.Output,
						Strategy: strategy, SessionID: "s",
					})
					var ex *ExhaustedError
					mu.Lock()
					switch {
					case err == nil:
						grants = append(grants, grant{sel.AccountID, amt})
					case !errors.As(err, &ex):
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Empty(t, errs)

		granted := map[string]Amount{}
		for _, g := range grants {
			s := granted[quotaOf[g.account]]
			granted[quotaOf[g.account]] = Amount{s.Requests + g.amt.Requests, s.Input + g.amt.Input, s.Output + g.amt.Output}
		}
		infos, err := p.ListAccounts(ctx, org)
		require.NoError(t, err)
		for _, info := range infos {
			qk := quotaOf[info.Account.ID]
			g, lim := granted[qk], limits[qk]
			require.LessOrEqual(t, g.Requests, lim.RPM, "requests granted on %s", qk)
			require.LessOrEqual(t, g.Input, lim.InputTPM, "input tokens granted on %s", qk)
			require.LessOrEqual(t, g.Output, lim.OutputTPM, "output tokens granted on %s", qk)
			cp := capacityOf(info, FamilySonnet)
			require.Equal(t, Capacity{
				Family:        FamilySonnet,
				RequestsLimit: lim.RPM, RequestsRemaining: lim.RPM - g.Requests,
				InputTokensLimit: lim.InputTPM, InputRemaining: lim.InputTPM - g.Input,
				OutputTokensLimit: lim.OutputTPM, OutputRemaining: lim.OutputTPM - g.Output,
			}, cp, "no drift: every bucket holds its limit less the grants (%s)", qk)
		}
	})
}

// TestBreakerCoolDownsNeverShorten opens an account's breaker again and
// again with the default jitter: every cool-down lies in [bound/2, bound]
// and none is shorter than the one before.
func TestBreakerCoolDownsNeverShorten(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		c := newClock()
		p := propertyPool(t, c, func(cfg *Config) { cfg.Jitter = nil }) // the default
		org := "org-breaker"
		info, err := p.RegisterAccount(ctx, NewAccount{OrgID: org, Name: "a", APIKey: secret.New("sk-ant-a"), Tier: "tier4"})
		require.NoError(t, err)
		id := info.Account.ID
		fail := func(n int) {
			for i := range n {
				sel, err := p.Select(ctx, SelectRequest{OrgID: org})
				require.NoError(t, err)
				_, err = p.Record(ctx, RecordRequest{OrgID: org, LeaseID: sel.LeaseID, AccountID: id, RequestID: fmt.Sprint(c.Now().UnixNano(), "-", i), Attempt: 1, Outcome: store.OutcomeUpstreamError})
				require.NoError(t, err)
			}
		}
		fail(breakerThreshold)
		var prev time.Duration
		bound := breakerBase
		for range rapid.IntRange(1, 10).Draw(t, "openings") {
			got, err := p.GetAccount(ctx, org, id)
			require.NoError(t, err)
			require.Equal(t, BreakerOpen, got.Breaker.State)
			d := got.Breaker.OpenUntil.Sub(c.Now())
			require.GreaterOrEqual(t, d, bound/2)
			require.LessOrEqual(t, d, bound)
			if bound < breakerMax {
				require.GreaterOrEqual(t, d, prev, "a cool-down never comes out shorter than the one before")
			}
			prev, bound = d, min(2*bound, breakerMax)
			c.Advance(d) // half-open: the next selection is the probe, and it fails
			fail(1)
		}
	})
}
