package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/memstore"
)

// seeded returns handlers on a memstore holding n accounts of org, each
// with labels, and the account cap raised to allow them.
func seeded(t *testing.T, org string, n, labels int) *Server {
	t.Helper()
	spec, err := crypto.GenerateKeyring()
	require.NoError(t, err)
	keys, err := crypto.ParseKeyring(spec)
	require.NoError(t, err)
	st := memstore.New()
	now := store.Normalize(time.Now())
	for i := range n {
		id := uuid.NewString()
		ct, ver, err := keys.Encrypt(secret.New("sk-ant-api03-seed"), org, id)
		require.NoError(t, err)
		l := map[string]string{}
		for j := range labels {
			l[fmt.Sprintf("label-%02d", j)] = fmt.Sprintf("%0256d", j)
		}
		require.NoError(t, st.CreateAccount(context.Background(), store.Account{
			ID: id, OrganizationID: org, Name: fmt.Sprintf("acct-%05d", i), Tier: "scale", Status: store.StatusActive,
			Weight: 1, Labels: l, KeyCiphertext: ct, KeyVersion: ver, CreateTime: now, UpdateTime: now,
		}, 0))
	}
	p, err := pool.New(pool.Config{Store: st, Keys: keys, MaxAccountsPerOrganization: 2 * n, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	return New(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// At 10,000 accounts SelectAccount's answer stays small: the chosen
// account, a few alternatives and counts, not every account explained.
func TestSelectAccountAnswerIsSmallAtTenThousandAccounts(t *testing.T) {
	org := "org-" + uuid.NewString()
	s := seeded(t, org, 10_000, 0)
	resp, err := s.SelectAccount(t.Context(), &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: "claude-sonnet-4-5", EstimatedInputTokens: 1_000})
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetLease().GetLeaseId())
	require.Less(t, proto.Size(resp), 16<<10)
	require.Len(t, resp.GetCandidates(), pool.MaxAlternatives+1)
	require.Equal(t, int32(10_000-pool.MaxAlternatives-1), resp.GetOmittedCandidates())
	require.Equal(t, map[string]int32{pool.SkipEligible: int32(10_000 - pool.MaxAlternatives - 1)}, resp.GetOmittedReasons())
}

// Accounts with the most labels: a ListAccounts page and a WatchAccounts
// message are cut to maxAccountsBytes, well under the 4 MiB gRPC limit,
// and the walk still reaches every account.
func TestAccountMessagesStayUnderTheGRPCLimit(t *testing.T) {
	org := "org-" + uuid.NewString()
	s := seeded(t, org, 600, pool.MaxLabelsPerAccountCeiling)
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 20)
		resp, err := s.ListAccounts(t.Context(), &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageSize: 1000, PageToken: token})
		require.NoError(t, err)
		require.Less(t, proto.Size(resp), 3<<20)
		for _, a := range resp.GetAccounts() {
			require.False(t, seen[a.GetId()])
			seen[a.GetId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	require.Len(t, seen, 600)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var first *accountpoolv1.WatchAccountsResponse
	err := s.watchAccounts(ctx, org, time.Second, nil, func(m *accountpoolv1.WatchAccountsResponse) error {
		first = m
		cancel()
		return nil
	})
	require.Error(t, err)
	require.NotNil(t, first)
	require.Less(t, proto.Size(first), 3<<20)
	require.NotEmpty(t, first.GetAccounts())
	require.Equal(t, int32(600-len(first.GetAccounts())), first.GetOmittedAccounts())
	require.Positive(t, first.GetOmittedAccounts())
}

func TestWatchAccountsCapsTheAccountsPerMessage(t *testing.T) {
	org := "org-" + uuid.NewString()
	s := seeded(t, org, maxWatchAccounts+7, 0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var first *accountpoolv1.WatchAccountsResponse
	_ = s.watchAccounts(ctx, org, time.Second, nil, func(m *accountpoolv1.WatchAccountsResponse) error {
		first = m
		cancel()
		return nil
	})
	require.NotNil(t, first)
	require.Len(t, first.GetAccounts(), maxWatchAccounts)
	require.Equal(t, int32(7), first.GetOmittedAccounts())
	require.Equal(t, "acct-00000", first.GetAccounts()[0].GetName(), "the first in name order")
}
