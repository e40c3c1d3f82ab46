package main

import (
	"errors"
	"flag"
	"math"
	"strconv"

	"github.com/switchyard-dev/switchyard/services/orchestrator"
)

// Service-wide task limits per organization and the upstream connection
// bound: the Orchestrator's own defaults.
const (
	defaultOrgMaxConcurrent  = orchestrator.DefaultOrgMaxConcurrentTasks
	defaultOrgTasksPerSecond = float64(orchestrator.DefaultOrgTasksPerSecond)
	defaultOrgTaskBurst      = orchestrator.DefaultOrgTaskBurst
	defaultUpstreamMaxConns  = orchestrator.DefaultUpstreamMaxConns
)

func (f *orchestratorFlags) registerTaskLimits(fs *flag.FlagSet) {
	envVar(fs, &f.orgMaxConcurrent, "org-max-concurrent-tasks", envOrgMaxConcurrent, defaultOrgMaxConcurrent, parsePositiveInt,
		"tasks one organization may run at once in this orchestrator; its settings (task_limits) may override it")
	envVar(fs, &f.orgTasksPerSecond, "org-tasks-per-second", envOrgTasksPerSecond, defaultOrgTasksPerSecond, parsePositiveFloat,
		"tasks one organization may start per second, sustained, in this orchestrator; its settings may override it")
	envVar(fs, &f.orgTaskBurst, "org-task-burst", envOrgTaskBurst, defaultOrgTaskBurst, parsePositiveInt,
		"tasks one organization may start at once above its rate; its settings may override it")
	envVar(fs, &f.upstreamMaxConns, "upstream-max-conns", envUpstreamMaxConns, defaultUpstreamMaxConns, parsePositiveInt,
		"connections to the Anthropic API at most; a call beyond it waits for one within its attempt timeout")
}

// parsePositiveFloat accepts a finite number above 0, fractions included.
func parsePositiveFloat(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil:
		return 0, errors.New("not a number; use one such as 50 or 0.5")
	case math.IsNaN(v) || math.IsInf(v, 0) || v <= 0:
		return 0, errors.New("out of range; use a finite number above 0, such as 50 or 0.5")
	}
	return v, nil
}
