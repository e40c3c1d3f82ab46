package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// TestRewrapUnderLoadLosesNoKeyAndFailsNoTask rotates the key-encryption
// key as docs/security.md describes, with traffic flowing: accounts
// registered under version 1, the services restarted with versions 1 and
// 2, `switchyard keys rewrap` (accountpool.Rewrap) run while DelegateTasks
// stream through them, then version 1 retired. Every task succeeds, every
// key ends under version 2, and every key still reaches the upstream as
// itself: the simulator counts requests per API key, and accepts any key,
// so a key that decrypted to anything else would show up under a name
// that was never registered.
func TestRewrapUnderLoadLosesNoKeyAndFailsNoTask(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.All()...)
	v1, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	second, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	v2 := "2:" + strings.TrimPrefix(second, "1:")
	const accounts = 8
	keys := map[string]string{} // account id → simulator key

	// The first stack, on version 1 alone, registers the accounts and
	// stops when the subtest ends, as its processes would before being
	// restarted with the new keyring.
	require.True(t, t.Run("register under version 1", func(t *testing.T) {
		s := startStack(t, stackOptions{databaseURL: schema.AppURL, keyring: v1})
		for i := range accounts {
			key := fmt.Sprintf("sk-ant-sim-scale-rewrap-%d", i)
			a := s.register(t, "acme", fmt.Sprintf("rewrap-%d", i), key, "scale")
			require.EqualValues(t, 1, a.GetKeyVersion())
			keys[a.GetId()] = key
		}
	}))

	s := startStack(t, stackOptions{databaseURL: schema.AppURL, keyring: v1 + "," + v2})
	// Round-robin, so a run of tasks reaches every account.
	_, err = s.pool.UpdateOrganizationSettings(testContext(t), &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: "acme", SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
	})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	task := func(s *stack, worker, i int) error {
		resp, err := s.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{
			OrganizationId: "acme", Category: "quick", Prompt: fmt.Sprintf("Task %d of worker %d: answer in one line.", i, worker),
			SessionId: fmt.Sprintf("rewrap-%d", worker), UserId: "user-1", MaxTokens: 64,
		})
		switch {
		case err != nil:
			return fmt.Errorf("worker %d task %d: %w", worker, i, err)
		case resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
			return fmt.Errorf("worker %d task %d: %s: %s", worker, i, resp.GetStatus(), resp.GetError())
		}
		return nil
	}

	// Load: workers run tasks until a few after the rewrap has finished,
	// never more than maxPerWorker each.
	const workers, maxPerWorker, afterRewrap = 8, 200, 5
	var (
		wg                   sync.WaitGroup
		mu                   sync.Mutex
		failures             []error
		completed, overlap   atomic.Int64
		rewrapping, finished atomic.Bool // the rewrap has begun, has ended
	)
	for w := range workers {
		wg.Go(func() {
			for i, after := 0, 0; i < maxPerWorker && after < afterRewrap; i++ {
				doneBefore := finished.Load()
				err := task(s, w, i)
				completed.Add(1)
				if !doneBefore && rewrapping.Load() {
					overlap.Add(1) // started before the rewrap ended, ended after it began
				}
				if doneBefore {
					after++
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		})
	}
	require.Eventually(t, func() bool { return completed.Load() >= workers }, 30*time.Second, time.Millisecond, "the load is running")
	rewrapping.Store(true)
	report, err := accountpool.Rewrap(ctx, accountpool.RewrapConfig{
		DatabaseURL: schema.AppURL, Keyring: v1 + "," + v2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	finished.Store(true)
	wg.Wait()
	require.NoError(t, err)
	require.Empty(t, failures[:min(len(failures), 3)], "every task during the rewrap succeeds; %d failed, the first shown", len(failures))
	require.Positive(t, overlap.Load(), "tasks ran while the rewrap did")
	t.Logf("%d tasks, %d of them while the rewrap ran", completed.Load(), overlap.Load())

	require.Equal(t, accounts, report.Rewrapped)
	require.Zero(t, report.AlreadyCurrent)
	require.Zero(t, report.Skipped)
	require.Empty(t, report.Failed)
	require.Equal(t, map[int32]int{2: accounts}, report.Status.Versions)
	status, err := accountpool.KeyStatus(ctx, accountpool.RewrapConfig{DatabaseURL: schema.AppURL, Keyring: v2, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.Equal(t, map[int32]int{2: accounts}, status.Versions, "every account is at key version 2")
	require.Zero(t, status.Undecryptable(), "version 1 can be retired")

	// The serving AccountPool reloaded every rewrapped account.
	require.Eventually(t, func() bool {
		list, err := s.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
		if err != nil || len(list.GetAccounts()) != accounts {
			return false
		}
		for _, a := range list.GetAccounts() {
			if a.GetKeyVersion() != 2 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the view holds the rewrapped keys")

	// Every upstream call so far carried a registered key.
	var upstream int64
	for _, key := range keys {
		upstream += s.sim.Stats(key).Requests
	}
	require.Equal(t, completed.Load(), upstream, "one upstream call per task, each with a registered key")

	// Each rewrapped key, decrypted from its version-2 ciphertext, still
	// works: a round-robin run reaches every account.
	requireEveryKeyWorks := func(s *stack) {
		t.Helper()
		before := map[string]int64{}
		for _, key := range keys {
			before[key] = s.sim.Stats(key).Requests
		}
		for i := range 2 * accounts {
			require.NoError(t, task(s, -1, i))
		}
		for id, key := range keys {
			require.Greater(t, s.sim.Stats(key).Requests, before[key], "account %s (%s) took a task after the rewrap", id, key)
		}
	}
	requireEveryKeyWorks(s)

	// Version 1 retired: a stack with version 2 alone serves every key.
	retired := startStack(t, stackOptions{databaseURL: schema.AppURL, keyring: v2})
	requireEveryKeyWorks(retired)
}
