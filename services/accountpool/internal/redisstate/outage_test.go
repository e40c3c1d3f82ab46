package redisstate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/redistest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/redisstate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// ownRedis is a redis-server this test starts and stops itself, on a port
// of its own, keeping nothing on disk.
type ownRedis struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
}

func startOwnRedis(t *testing.T) *ownRedis {
	t.Helper()
	redistest.URL(t) // Redis tests run only where a Redis is meant to be
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	r := &ownRedis{t: t, port: port}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *ownRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *ownRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	require.NoError(r.t, r.cmd.Start())
	c := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer c.Close()
	require.Eventually(r.t, func() bool { return c.Ping(context.Background()).Err() == nil }, 10*time.Second, 10*time.Millisecond)
}

func (r *ownRedis) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// replica is one AccountPool's pool over the shared Redis and store.
func replica(t *testing.T, r *ownRedis, st *memstore.Store, keys *crypto.Keyring, degrade bool) (*pool.Pool, *redisstate.State, *pool.DegradingState) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	rs, err := redisstate.New(redisstate.Config{Client: c, Namespace: "outage", Logger: quiet()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rs.Close() })
	var state pool.State = rs
	var ds *pool.DegradingState
	if degrade {
		ds = pool.NewDegradingState(rs, quiet())
		state = ds
	}
	p, err := pool.New(pool.Config{Store: st, Keys: keys, State: state, Logger: quiet()})
	require.NoError(t, err)
	return p, rs, ds
}

func TestRedisOutage(t *testing.T) {
	r := startOwnRedis(t)
	spec, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	keys, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	st := memstore.New()
	ctx := context.Background()

	closed, _, _ := replica(t, r, st, keys, false)
	degraded, rs, ds := replica(t, r, st, keys, true)
	require.Eventually(t, func() bool { return rs.Replicas() == 2 }, 10*time.Second, 10*time.Millisecond, "both replicas heartbeat")

	const org = "org-outage"
	_, err = closed.RegisterAccount(ctx, pool.NewAccount{OrgID: org, Name: "a", APIKey: secret.New("sk-ant-a"), Tier: "tier1"})
	require.NoError(t, err)
	req := pool.SelectRequest{OrgID: org, Model: "claude-sonnet-4-5", EstimatedInputTokens: 10}
	_, err = degraded.Select(ctx, req)
	require.NoError(t, err, "the replicas see the account the other registered")

	r.stop()
	_, err = closed.Select(ctx, req)
	require.ErrorIs(t, err, pool.ErrStateUnavailable, "fail closed: SelectAccount answers Unavailable")

	admitted := 0
	for ; admitted < 100; admitted++ {
		if _, err := degraded.Select(ctx, req); err != nil {
			var ex *pool.ExhaustedError
			require.ErrorAs(t, err, &ex, "degrade: the replica keeps selecting, on state of its own")
			break
		}
	}
	require.True(t, ds.Degraded())
	require.Equal(t, 25, admitted, "half of tier 1's 50 requests a minute: one of two replicas")

	r.start()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { ds.Run(runCtx); close(done) }()
	require.Eventually(t, func() bool { return !ds.Degraded() }, 10*time.Second, 10*time.Millisecond, "back on Redis once it answers")
	cancel()
	<-done
	sel, err := degraded.Select(ctx, req)
	require.NoError(t, err)
	_, err = closed.Record(ctx, pool.RecordRequest{OrgID: org, LeaseID: sel.LeaseID, AccountID: sel.AccountID, RequestID: "r1", Attempt: 1, Outcome: store.OutcomeSuccess, Model: req.Model})
	require.NoError(t, err, "and fail-closed replicas work again too")
	info, err := closed.GetAccount(ctx, org, sel.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(49), info.Capacity[1].RequestsRemaining, fmt.Sprint("the restarted Redis started empty: one request used, ", info.Capacity))
}
