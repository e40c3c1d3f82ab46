package pool

import (
	"fmt"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// BenchmarkSelectAndRecord measures the hot path, one SelectAccount and one
// RecordRequest, against organizations of different sizes. Least-loaded
// scans every account, so the cost grows linearly with the organization.
func BenchmarkSelectAndRecord(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			f := newFixture(b)
			for i := range n {
				f.register(fmt.Sprintf("acct-%04d", i), "scale")
			}
			req := f.selectReq(estimate(2_000, 500))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				f.clock.Advance(time.Millisecond)
				sel, err := f.pool.Select(f.ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				_, err = f.pool.Record(f.ctx, RecordRequest{
					OrgID: f.org, LeaseID: sel.LeaseID, AccountID: sel.AccountID,
					RequestID: fmt.Sprintf("req-%d", i), Attempt: 1, Outcome: store.OutcomeSuccess,
					Model: req.Model, Tokens: Tokens{Input: 1_800, Output: 450},
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
