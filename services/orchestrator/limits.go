package orchestrator

import (
	"context"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/limits"
)

// The service-wide task limits per organization, and the upstream
// connection bound, when Config leaves them zero: generous, so they stop
// one organization's flood (the concurrency cap bounds the descriptors and
// memory its tasks hold) rather than shape ordinary traffic.
const (
	DefaultOrgMaxConcurrentTasks = limits.DefaultMaxConcurrent
	DefaultOrgTasksPerSecond     = limits.DefaultPerSecond
	DefaultOrgTaskBurst          = limits.DefaultBurst
	DefaultUpstreamMaxConns      = executor.DefaultMaxConnsPerHost
)

// newLimiter builds the per-organization task limiter: the service-wide
// defaults of cfg (zero fields: limits.Default's), each overridden by the
// organization's OrganizationSettings.task_limits, read from the
// AccountPool and cached (see package limits). A pool that cannot answer
// leaves the defaults in force; it never fails a task.
func newLimiter(cfg Config, pool accountpoolv1.AccountPoolServiceClient) (*limits.Limiter, error) {
	defaults := limits.Default().With(limits.Limits{
		MaxConcurrent: cfg.OrgMaxConcurrentTasks, PerSecond: cfg.OrgTasksPerSecond, Burst: cfg.OrgTaskBurst,
	})
	if err := (limits.Limits{MaxConcurrent: cfg.OrgMaxConcurrentTasks, PerSecond: cfg.OrgTasksPerSecond, Burst: cfg.OrgTaskBurst}).CheckOverride(); err != nil {
		return nil, err
	}
	cfg.Logger.Info("organization task limits", "defaults", defaults.String())
	return limits.New(limits.Config{
		Defaults: defaults,
		Fetch:    settingsFetch(pool),
		Meter:    cfg.Telemetry.Meter,
		Logger:   cfg.Logger,
	})
}

// settingsFetch reads an organization's task limits from its settings. The
// call runs as the organization's task (its context carries the acting
// organization, which auth.ForwardOrganization sends on).
func settingsFetch(pool accountpoolv1.AccountPoolServiceClient) limits.Fetch {
	return func(ctx context.Context, orgID string) (limits.Limits, error) {
		resp, err := pool.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: orgID})
		if err != nil {
			return limits.Limits{}, err
		}
		tl := resp.GetSettings().GetTaskLimits()
		return limits.Limits{MaxConcurrent: int(tl.GetMaxConcurrentTasks()), PerSecond: tl.GetTasksPerSecond(), Burst: int(tl.GetBurst())}, nil
	}
}
