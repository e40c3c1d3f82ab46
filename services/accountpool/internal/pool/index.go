package pool

import (
	"sync"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// viewIndex is what Select needs of a view, per family, computed once per
// view rather than on every selection: the accounts that can be selected
// at all, their live-state refs and their tier limits.
type viewIndex struct {
	once [numFamilies]sync.Once
	fams [numFamilies]familyIndex
}

// familyIndex lists the view's selectable accounts for one family: ACTIVE,
// with a tier the table knows, in view order. pos maps each to its place
// in the view's accounts; limits are what each is metered by (see
// meteredLimits).
type familyIndex struct {
	accounts []*account
	refs     []Ref
	limits   []Limits
	// set is refs prepared by the pool's State, on first use (refSet).
	setOnce sync.Once
	set     RefSet
	pos     []int
	// groups holds each quota group's limits: the lowest of its accounts'.
	groups map[string]Limits
}

// family returns the view's index for f, building it on first use.
func (v *orgView) family(f Family, tiers Tiers) *familyIndex {
	i := f.index()
	fi := &v.index.fams[i]
	v.index.once[i].Do(func() {
		for a := range v.names.All() {
			lim, ok := tiers.Limits(a.Tier, f)
			if a.QuotaGroup == "" || !ok {
				continue
			}
			if fi.groups == nil {
				fi.groups = map[string]Limits{}
			}
			if g, seen := fi.groups[a.quotaKey]; seen {
				lim = Limits{RPM: min(g.RPM, lim.RPM), InputTPM: min(g.InputTPM, lim.InputTPM), OutputTPM: min(g.OutputTPM, lim.OutputTPM)}
			}
			fi.groups[a.quotaKey] = lim
		}
		j := -1
		for a := range v.names.All() {
			j++
			lim, ok := fi.metered(a, f, tiers)
			if a.Status != store.StatusActive || !ok {
				continue
			}
			fi.accounts = append(fi.accounts, a)
			fi.refs = append(fi.refs, ref(a, f))
			fi.limits = append(fi.limits, lim)
			fi.pos = append(fi.pos, j)
		}
	})
	return fi
}

// refSet returns the index's refs as s prepared them.
func (fi *familyIndex) refSet(s State) RefSet {
	fi.setOnce.Do(func() { fi.set = s.Prepare(fi.refs) })
	return fi.set
}

func (fi *familyIndex) metered(a *account, f Family, tiers Tiers) (Limits, bool) {
	if g, ok := fi.groups[a.quotaKey]; ok {
		return g, true
	}
	return tiers.Limits(a.Tier, f)
}

// meteredLimits are the limits an account's buckets are metered by for f:
// its tier's, or, in a quota group, the lowest of the group's accounts'.
// The keys of a group share one Anthropic organization and so one set of
// limits; a group whose accounts name different tiers is misconfigured,
// and the lowest reading is the one that cannot overdrive it. false when
// the account's tier is not in the table.
func (v *orgView) meteredLimits(a *account, f Family, tiers Tiers) (Limits, bool) {
	if a.QuotaGroup == "" {
		// No group, no need for the view's index: reading one account
		// (after registering it, say) does not build it.
		return tiers.Limits(a.Tier, f)
	}
	return v.family(f, tiers).metered(a, f, tiers)
}
