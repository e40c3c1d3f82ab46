package pool

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

func newClock() *fakeclock.Clock { return fakeclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) }

type fixture struct {
	t     testing.TB
	ctx   context.Context
	pool  *Pool
	clock *fakeclock.Clock
	store *memstore.Store
	keys  *crypto.Keyring
	org   string
}

// newFixture builds a pool on a memstore with a manual clock and no breaker
// jitter, so every cool-down is exactly its bound.
func newFixture(t testing.TB, opts ...func(*Config)) *fixture {
	t.Helper()
	spec, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	keys, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	c := newClock()
	st := memstore.New()
	cfg := Config{
		Store:  st,
		Keys:   keys,
		Now:    c.Now,
		Jitter: func(d time.Duration) time.Duration { return d },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	return &fixture{t: t, ctx: context.Background(), pool: p, clock: c, store: st, keys: keys, org: "org-" + uuid.NewString()}
}

func (f *fixture) register(name, tier string, mods ...func(*NewAccount)) AccountInfo {
	f.t.Helper()
	n := NewAccount{OrgID: f.org, Name: name, APIKey: secret.New("sk-ant-" + name), Tier: tier}
	for _, m := range mods {
		m(&n)
	}
	info, err := f.pool.RegisterAccount(f.ctx, n)
	require.NoError(f.t, err)
	return info
}

func (f *fixture) selectReq(mods ...func(*SelectRequest)) SelectRequest {
	r := SelectRequest{OrgID: f.org, Model: "claude-sonnet-4-5", EstimatedInputTokens: 100, EstimatedOutputTokens: 50, Explain: true}
	for _, m := range mods {
		m(&r)
	}
	return r
}

func (f *fixture) mustSelect(mods ...func(*SelectRequest)) Selection {
	f.t.Helper()
	sel, err := f.pool.Select(f.ctx, f.selectReq(mods...))
	require.NoError(f.t, err)
	return sel
}

func (f *fixture) exhausted(mods ...func(*SelectRequest)) *ExhaustedError {
	f.t.Helper()
	_, err := f.pool.Select(f.ctx, f.selectReq(mods...))
	var ex *ExhaustedError
	require.ErrorAs(f.t, err, &ex)
	return ex
}

func allowed(ids ...string) func(*SelectRequest) {
	return func(r *SelectRequest) { r.Allowed = ids }
}

func estimate(in, out int64) func(*SelectRequest) {
	return func(r *SelectRequest) { r.EstimatedInputTokens, r.EstimatedOutputTokens = in, out }
}

func (f *fixture) record(sel Selection, o store.Outcome, mods ...func(*RecordRequest)) RecordResult {
	f.t.Helper()
	r := RecordRequest{
		OrgID: f.org, LeaseID: sel.LeaseID, AccountID: sel.AccountID,
		RequestID: uuid.NewString(), Attempt: 1, Outcome: o, Model: "claude-sonnet-4-5",
	}
	for _, m := range mods {
		m(&r)
	}
	res, err := f.pool.Record(f.ctx, r)
	require.NoError(f.t, err)
	return res
}

// used sets the tokens a recorded call used.
func used(in, out int64) func(*RecordRequest) {
	return func(r *RecordRequest) { r.Tokens = Tokens{Input: in, Output: out} }
}

func (f *fixture) account(id string) AccountInfo {
	f.t.Helper()
	info, err := f.pool.GetAccount(f.ctx, f.org, id)
	require.NoError(f.t, err)
	return info
}

func capacityOf(info AccountInfo, fam Family) Capacity {
	for _, c := range info.Capacity {
		if c.Family == fam {
			return c
		}
	}
	return Capacity{}
}

func candidate(cands []Candidate, id string) Candidate {
	for _, c := range cands {
		if c.AccountID == id {
			return c
		}
	}
	return Candidate{}
}

// failTimes records n upstream errors on the account, each on its own lease.
func (f *fixture) failTimes(id string, n int) {
	f.t.Helper()
	for range n {
		sel := f.mustSelect(allowed(id))
		f.record(sel, store.OutcomeUpstreamError)
	}
}
