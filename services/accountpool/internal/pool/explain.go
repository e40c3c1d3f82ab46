package pool

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// MaxAlternatives bounds how many accounts besides the chosen one a
// selection explains: the answer of a selection must not grow with the
// organization (at 71,167 accounts an explanation of every account broke
// the 4 MiB message limit, issue 15). An organization of at most
// MaxAlternatives+1 accounts is explained in full, as before.
const MaxAlternatives = 10

// Skip reasons, the keys of Selection.OmittedReasons: stable, for callers
// and dashboards that count them.
const (
	SkipEligible         = "eligible" // not skipped: eligible, another was chosen
	SkipExcluded         = "excluded"
	SkipNotAllowed       = "not_allowed"
	SkipDisabled         = "disabled"
	SkipInvalid          = "invalid"
	SkipUnknownTier      = "unknown_tier"
	SkipKeyUndecryptable = "key_undecryptable"
	SkipCoolingDown      = "cooling_down"
	SkipSpendLimited     = "spend_limited"
	SkipBreakerOpen      = "breaker_open"
	SkipProbeInFlight    = "probe_in_flight"
	SkipNoHeadroom       = "no_headroom"
)

// skipKeys indexes the Skip* keys, so counting needs no map until the end.
var skipKeys = [...]string{
	SkipEligible, SkipExcluded, SkipNotAllowed, SkipDisabled, SkipInvalid, SkipUnknownTier,
	SkipKeyUndecryptable, SkipCoolingDown, SkipSpendLimited, SkipBreakerOpen, SkipProbeInFlight, SkipNoHeadroom,
}

const (
	skipEligible = iota
	skipExcluded
	skipNotAllowed
	skipDisabled
	skipInvalid
	skipUnknownTier
	skipKey
	skipCoolingDown
	skipSpend
	skipBreakerOpen
	skipProbe
	skipNoHeadroom
	numSkips
)

// reasonCounts counts accounts per skip reason.
type reasonCounts [numSkips]int

// explained is what explain returns.
type explained struct {
	candidates []Candidate
	omitted    int
	reasons    map[string]int
}

// pick is one account explain may name: its place in the view (j), in
// the family index (k, -1 when not selectable) and its rank.
type pick struct {
	a     *account
	j, k  int
	class int     // 0 eligible, 1 frees up by itself, 2 the rest
	score float64 // within a class, lower first
}

func (x *pick) before(y *pick) bool {
	if x.class != y.class {
		return x.class < y.class
	}
	if x.score != y.score {
		return x.score < y.score
	}
	return x.j < y.j
}

