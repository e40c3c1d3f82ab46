package pgstore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// benchNow anchors the benchmarks' ledgers.
var benchNow = time.Date(2026, 5, 1, 12, 34, 56, 0, time.UTC)

// seedLedger writes rows ledger rows as the owner, in statements of at
// most 50,000 (the rollup trigger runs per statement, as it does for a
// group commit): 6 accounts and a legacy key, 3 models, spread evenly
// over [end-span, end), dealt round-robin to orgs.
func seedLedger(tb testing.TB, owner *pgxpool.Pool, orgs []string, rows int, end time.Time, span time.Duration) {
	tb.Helper()
	ctx := context.Background()
	for done := 0; done < rows; done += 50_000 {
		n := min(50_000, rows-done)
		_, err := owner.Exec(ctx, `INSERT INTO usage_records (id, organization_id, account_id, account_name, request_id, attempt, outcome, model,
				category, session_id, user_id, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status,
				error_type, upstream_request_id, duration_ms, create_time)
			SELECT gen_random_uuid(), ($1::text[])[1 + i % cardinality($1::text[])],
				CASE WHEN i % 7 = 0 THEN NULL ELSE ('00000000-0000-4000-8000-00000000000' || (i % 7))::uuid END,
				'acct-' || (i % 7), 'req-' || gen_random_uuid(), 1, CASE WHEN i % 10 = 0 THEN 'rate_limited' ELSE 'success' END,
				'model-' || (i % 3), 'quick', '', '', 100, 20, 5, 7, 0.25, 200, '', 'up', 1000,
				$2::timestamptz - ((i + 1) * $3::interval / $4::int)
			FROM generate_series($5::int, $5::int + $6::int - 1) AS i`, orgs, end, span, rows, done, n)
		require.NoError(tb, err)
	}
	_, err := owner.Exec(ctx, `ANALYZE usage_records; ANALYZE usage_rollups`)
	require.NoError(tb, err)
}

// ledgerScanSQL is SumUsage before the rollups: every matching row of the
// ledger, summed on each call. The benchmarks compare against it.
const ledgerScanSQL = `SELECT * FROM (
		SELECT COALESCE(account_id::text, '') AS account_id,
			(array_agg(account_name ORDER BY create_time DESC, id DESC))[1] AS account_name,
			count(*), count(*) FILTER (WHERE outcome <> 'success'),
			sum(input_tokens)::bigint, sum(output_tokens)::bigint,
			sum(cache_read_tokens)::bigint, sum(cache_creation_tokens)::bigint, sum(cost_usd)
		FROM usage_records WHERE organization_id = $1 AND create_time >= $2 AND create_time < $3
		GROUP BY usage_records.account_id,
			CASE WHEN usage_records.account_id IS NULL THEN usage_records.account_name END
	) t ORDER BY t.account_name COLLATE "C", t.account_id COLLATE "C"`

func ledgerScan(ctx context.Context, db *pgxpool.Pool, org string, f store.UsageFilter) error {
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, org)
	b.Queue(ledgerScanSQL, org, f.Start, f.End)
	return db.SendBatch(ctx, b).Close()
}

