package pool

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Price is a model's price in USD per million tokens.
type Price struct {
	Input      float64
	Output     float64
	CacheWrite float64
	CacheRead  float64
}

// Anthropic prices prompt-cache writes (5-minute TTL) at 1.25× and reads at
// 0.1× the input price.
const (
	cacheWriteFactor = 1.25
	cacheReadFactor  = 0.1
)

func priceFromInputOutput(in, out float64) Price {
	return Price{Input: in, Output: out, CacheWrite: in * cacheWriteFactor, CacheRead: in * cacheReadFactor}
}

// Pricing is the pricing table: prices by model-name prefix (the longest
// matching prefix wins, so "claude-opus-4-5-20251101" takes the
// "claude-opus-4-5" price, not "claude-opus-4"), and a price per family for
// models no prefix matches. Immutable and safe to share.
type Pricing struct {
	models   map[string]Price
	families map[Family]Price
	// prefixes are the keys of models, longest first: PriceOf runs on
	// every RecordRequest, and the first match is then the longest.
	prefixes []string
}

func (p Pricing) indexed() Pricing {
	p.prefixes = slices.SortedFunc(maps.Keys(p.models), func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), cmp.Compare(a, b))
	})
	return p
}

// DefaultPricing is the built-in table. A model of an unknown family is
// priced like Sonnet, the middle of the range, so an unrecognised model is
// never reported as free.
func DefaultPricing() Pricing {
	return Pricing{
		models: map[string]Price{
			"claude-opus-4-5":   priceFromInputOutput(5, 25),
			"claude-opus-4-1":   priceFromInputOutput(15, 75),
			"claude-opus-4":     priceFromInputOutput(15, 75),
			"claude-sonnet-4-5": priceFromInputOutput(3, 15),
			"claude-sonnet-4":   priceFromInputOutput(3, 15),
			"claude-haiku-4-5":  priceFromInputOutput(1, 5),
			"claude-3-5-haiku":  priceFromInputOutput(0.8, 4),
		},
		families: map[Family]Price{
			FamilyOpus:    priceFromInputOutput(5, 25),
			FamilySonnet:  priceFromInputOutput(3, 15),
			FamilyHaiku:   priceFromInputOutput(1, 5),
			FamilyDefault: priceFromInputOutput(3, 15),
		},
	}.indexed()
}

type priceJSON struct {
	Input      *float64 `json:"input"`
	Output     *float64 `json:"output"`
	CacheWrite *float64 `json:"cache_write"`
	CacheRead  *float64 `json:"cache_read"`
}

func (p priceJSON) price(what string) (Price, error) {
	if p.Input == nil || p.Output == nil {
		return Price{}, fmt.Errorf("%s: input and output are required", what)
	}
	out := priceFromInputOutput(*p.Input, *p.Output)
	if p.CacheWrite != nil {
		out.CacheWrite = *p.CacheWrite
	}
	if p.CacheRead != nil {
		out.CacheRead = *p.CacheRead
	}
	if out.Input < 0 || out.Output < 0 || out.CacheWrite < 0 || out.CacheRead < 0 {
		return Price{}, fmt.Errorf("%s: prices must not be negative", what)
	}
	return out, nil
}

// ParsePricing overlays a JSON document on base and returns the result;
// base is not changed. Prices are USD per million tokens; cache_write and
// cache_read default to 1.25× and 0.1× input:
//
//	{"models":   {"claude-opus-4-5": {"input": 5, "output": 25}},
//	 "families": {"opus": {"input": 5, "output": 25, "cache_read": 0.5}}}
func ParsePricing(data []byte, base Pricing) (Pricing, error) {
	var doc struct {
		Models   map[string]priceJSON `json:"models"`
		Families map[Family]priceJSON `json:"families"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return Pricing{}, fmt.Errorf("parsing pricing: %w", err)
	}
	out := Pricing{models: maps.Clone(base.models), families: maps.Clone(base.families)}
	if out.models == nil {
		out.models = map[string]Price{}
	}
	if out.families == nil {
		out.families = map[Family]Price{}
	}
	for prefix, pj := range doc.Models {
		if prefix == "" {
			return Pricing{}, fmt.Errorf("parsing pricing: empty model prefix")
		}
		p, err := pj.price("model " + prefix)
		if err != nil {
			return Pricing{}, fmt.Errorf("parsing pricing: %w", err)
		}
		out.models[strings.ToLower(prefix)] = p
	}
	for f, pj := range doc.Families {
		if !validFamily(f) {
			return Pricing{}, fmt.Errorf("parsing pricing: unknown model family %q (want one of %v)", f, Families())
		}
		p, err := pj.price("family " + string(f))
		if err != nil {
			return Pricing{}, fmt.Errorf("parsing pricing: %w", err)
		}
		out.families[f] = p
	}
	return out.indexed(), nil
}

// PriceOf returns the price of a model: the longest matching prefix, else
// its family's price.
func (p Pricing) PriceOf(model string) Price {
	m := strings.ToLower(model)
	for _, prefix := range p.prefixes {
		if strings.HasPrefix(m, prefix) {
			return p.models[prefix]
		}
	}
	return p.families[FamilyOf(model)]
}

// Tokens are the token counts of one model call, as the upstream reports
// them: Input excludes cache reads and cache writes.
type Tokens struct {
	Input         int64
	Output        int64
	CacheRead     int64
	CacheCreation int64
}

// Cost returns the USD cost of a call.
func (p Pricing) Cost(model string, t Tokens) float64 {
	pr := p.PriceOf(model)
	return (float64(t.Input)*pr.Input +
		float64(t.Output)*pr.Output +
		float64(t.CacheCreation)*pr.CacheWrite +
		float64(t.CacheRead)*pr.CacheRead) / 1e6
}
