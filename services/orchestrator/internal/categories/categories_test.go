package categories_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/categories"
)

func TestDefaultHasTheUsualCategories(t *testing.T) {
	tbl := categories.Default()
	for _, name := range []string{"quick", "ultrabrain", "unspecified-low", "unspecified-high", "writing", "visual-engineering", "artistry"} {
		c, err := tbl.Lookup(name)
		require.NoError(t, err, name)
		require.NotEmpty(t, c.Model)
		require.LessOrEqual(t, c.ExpectedOutputTokens, c.MaxTokens)
	}
}

func TestLookupUnknownListsKnownNames(t *testing.T) {
	_, err := categories.Default().Lookup("nope")
	require.ErrorIs(t, err, categories.ErrUnknown)
	require.Contains(t, err.Error(), "quick")
	require.Contains(t, err.Error(), "ultrabrain")
}

func TestLoadMergesFileOverDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "categories.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"categories":[
		{"name":"quick","model":"claude-sonnet-4-5","max_tokens":100,"expected_output_tokens":50},
		{"name":"review","model":"claude-opus-4-5","max_tokens":2000,"expected_output_tokens":500}]}`), 0o600))
	tbl, err := categories.Load(path)
	require.NoError(t, err)
	quick, err := tbl.Lookup("quick")
	require.NoError(t, err)
	require.Equal(t, "claude-sonnet-4-5", quick.Model)
	require.Equal(t, int64(100), quick.MaxTokens)
	_, err = tbl.Lookup("review")
	require.NoError(t, err)
	_, err = tbl.Lookup("ultrabrain")
	require.NoError(t, err, "defaults not named in the file stay")
}

func TestLoadRejectsBadEntries(t *testing.T) {
	for name, body := range map[string]string{
		"no model":        `{"categories":[{"name":"x","max_tokens":10,"expected_output_tokens":5}]}`,
		"bad name":        `{"categories":[{"name":"X Y","model":"m","max_tokens":10,"expected_output_tokens":5}]}`,
		"expected > max":  `{"categories":[{"name":"x","model":"m","max_tokens":10,"expected_output_tokens":50}]}`,
		"unknown field":   `{"categories":[{"name":"x","model":"m","max_tokens":10,"expected_output_tokens":5,"temp":1}]}`,
		"not json at all": `categories: []`,
		"model unknown":   `{"categories":[{"name":"x","model":"m","max_tokens":10,"expected_output_tokens":5}]}`,
		"over the model":  `{"categories":[{"name":"x","model":"claude-3-5-haiku-latest","max_tokens":9000,"expected_output_tokens":5}]}`,
		"model lowered":   `{"models":[{"name":"claude-opus-4-5","max_output_tokens":1000}]}`,
		"model no limit":  `{"models":[{"name":"m"}]}`,
	} {
		path := filepath.Join(t.TempDir(), "c.json")
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		_, err := categories.Load(path)
		require.Error(t, err, name)
	}
}

func TestModelLimits(t *testing.T) {
	tbl := categories.Default()
	for _, name := range tbl.Names() {
		c, err := tbl.Lookup(name)
		require.NoError(t, err)
		limit := tbl.MaxOutputTokens(c.Model)
		require.Positive(t, limit, "built-in category %s's model %s has a limit", name, c.Model)
		require.LessOrEqual(t, c.MaxTokens, limit, name)
	}
	require.Zero(t, tbl.MaxOutputTokens("no-such-model"))

	path := filepath.Join(t.TempDir(), "c.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"models":[{"name":"m","max_output_tokens":500}],
		"categories":[{"name":"x","model":"m","max_tokens":400,"expected_output_tokens":5}]}`), 0o600))
	tbl, err := categories.Load(path)
	require.NoError(t, err)
	require.EqualValues(t, 500, tbl.MaxOutputTokens("m"))
	require.EqualValues(t, 64_000, tbl.MaxOutputTokens("claude-opus-4-5"), "built-in models stay")
}

func TestLookupEchoIsBounded(t *testing.T) {
	_, err := categories.Default().Lookup(strings.Repeat("x", 2<<20))
	require.ErrorIs(t, err, categories.ErrUnknown)
	require.Less(t, len(err.Error()), 400)
}

func TestEstimateFor(t *testing.T) {
	c := categories.Category{Name: "x", Model: "m", MaxTokens: 1000, ExpectedOutputTokens: 400}
	e := categories.EstimateFor(c, "12345678", "1234", 0)
	require.Equal(t, categories.Estimate{InputTokens: 3, OutputTokens: 400}, e)
	e = categories.EstimateFor(c, "", "", 100)
	require.Equal(t, categories.Estimate{InputTokens: 1, OutputTokens: 100}, e, "max_tokens override caps the expected output")
}