// BenchmarkSumUsage sums one organization's last day and last 30 days
// (edges not on the hour, as GetUsage's default range is), which hold
// the same 3,000 rows whatever else the ledger holds: 10,000 or 300,000
// more rows, half of them the organization's own from before the range,
// half another organization's. "rollups" is SumUsage; "ledger-scan" the
// query it replaced, over the same range; "ledger-scan-unbounded" that
// query over the organization's whole ledger, which is what GetUsage
// without a start_time did before ranges were bounded.
func BenchmarkSumUsage(b *testing.B) {
	for _, rows := range []int{10_000, 300_000} {
		f := newFixture(b, Config{})
		day := 24 * time.Hour
		seedLedger(b, f.owner, []string{"bench-org"}, 3_000, benchNow, 30*day)
		seedLedger(b, f.owner, []string{"bench-org"}, rows/2, benchNow.Add(-30*day), 370*day)
		seedLedger(b, f.owner, []string{"bench-other"}, rows/2, benchNow, 60*day)
		ctx := context.Background()
		for _, days := range []int{1, 30} {
			filter := store.UsageFilter{Start: benchNow.Add(-time.Duration(days) * day), End: benchNow}
			want, err := f.store.SumUsage(ctx, "bench-org", filter)
			require.NoError(b, err)
			require.NotEmpty(b, want)
			b.Run(fmt.Sprintf("ledger=%d/range=%dd/rollups", rows, days), func(b *testing.B) {
				for b.Loop() {
					if _, err := f.store.SumUsage(ctx, "bench-org", filter); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("ledger=%d/range=%dd/ledger-scan", rows, days), func(b *testing.B) {
				for b.Loop() {
					if err := ledgerScan(ctx, f.store.db, "bench-org", filter); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("ledger=%d/ledger-scan-unbounded", rows), func(b *testing.B) {
			all := store.UsageFilter{Start: benchNow.Add(-1000 * day), End: benchNow.Add(day)}
			for b.Loop() {
				if err := ledgerScan(ctx, f.store.db, "bench-org", all); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSumUsageDense sums 1 and 30 days of a ledger whose rows are
// all inside the last 60 days: the range's rows grow with the ledger, and
// the rollups cost at most one row per (account, model) and hour.
func BenchmarkSumUsageDense(b *testing.B) {
	for _, rows := range []int{10_000, 300_000} {
		f := newFixture(b, Config{})
		seedLedger(b, f.owner, []string{"bench-org", "bench-other"}, rows, benchNow, 60*24*time.Hour)
		ctx := context.Background()
		for _, days := range []int{1, 30} {
			filter := store.UsageFilter{Start: benchNow.Add(-time.Duration(days) * 24 * time.Hour), End: benchNow}
			b.Run(fmt.Sprintf("ledger=%d/range=%dd/rollups", rows, days), func(b *testing.B) {
				for b.Loop() {
					if _, err := f.store.SumUsage(ctx, "bench-org", filter); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("ledger=%d/range=%dd/ledger-scan", rows, days), func(b *testing.B) {
				for b.Loop() {
					if err := ledgerScan(ctx, f.store.db, "bench-org", filter); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkHotPathUnderUsageLoad is the attack of issue 15: organization
// A loops usage reads from 4 callers while organization B writes usage
// rows (RecordRequest's ledger insert) and reads an account (the hot
// path's store reads), one call at a time. It reports B's p50 and p99
// with A idle; with A looping the unbounded ledger scan on the hot path's
// own 4 connections (before); and with A looping SumUsage over 60 days on
// a separate pool of 2 connections (after). The ledger holds 300,000 of
// A's rows.
func BenchmarkHotPathUnderUsageLoad(b *testing.B) {
	f := newFixture(b, Config{})
	seedLedger(b, f.owner, []string{"org-a"}, 300_000, benchNow, 60*24*time.Hour)
	ctx := context.Background()
	appCfg, err := pgxpool.ParseConfig(f.schema.AppURL)
	require.NoError(b, err)
	newPool := func(n int32) *pgxpool.Pool {
		cfg := appCfg.Copy()
		cfg.MaxConns = n
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(b, err)
		b.Cleanup(p.Close)
		return p
	}
	acct := store.Account{ID: "00000000-0000-4000-8000-0000000000b1", OrganizationID: "org-b"}
	_, err = f.owner.Exec(ctx, `INSERT INTO accounts (id, organization_id, name, tier, status, weight, priority, key_ciphertext, key_version, create_time, update_time)
		VALUES ($1, $2, 'b', 'tier2', 'active', 1, 0, '\x01', 1, now(), now())`, acct.ID, acct.OrganizationID)
	require.NoError(b, err)

	for _, mode := range []string{"idle", "before", "after"} {
		b.Run(mode, func(b *testing.B) {
			hot := newPool(4)
			cfg := Config{Logger: discard(), MaxBatch: 256}
			if mode == "after" {
				cfg.UsageDB = newPool(2)
			}
			s := New(hot, cfg)
			defer s.Close()
			loopCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var reads int64
			var mu sync.Mutex
			if mode != "idle" {
				for range 4 {
					wg.Go(func() {
						for loopCtx.Err() == nil {
							var err error
							if mode == "before" {
								err = ledgerScan(loopCtx, hot, "org-a", store.UsageFilter{Start: benchNow.Add(-1000 * 24 * time.Hour), End: benchNow.Add(time.Hour)})
							} else {
								_, err = s.SumUsage(loopCtx, "org-a", store.UsageFilter{Start: benchNow.Add(-60 * 24 * time.Hour), End: benchNow})
							}
							if err == nil {
								mu.Lock()
								reads++
								mu.Unlock()
							}
						}
					})
				}
				time.Sleep(200 * time.Millisecond)
			}
			var lat []time.Duration
			deadline := time.Now().Add(5 * time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				r := store.UsageRecord{ID: fmt.Sprintf("00000000-0000-4000-9000-%012d", i+1_000_000*len(mode)), OrganizationID: "org-b",
					AccountID: acct.ID, AccountName: "b", RequestID: fmt.Sprintf("%s-%d", mode, i), Attempt: 1, Outcome: store.OutcomeSuccess,
					Model: "m", CreateTime: benchNow}
				if _, err := s.InsertUsage(ctx, r); err != nil {
					b.Fatal(err)
				}
				if _, err := s.GetAccount(ctx, "org-b", acct.ID); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			stop()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(len(lat)), "b-calls")
			b.ReportMetric(float64(reads), "a-reads")
		})
	}
}
