package pool

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// BenchmarkRegisterAccount measures one RegisterAccount into an
// organization that already has n accounts (seeded through the store, its
// view loaded), on a memstore. Registration is O(log n): the store checks
// the name and the cap by index and the new view shares all but a path of
// each of its trees with the old (tree.go). Before issue 15 it was O(n log
// n): the view was copied and sorted on every registration, and the
// memstore scanned every account for the name.
func BenchmarkRegisterAccount(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("accounts=%d", n), func(b *testing.B) {
			f := newFixture(b, func(c *Config) { c.MaxAccountsPerOrganization = 1 << 30 })
			seedAccounts(b, f, n)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				_, err := f.pool.RegisterAccount(f.ctx, NewAccount{OrgID: f.org, Name: fmt.Sprintf("new-%08d", i), APIKey: secret.New("sk-ant-bench"), Tier: "scale"})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// seedAccounts stores n accounts of f's organization directly and loads
// its view.
func seedAccounts(tb testing.TB, f *fixture, n int) {
	tb.Helper()
	now := store.Normalize(f.clock.Now())
	for i := range n {
		id := uuid.NewString()
		ct, ver, err := f.keys.Encrypt(secret.New("sk-ant-seed"), f.org, id)
		if err != nil {
			tb.Fatal(err)
		}
		a := store.Account{ID: id, OrganizationID: f.org, Name: fmt.Sprintf("acct-%06d", i), Tier: "scale", Status: store.StatusActive,
			Weight: 1, KeyCiphertext: ct, KeyVersion: ver, CreateTime: now, UpdateTime: now}
		if err := f.store.CreateAccount(f.ctx, a, 0); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := f.pool.view(f.ctx, f.org); err != nil {
		tb.Fatal(err)
	}
}
