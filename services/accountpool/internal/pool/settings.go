package pool

import (
	"context"
	"fmt"
	"math"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Ranges of the task limits. The upper bounds are far above any sane
// setting (the orchestrator's defaults are 256 concurrent, 50/s, burst
// 256) and keep a typo from disabling a limit in effect; migration 00006
// checks the same ranges.
const (
	MaxTaskLimitConcurrent = 100000
	MaxTaskLimitPerSecond  = 100000
	MaxTaskLimitBurst      = 100000
)

// SettingsChange is one UpdateOrganizationSettings: the fields to change,
// each left unchanged when zero (Strategy "") or nil (TaskLimits).
type SettingsChange struct {
	Strategy store.Strategy
	// TaskLimits, when set, replaces all three limits; a zero field is the
	// orchestrator's default for that limit.
	TaskLimits *store.TaskLimits
}

// CheckTaskLimits reports the first limit out of range as a FieldError
// under field (e.g. "task_limits"): every limit must be within
// [0, its maximum] and the rate finite.
func CheckTaskLimits(field string, l store.TaskLimits) error {
	switch {
	case l.MaxConcurrentTasks < 0 || l.MaxConcurrentTasks > MaxTaskLimitConcurrent:
		return &FieldError{Field: field + ".max_concurrent_tasks",
			Problem: fmt.Sprintf("%d is out of range; use 1 to %d, or 0 for the orchestrator's default", l.MaxConcurrentTasks, MaxTaskLimitConcurrent)}
	case math.IsNaN(l.TasksPerSecond) || math.IsInf(l.TasksPerSecond, 0) || l.TasksPerSecond < 0 || l.TasksPerSecond > MaxTaskLimitPerSecond:
		return &FieldError{Field: field + ".tasks_per_second",
			Problem: fmt.Sprintf("%v is out of range; use a number above 0 up to %d (fractions allowed, e.g. 0.5), or 0 for the orchestrator's default", l.TasksPerSecond, MaxTaskLimitPerSecond)}
	case l.Burst < 0 || l.Burst > MaxTaskLimitBurst:
		return &FieldError{Field: field + ".burst",
			Problem: fmt.Sprintf("%d is out of range; use 1 to %d, or 0 for the orchestrator's default", l.Burst, MaxTaskLimitBurst)}
	}
	return nil
}

// ChangeSettings applies c to the organization's settings in one write and
// returns the result: FieldError for an unknown strategy or a task limit out
// of range (nothing is changed). Fields c leaves unset keep their stored
// values.
func (p *Pool) ChangeSettings(ctx context.Context, orgID string, c SettingsChange) (store.Settings, error) {
	if c.Strategy != "" && !validStrategy(c.Strategy) {
		return store.Settings{}, unknownStrategy("selection_strategy", c.Strategy)
	}
	if c.TaskLimits != nil {
		if err := CheckTaskLimits("task_limits", *c.TaskLimits); err != nil {
			return store.Settings{}, err
		}
	}
	var out store.Settings
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		out = v.settings
		if c.Strategy != "" {
			out.SelectionStrategy = c.Strategy
		}
		if c.TaskLimits != nil {
			out.TaskLimits = *c.TaskLimits
		}
		out.OrganizationID = orgID
		out.UpdateTime = store.Normalize(p.now())
		if err := p.store.PutSettings(ctx, out); err != nil {
			return nil, err
		}
		n := v.clone()
		n.settings = out
		return n, nil
	})
	return out, err
}