// explain describes the chosen account (chosen indexes fi.accounts, -1
// for none) and the MaxAlternatives best others: the eligible ones with
// the most headroom first, then those that free up by themselves soonest,
// then the rest in view order; and counts the ones it leaves out by
// reason. The candidates are listed in view order (name, then id). It
// visits every account once, formats only the accounts it names, and
// allocates nothing per account beyond those: a selection stays O(n) in
// time and O(MaxAlternatives) in what it returns.
func (sc *scan) explain(v *orgView, chosen int) explained {
	var (
		top    [MaxAlternatives]pick
		n      int // top[:n] are kept, sorted by rank
		self   = pick{k: -1, j: -1}
		counts reasonCounts
		total  int
	)
	j, k := -1, 0
	for a := range v.names.All() {
		j++
		p := pick{a: a, j: j, k: -1, class: 2}
		if k < len(sc.fi.pos) && sc.fi.pos[k] == j {
			p.k = k
			k++
			vd := &sc.verdicts[p.k]
			if p.k == chosen {
				self = p
				continue
			}
			countVerdict(&counts, vd)
			switch {
			case vd.ok():
				p.class, p.score = 0, -vd.headroom
			case vd.waitable() && !vd.freeAt.IsZero():
				p.class, p.score = 1, float64(vd.freeAt.Sub(sc.now))
			}
		} else {
			counts[sc.staticSkip(a)]++
		}
		total++
		// Keep the MaxAlternatives best: insert p in rank order, the
		// worst falling off the end.
		if n == len(top) && !p.before(&top[n-1]) {
			continue
		}
		i := n
		if n < len(top) {
			n++
		} else {
			i = n - 1
		}
		for i > 0 && p.before(&top[i-1]) {
			top[i] = top[i-1]
			i--
		}
		top[i] = p
	}

	named := top[:n]
	if self.a != nil {
		named = append(named, self)
	}
	slices.SortFunc(named, func(x, y pick) int { return cmp.Compare(x.j, y.j) })
	out := explained{candidates: make([]Candidate, len(named)), omitted: total - n}
	for i := range named {
		p := &named[i]
		c := &out.candidates[i]
		c.AccountID, c.AccountName = p.a.ID, p.a.Name
		if p.k >= 0 {
			vd := &sc.verdicts[p.k]
			c.Chosen = p.k == chosen
			c.SkipReason, c.Headroom = vd.reason(p.a, sc.now), vd.headroom
			if vd.static == staticNone {
				c.FreeAt = vd.freeAt
			}
			if !c.Chosen {
				uncount(&counts, vd)
			}
			continue
		}
		counts[sc.staticSkip(p.a)]--
		c.SkipReason = sc.staticReason(p.a)
	}
	if out.omitted > 0 {
		out.reasons = map[string]int{}
		for i, n := range counts {
			if n > 0 {
				out.reasons[skipKeys[i]] = n
			}
		}
	}
	return out
}

// countVerdict counts a selectable account under each reason of its
// verdict; uncount takes it back out.
func countVerdict(c *reasonCounts, vd *verdict) { addVerdict(c, vd, 1) }

func uncount(c *reasonCounts, vd *verdict) { addVerdict(c, vd, -1) }

func addVerdict(c *reasonCounts, vd *verdict, d int) {
	switch vd.static {
	case staticExcluded:
		c[skipExcluded] += d
		return
	case staticNotAllowed:
		c[skipNotAllowed] += d
		return
	case staticKey:
		c[skipKey] += d
		return
	}
	if vd.blocks == 0 {
		c[skipEligible] += d
		return
	}
	for _, b := range [...]struct {
		bit block
		i   int
	}{{blockSpend, skipSpend}, {blockCooldown, skipCoolingDown}, {blockBreakerOpen, skipBreakerOpen}, {blockProbeInFlight, skipProbe}, {blockCapacity, skipNoHeadroom}} {
		if vd.blocks&b.bit != 0 {
			c[b.i] += d
		}
	}
}

// staticSkip is why an account outside the family index is not
// selectable at all, in the order staticReason tells it.
func (sc *scan) staticSkip(a *account) int {
	switch {
	case !sc.excluded.empty() && sc.excluded.has(a.ID):
		return skipExcluded
	case !sc.allowed.empty() && !sc.allowed.has(a.ID):
		return skipNotAllowed
	case a.Status == store.StatusDisabled:
		return skipDisabled
	case a.Status == store.StatusInvalid:
		return skipInvalid
	}
	return skipUnknownTier
}

// staticReason formats staticSkip for an operator.
func (sc *scan) staticReason(a *account) string {
	switch _, known := sc.p.tiers.Limits(a.Tier, FamilyDefault); {
	case !sc.excluded.empty() && sc.excluded.has(a.ID):
		return "excluded"
	case !sc.allowed.empty() && !sc.allowed.has(a.ID):
		return "not allowed"
	case a.Status == store.StatusDisabled:
		return "disabled"
	case a.Status == store.StatusInvalid:
		return "invalid: the upstream rejected its key; an admin must set it ACTIVE or rotate the key"
	case !known:
		return fmt.Sprintf("tier %q is not in the limits table", a.Tier)
	}
	return ""
}

// formatReasons renders reason counts as "no_headroom: 3, disabled: 1",
// most first.
func formatReasons(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
