package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

// countLines is how many lines of the logs contain every one of subs.
func countLines(logs *syncbuf.Buffer, subs ...string) int {
	n := 0
lines:
	for _, line := range strings.Split(logs.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue lines
			}
		}
		n++
	}
	return n
}

// A task that finds the pool busy waits in the pool: it makes one
// SelectAccount call, and runs as soon as the call holding the capacity
// settles. The tier's 1,500 output tokens a minute hold one reservation of
// the quick category's 1,024; the simulator's slow key answers after 2s
// with a few dozen tokens, which gives the rest back.
func TestAWaitingTaskIsWokenWhenCapacityFrees(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		tiers := filepath.Join(t.TempDir(), "tiers.json")
		require.NoError(t, os.WriteFile(tiers, []byte(`{"tiny": {"default": {"rpm": 1000, "input_tpm": 1000000, "output_tpm": 1500}}}`), 0o600))
		logs := &syncbuf.Buffer{}
		s := startStack(t, base.with(func(o *stackOptions) { o.tiersFile, o.logs = tiers, logs }))
		const key = "sk-ant-sim-slow-waiting"
		s.register(t, "waiter", "only", key, "tiny")

		type result struct {
			resp *orchestratorv1.DelegateTaskResponse
			at   time.Time
		}
		run := func() <-chan result {
			c := make(chan result, 1)
			go func() {
				resp, err := s.orchestrator.DelegateTask(testContext(t), quickTask("waiter"))
				if err != nil {
					t.Error(err)
				}
				c <- result{resp, time.Now()}
			}()
			return c
		}
		first := run()
		require.Eventually(t, func() bool { return s.sim.Stats(key).Requests == 1 }, 10*time.Second, time.Millisecond, "the first task reached the upstream")
		second := run()
		a, b := <-first, <-second
		for _, r := range []result{a, b} {
			require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, r.resp.GetStatus(), r.resp.GetError())
			require.EqualValues(t, 1, r.resp.GetMetadata().GetAttempts())
		}
		require.EqualValues(t, 2, s.sim.Stats(key).Requests)
		require.True(t, b.at.After(a.at.Add(time.Second)), "the second ran only after the first gave its capacity back")
		require.Equal(t, 2, countLines(logs, "finished call", "service=accountpool", "SelectAccount"), "one SelectAccount call per task: the waiting one did not poll")
		t.Logf("the second task finished %s after the first (the upstream takes 2s)", b.at.Sub(a.at).Round(time.Millisecond))
	})
}

// A breaker exists to fail fast: with one account that always answers 500,
// five tasks open its breaker and the ones after it fail at once, without
// waiting for the breaker to half-open and without calling the upstream.
func TestOpenBreakerFailsTasksAtOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		const key = "sk-ant-sim-500-always"
		s.register(t, "broken-org", "broken", key, "scale")
		for i := range 9 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			resp, err := s.orchestrator.DelegateTask(ctx, quickTask("broken-org"))
			cancel()
			require.NoError(t, err)
			require.NotEqual(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
			if i >= 5 {
				require.Zero(t, resp.GetMetadata().GetAttempts(), "task %d: no attempt behind an open breaker", i)
				require.Contains(t, resp.GetError(), "breaker open", "task %d", i)
			}
		}
		require.LessOrEqual(t, s.sim.Stats(key).Requests, int64(6), "at most six upstream calls")
	})
}
