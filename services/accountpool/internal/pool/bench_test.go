package pool

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// discardLedger is a memstore that keeps no usage rows: it isolates the
// pool's own cost from the memstore's ever-growing ledger, which a
// production pool does not have (pgstore writes rows to PostgreSQL; its
// group commit is benchmarked in pgstore).
type discardLedger struct{ *memstore.Store }

func (discardLedger) InsertUsage(_ context.Context, r store.UsageRecord) (store.UsageRecord, error) {
	return r, nil
}

// BenchmarkSelectAndRecord measures the hot path, one SelectAccount and one
// RecordRequest, against organizations of different sizes. Every strategy
// judges every account, so the cost grows linearly with the organization;
// the per-account part is the scan in Select (scan.judgeOne).
//
// The clock moves 10ms per iteration: 100 requests a second, which the
// accounts' buckets sustain at every size, so the benchmark measures
// selections, not exhaustion. explain=false is the orchestrator's in-process
// path; explain=true adds the per-account explanation SelectAccount returns
// over gRPC.
func BenchmarkSelectAndRecord(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		for _, ledger := range []string{"memstore", "discard"} {
			for _, explain := range []bool{false, true} {
				name := fmt.Sprintf("accounts=%d/ledger=%s/explain=%t", n, ledger, explain)
				b.Run(name, func(b *testing.B) {
					f := newFixture(b, func(c *Config) {
						if ledger == "discard" {
							c.Store = discardLedger{c.Store.(*memstore.Store)}
						}
					})
					for i := range n {
						f.register(fmt.Sprintf("acct-%04d", i), "scale")
					}
					req := f.selectReq(estimate(2_000, 500))
					req.Explain = explain
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						f.clock.Advance(10 * time.Millisecond)
						sel, err := f.pool.Select(f.ctx, req)
						if err != nil {
							b.Fatal(err)
						}
						_, err = f.pool.Record(f.ctx, RecordRequest{
							OrgID: f.org, LeaseID: sel.LeaseID, AccountID: sel.AccountID,
							RequestID: strconv.Itoa(i), Attempt: 1, Outcome: store.OutcomeSuccess,
							Model: req.Model, Tokens: Tokens{Input: 1_800, Output: 450},
						})
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkJudge is the per-account part of every selection.
func BenchmarkJudge(b *testing.B) {
	f := newFixture(b)
	now := f.clock.Now()
	lim, _ := f.pool.tiers.Limits("scale", FamilySonnet)
	amt := Amount{Requests: 1, Input: 2_000, Output: 500}
	var l Live
	l.Buckets.reserve(amt)
	l.Buckets.settle(lim, amt, amt, now.Add(-time.Second))
	l.Buckets.reserve(amt)
	var v verdict
	for b.Loop() {
		f.pool.judge(&v, l.Records(), &lim, &amt, now, now.UnixNano())
	}
	if !v.ok() {
		b.Fatal("the account should be eligible")
	}
}
