package e2e_test

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// TestBurstIsSpreadWithinWhatTheAccountsCanTake sends a burst larger than
// the accounts can take together to two tier1 accounts (50 requests a
// minute each, by the pool's table and by the simulator's buckets for
// their sk-ant-sim-tier1- keys). The pool must spread it over both and
// stop at their capacity itself: the simulator never rejects a request for
// capacity the pool already knew was spent, and the tasks beyond capacity
// come back RATE_LIMITED from the pool, without an upstream call.
//
// The tasks beyond capacity wait up to the orchestrator's MaxWait (10s) for
// a request to refill before they give up, so the test takes that long.
func TestBurstIsSpreadWithinWhatTheAccountsCanTake(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		keys := map[string]string{} // account id → simulator key
		for _, name := range []string{"burst-a", "burst-b"} {
			key := "sk-ant-sim-tier1-" + name
			keys[s.register(t, "acme", name, key, "tier1").GetId()] = key
		}

		// 160 tasks against 2 × 50 requests a minute. max_tokens is small
		// so the pool's output estimate is what the simulator reserves
		// (it reserves max_tokens): requests, not output tokens, run out.
		const burst = 160
		start := time.Now()
		responses := make([]*orchestratorv1.DelegateTaskResponse, burst)
		errs := make([]error, burst)
		var wg sync.WaitGroup
		for i := range burst {
			wg.Go(func() {
				responses[i], errs[i] = s.orchestrator.DelegateTask(testContext(t), &orchestratorv1.DelegateTaskRequest{
					OrganizationId: "acme", Category: "quick", Prompt: fmt.Sprintf("Task %d of the burst: answer in one line.", i),
					SessionId: fmt.Sprintf("burst-%d", i), UserId: "user-1", MaxTokens: 64,
				})
			})
		}
		wg.Wait()
		elapsed := time.Since(start)

		succeeded, limited := 0, 0
		for i, resp := range responses {
			require.NoError(t, errs[i], "task %d", i)
			switch resp.GetStatus() {
			case orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
				succeeded++
				require.EqualValues(t, 1, resp.GetMetadata().GetAttempts(), "task %d needed no failover", i)
			case orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED:
				limited++
				require.Zero(t, resp.GetMetadata().GetAttempts(), "task %d: rate limited by the pool, before any upstream call: %s", i, resp.GetError())
				require.Positive(t, resp.GetMetadata().GetRetryAfterMs(), "task %d says when to come back", i)
			default:
				t.Fatalf("task %d: %s: %s", i, resp.GetStatus(), resp.GetError())
			}
		}

		// Each account can have taken its full bucket (50) plus what refilled
		// while the burst ran, and no more.
		refill := int64(math.Ceil(elapsed.Seconds() * 50 / 60))
		var upstream int64
		for id, key := range keys {
			st := s.sim.Stats(key)
			require.Zero(t, st.CapacityRejected, "%s: the simulator rejected a request for capacity the pool knew was spent", key)
			require.Zero(t, st.Faulted, key)
			require.GreaterOrEqual(t, st.Requests, int64(40), "%s: the burst is spread over both accounts (%d requests)", key, st.Requests)
			require.LessOrEqual(t, st.Requests, 50+refill, "%s: at most the bucket and its refill", key)
			upstream += st.Requests

			got, err := s.pool.GetAccount(testContext(t), &accountpoolv1.GetAccountRequest{OrganizationId: "acme", AccountId: id})
			require.NoError(t, err)
			for _, c := range got.GetAccount().GetCapacity() {
				if c.GetModelFamily() == "haiku" {
					require.LessOrEqual(t, c.GetRequestsRemaining(), int64(10), "%s: the pool knows the requests are spent", key)
				}
			}
		}
		require.EqualValues(t, succeeded, upstream, "one upstream call per successful task, none for the others")
		require.Equal(t, burst, succeeded+limited)
		require.Positive(t, limited, "the burst was larger than the accounts' capacity")
	})
}
