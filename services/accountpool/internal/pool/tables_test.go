package pool

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFamilyOf(t *testing.T) {
	for model, want := range map[string]Family{
		"claude-opus-4-5-20251101":   FamilyOpus,
		"claude-sonnet-4-5":          FamilySonnet,
		"Claude-3-5-Haiku-Latest":    FamilyHaiku,
		"claude-haiku-4-5":           FamilyHaiku,
		"":                           FamilyDefault,
		"gpt-4o":                     FamilyDefault,
		"claude-instant-1":           FamilyDefault,
		"anthropic.claude-opus-4-v1": FamilyOpus,
	} {
		require.Equal(t, want, FamilyOf(model), model)
	}
}

func TestDefaultTiers(t *testing.T) {
	tiers := DefaultTiers()
	require.Equal(t, []string{"build", "scale", "start", "tier1", "tier2", "tier3", "tier4"}, tiers.Names())
	for tier, want := range map[string]Limits{
		"tier1": {50, 30_000, 8_000},
		"tier2": {1_000, 450_000, 90_000},
		"tier3": {2_000, 800_000, 160_000},
		"tier4": {4_000, 2_000_000, 400_000},
		"start": {1_000, 2_000_000, 400_000},
		"build": {5_000, 5_000_000, 1_000_000},
		"scale": {10_000, 10_000_000, 2_000_000},
	} {
		for _, f := range Families() {
			got, ok := tiers.Limits(tier, f)
			require.True(t, ok)
			require.Equal(t, want, got, "%s/%s", tier, f)
		}
	}
	_, ok := tiers.Limits("tier9", FamilyOpus)
	require.False(t, ok)
}

func TestParseTiers(t *testing.T) {
	base := DefaultTiers()
	got, err := ParseTiers([]byte(`{
		"tier2": {"opus": {"rpm": 500, "input_tpm": 200000, "output_tpm": 40000}},
		"enterprise": {"default": {"rpm": 20000, "input_tpm": 20000000, "output_tpm": 4000000}}
	}`), base)
	require.NoError(t, err)
	l, _ := got.Limits("tier2", FamilyOpus)
	require.Equal(t, Limits{500, 200_000, 40_000}, l)
	l, _ = got.Limits("tier2", FamilySonnet)
	require.Equal(t, Limits{1_000, 450_000, 90_000}, l, "families the file does not name keep the base")
	l, _ = got.Limits("enterprise", FamilyHaiku)
	require.Equal(t, Limits{20_000, 20_000_000, 4_000_000}, l)
	require.False(t, base.Has("enterprise"), "the base table is not changed")
	l, _ = base.Limits("tier2", FamilyOpus)
	require.Equal(t, int64(1_000), l.RPM)

	for name, doc := range map[string]string{
		"not json":         `{`,
		"unknown field":    `{"tier1": {"default": {"rpm": 1, "input_tpm": 1, "output_tpm": 1, "burst": 2}}}`,
		"new tier no def":  `{"new": {"opus": {"rpm": 1, "input_tpm": 1, "output_tpm": 1}}}`,
		"zero limit":       `{"tier1": {"default": {"rpm": 0, "input_tpm": 1, "output_tpm": 1}}}`,
		"unknown family":   `{"tier1": {"gpt": {"rpm": 1, "input_tpm": 1, "output_tpm": 1}}}`,
		"empty tier name":  `{"": {"default": {"rpm": 1, "input_tpm": 1, "output_tpm": 1}}}`,
		"negative limit":   `{"tier1": {"default": {"rpm": 1, "input_tpm": -1, "output_tpm": 1}}}`,
		"wrong value type": `{"tier1": {"default": {"rpm": "fast"}}}`,
	} {
		_, err := ParseTiers([]byte(doc), base)
		require.Error(t, err, name)
	}
}

func TestCost(t *testing.T) {
	p := DefaultPricing()
	million := Tokens{Input: 1_000_000, Output: 1_000_000, CacheCreation: 1_000_000, CacheRead: 1_000_000}
	for model, want := range map[string]float64{
		"claude-opus-4-5-20251101":   5 + 25 + 6.25 + 0.5,
		"claude-opus-4-1-20250805":   15 + 75 + 18.75 + 1.5,
		"claude-opus-4-20250514":     15 + 75 + 18.75 + 1.5,
		"claude-sonnet-4-5-20250929": 3 + 15 + 3.75 + 0.3,
		"claude-sonnet-4-20250514":   3 + 15 + 3.75 + 0.3,
		"claude-haiku-4-5":           1 + 5 + 1.25 + 0.1,
		"claude-3-5-haiku-latest":    0.8 + 4 + 1 + 0.08,
		"claude-opus-5":              5 + 25 + 6.25 + 0.5, // family fallback
		"some-new-model":             3 + 15 + 3.75 + 0.3, // default family
	} {
		require.InDelta(t, want, p.Cost(model, million), 1e-9, model)
	}
	require.InDelta(t, (1200*3+300*15)/1e6, p.Cost("claude-sonnet-4-5", Tokens{Input: 1200, Output: 300}), 1e-12)
	require.Zero(t, p.Cost("claude-sonnet-4-5", Tokens{}))
}

func TestParsePricing(t *testing.T) {
	base := DefaultPricing()
	got, err := ParsePricing([]byte(`{
		"models": {"claude-sonnet-4-5": {"input": 2, "output": 10, "cache_read": 0.1}},
		"families": {"default": {"input": 0, "output": 0}}
	}`), base)
	require.NoError(t, err)
	require.Equal(t, Price{Input: 2, Output: 10, CacheWrite: 2.5, CacheRead: 0.1}, got.PriceOf("claude-sonnet-4-5-20250929"))
	require.Equal(t, Price{}, got.PriceOf("mystery"))
	require.Equal(t, 3.0, base.PriceOf("claude-sonnet-4-5").Input, "the base table is not changed")

	for name, doc := range map[string]string{
		"missing output": `{"models": {"x": {"input": 1}}}`,
		"negative":       `{"models": {"x": {"input": -1, "output": 1}}}`,
		"unknown family": `{"families": {"gpt": {"input": 1, "output": 1}}}`,
		"unknown field":  `{"model": {}}`,
		"empty prefix":   `{"models": {"": {"input": 1, "output": 1}}}`,
	} {
		_, err := ParsePricing([]byte(doc), base)
		require.Error(t, err, name)
	}
}

func TestExhaustedMessageIsBounded(t *testing.T) {
	e := &ExhaustedError{RetryAfter: 2 * time.Second}
	for i := range 25 {
		e.Candidates = append(e.Candidates, Candidate{AccountID: fmt.Sprint(i), AccountName: fmt.Sprintf("acct-%02d", i), SkipReason: "excluded"})
	}
	msg := e.Error()
	require.Contains(t, msg, "acct-19 (19): excluded")
	require.NotContains(t, msg, "acct-20")
	require.Contains(t, msg, "and 5 more")
	require.Contains(t, msg, "frees up in 2s")
}
