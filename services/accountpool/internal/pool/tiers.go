package pool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// Limits are one tier's per-minute rate limits for one model family.
type Limits struct {
	RPM       int64 `json:"rpm"`
	InputTPM  int64 `json:"input_tpm"`
	OutputTPM int64 `json:"output_tpm"`
}

// scaled is l times share (0 < share <= 1), each limit at least 1.
func (l Limits) scaled(share float64) Limits {
	if share >= 1 {
		return l
	}
	f := func(v int64) int64 { return max(1, int64(float64(v)*share)) }
	return Limits{RPM: f(l.RPM), InputTPM: f(l.InputTPM), OutputTPM: f(l.OutputTPM)}
}

func (l Limits) valid() bool { return l.RPM > 0 && l.InputTPM > 0 && l.OutputTPM > 0 }

// Tiers is the tier limits table. The zero value is empty; use DefaultTiers
// or ParseTiers. A Tiers value is immutable and safe to share.
type Tiers struct {
	tiers map[string]tierLimits
}

type tierLimits struct {
	def      Limits
	families map[Family]Limits
}

// DefaultTiers is the built-in table: the seed's tier1–tier4 and Anthropic's
// current start/build/scale, with the limits Anthropic publishes for its
// Sonnet and Opus 4.x models, for every model family. Haiku gets the same
// numbers on purpose: Anthropic grants some tiers more for Haiku, but a
// table that is too low only waits for the first answer's
// anthropic-ratelimit-*-limit headers to raise it, while one that is too
// high sends calls the upstream rejects. A tiers file (ParseTiers) can give
// any family its own limits.
func DefaultTiers() Tiers {
	t := Tiers{tiers: map[string]tierLimits{}}
	for name, l := range map[string]Limits{
		"tier1": {RPM: 50, InputTPM: 30_000, OutputTPM: 8_000},
		"tier2": {RPM: 1_000, InputTPM: 450_000, OutputTPM: 90_000},
		"tier3": {RPM: 2_000, InputTPM: 800_000, OutputTPM: 160_000},
		"tier4": {RPM: 4_000, InputTPM: 2_000_000, OutputTPM: 400_000},
		"start": {RPM: 1_000, InputTPM: 2_000_000, OutputTPM: 400_000},
		"build": {RPM: 5_000, InputTPM: 5_000_000, OutputTPM: 1_000_000},
		"scale": {RPM: 10_000, InputTPM: 10_000_000, OutputTPM: 2_000_000},
	} {
		t.tiers[name] = tierLimits{def: l}
	}
	return t
}

// DefaultTier is the tier of an account registered without one: the lowest,
// so a new key is never overdriven; the upstream's limit headers raise it
// after the first call.
const DefaultTier = "tier1"

// ParseTiers overlays a JSON document on base and returns the result; base
// is not changed. The document maps tier names to families:
//
//	{"tier2": {"default": {"rpm": 1000, "input_tpm": 450000, "output_tpm": 90000},
//	           "opus":    {"rpm": 500,  "input_tpm": 200000, "output_tpm": 40000}}}
//
// A tier in the document keeps base's entries for the families it does not
// name; a new tier must have a "default" entry. Every limit must be positive.
func ParseTiers(data []byte, base Tiers) (Tiers, error) {
	var doc map[string]map[Family]Limits
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return Tiers{}, fmt.Errorf("parsing tiers: %w", err)
	}
	out := Tiers{tiers: maps.Clone(base.tiers)}
	if out.tiers == nil {
		out.tiers = map[string]tierLimits{}
	}
	for name, fams := range doc {
		if name == "" {
			return Tiers{}, fmt.Errorf("parsing tiers: empty tier name")
		}
		tl, exists := out.tiers[name]
		tl.families = maps.Clone(tl.families)
		if tl.families == nil {
			tl.families = map[Family]Limits{}
		}
		if d, ok := fams[FamilyDefault]; ok {
			tl.def = d
		} else if !exists {
			return Tiers{}, fmt.Errorf("parsing tiers: new tier %q needs a %q entry", name, FamilyDefault)
		}
		for f, l := range fams {
			if !validFamily(f) {
				return Tiers{}, fmt.Errorf("parsing tiers: tier %q: unknown model family %q (want one of %v)", name, f, Families())
			}
			if !l.valid() {
				return Tiers{}, fmt.Errorf("parsing tiers: tier %q family %q: rpm, input_tpm and output_tpm must all be positive", name, f)
			}
			if f != FamilyDefault {
				tl.families[f] = l
			}
		}
		out.tiers[name] = tl
	}
	return out, nil
}

// Limits returns a tier's limits for a family; false for an unknown tier.
func (t Tiers) Limits(tier string, f Family) (Limits, bool) {
	tl, ok := t.tiers[tier]
	if !ok {
		return Limits{}, false
	}
	if l, ok := tl.families[f]; ok {
		return l, true
	}
	return tl.def, true
}

// Has reports whether the table has the tier.
func (t Tiers) Has(tier string) bool {
	_, ok := t.tiers[tier]
	return ok
}

// Names returns the tier names, sorted.
func (t Tiers) Names() []string { return slices.Sorted(maps.Keys(t.tiers)) }
