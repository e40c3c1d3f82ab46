package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// testUsageTotalsMatchBruteForce loads a randomized ledger (several
// organizations, accounts renamed between rows, legacy rows of several key
// names, several models, timestamps over a day and a half with some on
// exact hour boundaries and some shared, duplicates re-inserted
// concurrently with their originals, carrying other values) and checks
// SumUsage over random ranges, whole hours or not, bounded or not, with and
// without an account filter, against a brute-force sum of the rows the
// store accepted. Backends that keep summaries (pgstore's hourly rollups)
// must agree exactly: costs are multiples of 1/256, so float sums are exact
// in any order.
func testUsageTotalsMatchBruteForce(t *testing.T, s store.Store) {
	ctx := t.Context()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	hour0 := base.Truncate(time.Hour)
	const hours = 36

	orgs := []string{newOrg(), newOrg(), newOrg()}
	type acct struct{ id, name string }
	accounts := map[string][]acct{}
	for _, org := range orgs {
		for i := range 4 {
			accounts[org] = append(accounts[org], acct{uuid.NewString(), fmt.Sprintf("acct-%d", i)})
		}
		// Legacy key names: no account id, one total per name.
		for _, name := range []string{"default", "environment"} {
			accounts[org] = append(accounts[org], acct{"", name})
		}
	}
	models := []string{"claude-opus-4", "claude-sonnet-4", "claude-haiku-4"}
	outcomes := []store.Outcome{store.OutcomeSuccess, store.OutcomeSuccess, store.OutcomeSuccess, store.OutcomeRateLimited, store.OutcomeUpstreamError}
	at := func() time.Time {
		switch rng.IntN(8) {
		case 0: // an exact hour boundary
			return hour0.Add(time.Duration(rng.IntN(hours)) * time.Hour)
		case 1: // a shared instant
			return hour0.Add(90 * time.Minute)
		default:
			return hour0.Add(time.Duration(rng.Int64N(int64(hours*time.Hour))) / time.Microsecond * time.Microsecond)
		}
	}
	random := func(org string, n int) store.UsageRecord {
		a := accounts[org][rng.IntN(len(accounts[org]))]
		name := a.name
		if a.id != "" && rng.IntN(3) == 0 {
			name = a.name + "-renamed" // the newest row's name is the total's
		}
		return store.UsageRecord{
			ID: uuid.NewString(), OrganizationID: org, AccountID: a.id, AccountName: name,
			RequestID: fmt.Sprintf("req-%d", n), Attempt: int32(1 + rng.IntN(2)),
			Outcome: outcomes[rng.IntN(len(outcomes))], Model: models[rng.IntN(len(models))], Category: "quick",
			InputTokens: rng.Int64N(5000), OutputTokens: rng.Int64N(2000),
			CacheReadTokens: rng.Int64N(300), CacheCreationTokens: rng.Int64N(100),
			CostUSD: float64(rng.IntN(4096)) / 256, HTTPStatus: 200,
			UpstreamRequestID: fmt.Sprintf("up-%d", n), DurationMS: 10, CreateTime: at(),
		}
	}

	// Every row, and for a fifth of them a duplicate of the same call
	// (same request id, attempt and upstream id) with another id and
	// other values: whichever the store accepts first, the other is
	// refused and must count nowhere.
	var all []store.UsageRecord
	for n := range 500 {
		org := orgs[rng.IntN(len(orgs))]
		r := random(org, n)
		all = append(all, r)
		if rng.IntN(5) == 0 {
			dup := random(org, n)
			dup.RequestID, dup.Attempt, dup.UpstreamRequestID = r.RequestID, r.Attempt, r.UpstreamRequestID
			all = append(all, dup)
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	var (
		mu       sync.Mutex
		accepted = map[string][]store.UsageRecord{}
		wg       sync.WaitGroup
		work     = make(chan store.UsageRecord)
	)
	for range 8 {
		wg.Go(func() {
			for r := range work {
				got, err := s.InsertUsage(ctx, r)
				switch {
				case errors.Is(err, store.ErrDuplicate):
				case err != nil:
					t.Errorf("inserting %s: %v", r.RequestID, err)
				default:
					mu.Lock()
					accepted[r.OrganizationID] = append(accepted[r.OrganizationID], got)
					mu.Unlock()
				}
			}
		})
	}
	for _, r := range all {
		work <- r
	}
	close(work)
	wg.Wait()
	require.False(t, t.Failed())
	// A duplicate inserted again, once everything committed, is refused.
	for _, r := range all[:20] {
		r.ID = uuid.NewString()
		_, err := s.InsertUsage(ctx, r)
		require.ErrorIs(t, err, store.ErrDuplicate)
	}

	bound := func() time.Time {
		switch rng.IntN(5) {
		case 0:
			return time.Time{} // unbounded
		case 1:
			return hour0.Add(time.Duration(rng.IntN(hours+2)-1) * time.Hour)
		default:
			return hour0.Add(time.Duration(rng.Int64N(int64((hours+2)*time.Hour))-int64(time.Hour)) / time.Microsecond * time.Microsecond)
		}
	}
	for i := range 120 {
		org := orgs[i%len(orgs)]
		f := store.UsageFilter{Start: bound(), End: bound()}
		if !f.Start.IsZero() && !f.End.IsZero() && f.End.Before(f.Start) {
			f.Start, f.End = f.End, f.Start
		}
		if rng.IntN(4) == 0 {
			f.AccountID = accounts[org][rng.IntN(4)].id
		}
		got, err := s.SumUsage(ctx, org, f)
		require.NoError(t, err)
		want := bruteSum(accepted[org], f)
		if len(want) == 0 {
			require.Empty(t, got, "range %s", describe(f))
			continue
		}
		require.Equal(t, want, got, "range %s (seed %d)", describe(f), seed)

		if i%10 == 0 {
			n := 0
			var after *store.UsageCursor
			for {
				page, next, err := s.ListUsage(ctx, org, f, 7, after)
				require.NoError(t, err)
				n += len(page)
				if next == nil {
					break
				}
				after = next
			}
			var requests int64
			for _, tot := range want {
				requests += tot.Requests
			}
			require.Equal(t, requests, int64(n), "ListUsage lists every row SumUsage counts, range %s", describe(f))
		}
	}
}

func describe(f store.UsageFilter) string {
	return fmt.Sprintf("[%s, %s) account %q", f.Start.Format(time.RFC3339Nano), f.End.Format(time.RFC3339Nano), f.AccountID)
}

// bruteSum is SumUsage's contract applied to every row: one total per
// account, and per account name for legacy rows, named after the newest
// row, ordered by name then id.
func bruteSum(rows []store.UsageRecord, f store.UsageFilter) []store.UsageTotals {
	type key struct{ account, legacy string }
	totals := map[key]*store.UsageTotals{}
	newest := map[key]store.UsageRecord{}
	for _, r := range rows {
		if f.AccountID != "" && r.AccountID != f.AccountID ||
			!f.Start.IsZero() && r.CreateTime.Before(f.Start) ||
			!f.End.IsZero() && !r.CreateTime.Before(f.End) {
			continue
		}
		k := key{account: r.AccountID}
		if r.AccountID == "" {
			k.legacy = r.AccountName
		}
		tot := totals[k]
		if tot == nil {
			tot = &store.UsageTotals{AccountID: r.AccountID}
			totals[k] = tot
		}
		if n, ok := newest[k]; !ok || r.CreateTime.After(n.CreateTime) || r.CreateTime.Equal(n.CreateTime) && r.ID > n.ID {
			newest[k] = r
			tot.AccountName = r.AccountName
		}
		tot.Requests++
		if r.Outcome != store.OutcomeSuccess {
			tot.FailedRequests++
		}
		tot.InputTokens += r.InputTokens
		tot.OutputTokens += r.OutputTokens
		tot.CacheReadTokens += r.CacheReadTokens
		tot.CacheCreationTokens += r.CacheCreationTokens
		tot.CostUSD += r.CostUSD
	}
	out := make([]store.UsageTotals, 0, len(totals))
	for _, tot := range totals {
		out = append(out, *tot)
	}
	slices.SortFunc(out, func(a, b store.UsageTotals) int {
		return cmp.Or(cmp.Compare(a.AccountName, b.AccountName), cmp.Compare(a.AccountID, b.AccountID))
	})
	return out
}
