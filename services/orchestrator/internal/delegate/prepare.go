package delegate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/categories"
)

// prepared is a validated task.
type prepared struct {
	Task
	category    categories.Category
	system      string
	maxTokens   int64
	estimate    categories.Estimate
	activityID  string
	fingerprint string
	// idempotent: the caller gave the request_id, so a retry must find
	// this run (without one, RequestID is generated).
	idempotent bool
	// run counts the runs of a request_id (1 for the first); see
	// taskRun.trackStart.
	run int
	// clientRequestID is the request_id as the caller gave it.
	clientRequestID string
	// input is the activity's input_data; its JSON size is checked here so
	// that Activity cannot reject it after the edge accepted the task.
	input map[string]any
}

// prepare validates t with the rules every service applies to the same
// fields (pkg/validate), so a task the orchestrator accepts can be
// selected, recorded and tracked: nothing is rejected half-way, after the
// model ran.
func (r *Runner) prepare(t Task) (*prepared, error) {
	if err := validate.OrganizationID("organization_id", t.OrganizationID); err != nil {
		return nil, err
	}
	if strings.TrimSpace(t.Prompt) == "" {
		return nil, validate.Invalid("prompt", "is required and must not be blank")
	}
	if err := validate.Text("prompt", t.Prompt, r.cfg.MaxPromptBytes); err != nil {
		return nil, err
	}
	if t.Category == "" {
		return nil, validate.Invalid("category", "is required; known categories: %s", strings.Join(r.cfg.Categories.Names(), ", "))
	}
	if err := validate.Identifier("category", t.Category, validate.MaxIdentifier); err != nil {
		return nil, err
	}
	if len(t.Skills) > maxSkills {
		return nil, validate.Invalid("load_skills", "names %d skills; at most %d can be loaded", len(t.Skills), maxSkills)
	}
	for i, s := range t.Skills {
		if err := validate.Identifier(fmt.Sprintf("load_skills[%d]", i), s, validate.MaxIdentifier); err != nil {
			return nil, err
		}
	}
	if err := validate.RequestID("request_id", t.RequestID); err != nil {
		return nil, err
	}
	if err := validate.Identifier("session_id", t.SessionID, validate.MaxIdentifier); err != nil {
		return nil, err
	}
	if err := validate.Identifier("user_id", t.UserID, validate.MaxIdentifier); err != nil {
		return nil, err
	}
	cat, err := r.cfg.Categories.Lookup(t.Category)
	if err != nil {
		return nil, validate.Invalid("category", "%v", err)
	}
	limit := r.cfg.Categories.MaxOutputTokens(cat.Model)
	if t.MaxTokens < 0 || t.MaxTokens > limit {
		return nil, validate.Invalid("max_tokens", "must be between 0 (the category's default, %d) and %d, the most model %s of category %s can produce",
			cat.MaxTokens, limit, cat.Model, cat.Name)
	}
	system, err := r.cfg.Skills.SystemPrompt(t.Skills)
	if err != nil {
		return nil, validate.Invalid("load_skills", "%v", err)
	}
	p := &prepared{Task: t, category: cat, system: system, maxTokens: cat.MaxTokens}
	if t.MaxTokens > 0 {
		p.maxTokens = t.MaxTokens
	}
	p.input = map[string]any{
		"prompt":      p.Prompt,
		"load_skills": stringsToAny(p.Skills),
		"model":       p.category.Model,
		"max_tokens":  p.maxTokens,
	}
	if err := validate.JSONObject("prompt", p.input, validate.MaxObjectJSON); err != nil {
		return nil, validate.Invalid("prompt", "is too large to be recorded: the task's input is over %d bytes once JSON-encoded (<, > and & take 6 bytes each); shorten the prompt", validate.MaxObjectJSON)
	}
	p.estimate = categories.EstimateFor(cat, system, t.Prompt, p.maxTokens)
	if t.RequestID == "" {
		p.RequestID = uuid.NewString()
		p.activityID = uuid.NewString()
	} else {
		p.activityID = ActivityID(t.OrganizationID, t.RequestID)
		p.idempotent = true
	}
	p.run, p.clientRequestID = 1, p.RequestID
	sum := sha256.Sum256([]byte(strings.Join(append([]string{t.Category, t.Prompt, fmt.Sprint(t.MaxTokens)}, t.Skills...), "\x00")))
	p.fingerprint = hex.EncodeToString(sum[:16])
	return p, nil
}

// nextRun moves p to the next run of its request_id: a new activity id and
// a request id the ledger keeps apart from the earlier runs'.
func (p *prepared) nextRun() {
	p.run++
	p.activityID = runActivityID(p.OrganizationID, p.clientRequestID, p.run)
	p.RequestID = runRequestID(p.clientRequestID, p.run)
}

// runRequestID is the request id of run n (n >= 2) in the usage ledger:
// "<request_id>~run<n>", so each run's attempts are rows of their own.
func runRequestID(requestID string, n int) string {
	return fmt.Sprintf("%s~run%d", requestID, n)
}

// runActivityID is the activity id of run n (n >= 2) of a request id.
func runActivityID(organizationID, requestID string, n int) string {
	return uuid.NewSHA1(requestNamespace, fmt.Appendf(nil, "%s\x00%s\x00run%d", organizationID, requestID, n)).String()
}

// requestNamespace scopes the UUIDs derived from request ids.
var requestNamespace = uuid.MustParse("6f0c1d1e-5a55-4c39-9a43-7c3d5e0b9a11")

// ActivityID is the activity id of a task with a client-given request id:
// the same (organization, request id) always maps to the same activity, which
// is what makes a retried DelegateTask idempotent.
func ActivityID(organizationID, requestID string) string {
	return uuid.NewSHA1(requestNamespace, []byte(organizationID+"\x00"+requestID)).String()
}
