// Package categories maps a task category (quick, ultrabrain, ...) to the
// model that runs it and the token budget it gets.
//
// Every model the table uses has a max_output_tokens: the most output the
// model can produce in one call. A task's max_tokens may not exceed it;
// the orchestrator rejects a larger value with InvalidArgument instead of
// sending a request the upstream would refuse.
//
// The built-in table can be extended or overridden from a JSON file:
//
//	{"models": [{"name": "claude-opus-4-5", "max_output_tokens": 64000}],
//	 "categories": [{"name": "quick", "model": "claude-haiku-4-5",
//	  "max_tokens": 4096, "expected_output_tokens": 1024,
//	  "description": "..."}]}
//
// Entries in the file replace built-in entries of the same name and add new
// ones; a category whose model is neither built in nor in the file's
// models is an error.
package categories

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// Category is one row of the table.
type Category struct {
	Name  string `json:"name"`
	Model string `json:"model"`
	// MaxTokens is the output budget sent upstream as max_tokens.
	MaxTokens int64 `json:"max_tokens"`
	// ExpectedOutputTokens is what the pool reserves against the output
	// tokens-per-minute bucket before the call; the real usage settles it.
	// Reserving MaxTokens would make large budgets unschedulable on small
	// tiers although most answers are far shorter.
	ExpectedOutputTokens int64  `json:"expected_output_tokens"`
	Description          string `json:"description"`
}

// Model is a model's limits.
type Model struct {
	Name string `json:"name"`
	// MaxOutputTokens is the largest max_tokens the model accepts.
	MaxOutputTokens int64 `json:"max_output_tokens"`
}

// maxOutputTokens bounds any model's limit, so that token arithmetic
// cannot overflow whatever a file says.
const maxOutputTokens = 1_000_000

// ErrUnknown is returned by Lookup for a name that is not in the table.
var ErrUnknown = errors.New("unknown category")

// Table is an immutable category table.
type Table struct {
	byName map[string]Category
	models map[string]Model
}

// defaultModels are the output limits Anthropic documents for the models
// the built-in categories use, and their close relatives.
func defaultModels() []Model {
	return []Model{
		{Name: "claude-opus-4-5", MaxOutputTokens: 64_000},
		{Name: "claude-sonnet-4-5", MaxOutputTokens: 64_000},
		{Name: "claude-haiku-4-5", MaxOutputTokens: 64_000},
		{Name: "claude-opus-4-1", MaxOutputTokens: 32_000},
		{Name: "claude-opus-4-0", MaxOutputTokens: 32_000},
		{Name: "claude-sonnet-4-0", MaxOutputTokens: 64_000},
		{Name: "claude-3-5-haiku-latest", MaxOutputTokens: 8_192},
	}
}

// Default returns the built-in table.
func Default() Table {
	return newTable(defaultModels(), []Category{
		{Name: "quick", Model: "claude-haiku-4-5", MaxTokens: 4096, ExpectedOutputTokens: 1024,
			Description: "trivial, well-specified work: a small edit, a lookup, a rename"},
		{Name: "unspecified-low", Model: "claude-sonnet-4-5", MaxTokens: 8192, ExpectedOutputTokens: 2048,
			Description: "general work of low to moderate effort"},
		{Name: "unspecified-high", Model: "claude-opus-4-5", MaxTokens: 16384, ExpectedOutputTokens: 4096,
			Description: "general work that needs more reasoning"},
		{Name: "writing", Model: "claude-sonnet-4-5", MaxTokens: 8192, ExpectedOutputTokens: 3072,
			Description: "documentation, prose and technical writing"},
		{Name: "visual-engineering", Model: "claude-sonnet-4-5", MaxTokens: 16384, ExpectedOutputTokens: 4096,
			Description: "front-end, UI and UX work"},
		{Name: "artistry", Model: "claude-opus-4-5", MaxTokens: 16384, ExpectedOutputTokens: 4096,
			Description: "creative, unconventional problem solving"},
		{Name: "ultrabrain", Model: "claude-opus-4-5", MaxTokens: 32000, ExpectedOutputTokens: 8192,
			Description: "the hardest problems: deep reasoning, architecture, tricky bugs"},
	})
}

