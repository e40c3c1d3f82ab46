package redisstate_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/redistest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/redisstate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// roundTrips counts the commands and pipelines a client sends: each is one
// round trip to Redis.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// discardLedger keeps no usage rows, as in the pool's own benchmark.
type discardLedger struct{ *memstore.Store }

func (discardLedger) InsertUsage(_ context.Context, r store.UsageRecord) (store.UsageRecord, error) {
	return r, nil
}

// BenchmarkSelectAndRecord is one SelectAccount and one RecordRequest, the
// pool's hot path, on MemState and on RedisState (the Redis of
// SWITCHYARD_TEST_REDIS_URL), at 10 and 100 accounts. On Redis it reports
// the round trips per pair (heartbeats and expiry checks are off the
// per-call path and excluded: the expiry check runs at most every 100ms).
func BenchmarkSelectAndRecord(b *testing.B) {
	for _, backend := range []string{"memory", "redis"} {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("state=%s/accounts=%d", backend, n), func(b *testing.B) {
				var state pool.State = pool.NewMemState()
				var trips *roundTrips
				if backend == "redis" {
					c := redistest.Client(b)
					trips = &roundTrips{}
					c.AddHook(trips)
					rs, err := redisstate.New(redisstate.Config{Client: c, Namespace: redistest.Namespace(b, c), Logger: quiet()})
					require.NoError(b, err)
					b.Cleanup(func() { _ = rs.Close() })
					state = rs
				}
				spec, err := crypto.GenerateKeyring()
				require.NoError(b, err)
				keys, err := crypto.ParseKeyring(spec)
				require.NoError(b, err)
				// 100 pairs a second of pool time, which the accounts sustain
				// at every size: the benchmark measures selections, not
				// exhaustion.
				clock := fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
				p, err := pool.New(pool.Config{Store: discardLedger{memstore.New()}, Keys: keys, State: state, Logger: quiet(), Now: clock.Now})
				require.NoError(b, err)
				ctx := context.Background()
				const org = "org-bench"
				for i := range n {
					_, err := p.RegisterAccount(ctx, pool.NewAccount{OrgID: org, Name: fmt.Sprintf("acct-%03d", i), APIKey: secret.New("sk-ant-x"), Tier: "scale"})
					require.NoError(b, err)
				}
				req := pool.SelectRequest{OrgID: org, Model: "claude-sonnet-4-5", EstimatedInputTokens: 200, EstimatedOutputTokens: 50}
				pair := func() {
					clock.Advance(10 * time.Millisecond)
					sel, err := p.Select(ctx, req)
					if err != nil {
						b.Fatal(err)
					}
					_, err = p.Record(ctx, pool.RecordRequest{OrgID: org, LeaseID: sel.LeaseID, AccountID: sel.AccountID, RequestID: sel.LeaseID, Attempt: 1,
						Outcome: store.OutcomeSuccess, Model: req.Model, Tokens: pool.Tokens{Input: 200, Output: 50}})
					if err != nil {
						b.Fatal(err)
					}
				}
				pair() // warm the views and caches
				var start int64
				if trips != nil {
					start = trips.n.Load()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					pair()
				}
				b.StopTimer()
				if trips != nil {
					// Heartbeats run once a second; subtract them.
					beats := float64(b.Elapsed().Seconds())
					b.ReportMetric((float64(trips.n.Load()-start)-beats)/float64(b.N), "redis-trips/pair")
				}
			})
		}
	}
}