func newTable(ms []Model, cs []Category) Table {
	t := Table{byName: make(map[string]Category, len(cs)), models: make(map[string]Model, len(ms))}
	for _, m := range ms {
		t.models[m.Name] = m
	}
	for _, c := range cs {
		t.byName[c.Name] = c
	}
	return t
}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Load returns the built-in table with the file's entries merged over it.
// An empty path returns Default().
func Load(path string) (Table, error) {
	t := Default()
	if path == "" {
		return t, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return Table{}, fmt.Errorf("reading categories file: %w", err)
	}
	var file struct {
		Models     []Model    `json:"models"`
		Categories []Category `json:"categories"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return Table{}, fmt.Errorf("parsing categories file %s: %w", path, err)
	}
	for i, m := range file.Models {
		if m.Name == "" || len(m.Name) > 128 || m.MaxOutputTokens <= 0 || m.MaxOutputTokens > maxOutputTokens {
			return Table{}, fmt.Errorf("categories file %s, model %d: name must be 1-128 bytes and max_output_tokens between 1 and %d", path, i, maxOutputTokens)
		}
		t.models[m.Name] = m
	}
	for i, c := range file.Categories {
		if err := c.validate(); err != nil {
			return Table{}, fmt.Errorf("categories file %s, entry %d: %w", path, i, err)
		}
		t.byName[c.Name] = c
	}
	// A file may lower a built-in model's limit below a built-in category's
	// budget: check every category against the final models.
	for _, name := range t.Names() {
		c := t.byName[name]
		m, ok := t.models[c.Model]
		if !ok {
			return Table{}, fmt.Errorf("categories file %s: category %q uses model %q, which has no max_output_tokens; add it under \"models\"", path, c.Name, c.Model)
		}
		if c.MaxTokens > m.MaxOutputTokens {
			return Table{}, fmt.Errorf("categories file %s: category %q has max_tokens %d, above model %s's max_output_tokens %d", path, c.Name, c.MaxTokens, c.Model, m.MaxOutputTokens)
		}
	}
	return t, nil
}

// MaxOutputTokens is the largest max_tokens model accepts; 0 for a model
// the table does not know.
func (t Table) MaxOutputTokens(model string) int64 {
	return t.models[model].MaxOutputTokens
}

func (c Category) validate() error {
	switch {
	case !namePattern.MatchString(c.Name):
		return fmt.Errorf("name %q must be 1-64 lowercase letters, digits, '-' or '_'", c.Name)
	case c.Model == "":
		return fmt.Errorf("category %q: model is required", c.Name)
	case c.MaxTokens <= 0:
		return fmt.Errorf("category %q: max_tokens must be positive", c.Name)
	case c.ExpectedOutputTokens <= 0 || c.ExpectedOutputTokens > c.MaxTokens:
		return fmt.Errorf("category %q: expected_output_tokens must be between 1 and max_tokens", c.Name)
	}
	return nil
}

// Lookup returns the named category or an error wrapping ErrUnknown that
// lists the known names.
func (t Table) Lookup(name string) (Category, error) {
	c, ok := t.byName[name]
	if !ok {
		return Category{}, fmt.Errorf("%w %s; known categories: %s", ErrUnknown, validate.Quote(name), strings.Join(t.Names(), ", "))
	}
	return c, nil
}

// Names returns the category names in sorted order.
func (t Table) Names() []string {
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Estimate is what a call is expected to consume, used to reserve capacity
// before the call (the seed's estimateCostForCategory).
type Estimate struct {
	InputTokens  int64
	OutputTokens int64
}

// charsPerToken is the usual rule of thumb for English text and code; the
// estimate only has to be close, since real usage settles the reservation.
const charsPerToken = 4

// EstimateFor estimates the tokens of a call with the given system prompt and
// user prompt. maxTokens, when positive, caps the expected output.
func EstimateFor(c Category, system, prompt string, maxTokens int64) Estimate {
	chars := int64(utf8.RuneCountInString(system) + utf8.RuneCountInString(prompt))
	in := (chars + charsPerToken - 1) / charsPerToken
	if in < 1 {
		in = 1
	}
	out := c.ExpectedOutputTokens
	if maxTokens > 0 && maxTokens < out {
		out = maxTokens
	}
	return Estimate{InputTokens: in, OutputTokens: out}
}

// IsZero reports whether the table is the zero Table (holds no category).
func (t Table) IsZero() bool { return len(t.byName) == 0 }
