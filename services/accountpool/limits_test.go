package accountpool_test

import (
	"encoding/base64"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// The account cap holds on every store, and on PostgreSQL across replicas
// registering at once: exactly the cap's worth succeed, the rest answer
// FailedPrecondition with the cap in the message and the details.
func TestAccountLimitOnEveryStore(t *testing.T) {
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			const limit = 4
			cfg := accountpool.Config{Keyring: keyring, MaxAccountsPerOrganization: limit, MaxLabelsPerAccount: 2}
			if backend == "postgres" {
				cfg.DatabaseURL = pgtest.NewSchema(t, migrations.AccountPool).AppURL
			}
			replicas := []*running{serve(t, cfg)}
			if backend == "postgres" {
				replicas = append(replicas, serve(t, cfg))
			}
			for _, r := range replicas {
				r.requireServing(t)
			}
			ctx := t.Context()
			org := newOrg()

			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				created int
				refused []error
			)
			for i := range 12 {
				wg.Go(func() {
					_, err := replicas[i%len(replicas)].client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
						OrganizationId: org, Name: fmt.Sprintf("racer-%02d", i), ApiKey: "sk-ant-api03-limit", Tier: "tier2"})
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						created++
					} else {
						refused = append(refused, err)
					}
				})
			}
			wg.Wait()
			require.Equal(t, limit, created)
			require.Len(t, refused, 12-limit)
			for _, err := range refused {
				st := requireCode(t, err, codes.FailedPrecondition, "its limit of 4 accounts", "-max-accounts-per-organization")
				var reason string
				var quota bool
				for _, d := range st.Details() {
					switch d := d.(type) {
					case *errdetails.ErrorInfo:
						reason = d.GetReason()
						require.Equal(t, "4", d.GetMetadata()["limit"])
					case *errdetails.QuotaFailure:
						quota = len(d.GetViolations()) == 1
					}
				}
				require.Equal(t, "ACCOUNT_LIMIT_REACHED", reason)
				require.True(t, quota, "a QuotaFailure detail")
			}
			// Each replica sees the others' registrations through the
			// change feed, soon after they commit.
			for _, r := range replicas {
				require.Eventually(t, func() bool { return len(listAll(t, r.client, org, 0)) == limit }, 10*time.Second, 10*time.Millisecond)
			}

			_, err := replicas[0].client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
				OrganizationId: newOrg(), Name: "labels", ApiKey: "sk-ant-api03-limit", Labels: map[string]string{"a": "1", "b": "2", "c": "3"}})
			requireCode(t, err, codes.InvalidArgument, "labels: at most 2 labels")
		})
	}
}

// listAll walks ListAccounts' pages of pageSize (0: the default).
func listAll(t *testing.T, client accountpoolv1.AccountPoolServiceClient, org string, pageSize int32) []*accountpoolv1.Account {
	t.Helper()
	var out []*accountpoolv1.Account
	token := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 1000, "the walk ends")
		resp, err := client.ListAccounts(t.Context(), &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageSize: pageSize, PageToken: token})
		require.NoError(t, err)
		if pageSize > 0 {
			require.LessOrEqual(t, len(resp.GetAccounts()), int(pageSize))
		}
		out = append(out, resp.GetAccounts()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out
		}
	}
}

// Walking ListAccounts' pages lists every account exactly once on every
// store; a page token is InvalidArgument for anything but the next page
// of its own organization.
func TestListAccountsPagesOnEveryStore(t *testing.T) {
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	for _, backend := range []string{"memory", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			cfg := accountpool.Config{Keyring: keyring}
			if backend == "postgres" {
				cfg.DatabaseURL = pgtest.NewSchema(t, migrations.AccountPool).AppURL
			}
			r := serve(t, cfg)
			r.requireServing(t)
			ctx := t.Context()
			org, other := newOrg(), newOrg()
			want := map[string]bool{}
			for i := range 11 {
				reg, err := r.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
					OrganizationId: org, Name: fmt.Sprintf("acct-%02d", 10-i), ApiKey: "sk-ant-api03-pages", Tier: "tier2"})
				require.NoError(t, err)
				want[reg.GetAccount().GetId()] = true
			}
			_, err := r.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: other, Name: "x", ApiKey: "sk-ant-api03-pages"})
			require.NoError(t, err)
			for _, size := range []int32{0, 1, 4, 11, 5000} {
				seen := map[string]bool{}
				for _, a := range listAll(t, r.client, org, size) {
					require.False(t, seen[a.GetId()], "page size %d lists %s twice", size, a.GetName())
					seen[a.GetId()] = true
				}
				require.Equal(t, want, seen, "page size %d", size)
			}

			first, err := r.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageSize: 3})
			require.NoError(t, err)
			token := first.GetNextPageToken()
			require.NotEmpty(t, token)
			raw, err := base64.RawURLEncoding.DecodeString(token)
			require.NoError(t, err)
			fp := string(raw[len(raw)-16:])
			forge := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
			for _, tc := range []struct {
				name string
				req  *accountpoolv1.ListAccountsRequest
				want string
			}{
				{"garbage", &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageToken: "garbage"}, "not a token from a previous ListAccounts response"},
				{"truncated", &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageToken: token[:len(token)-3]}, "omit"},
				{"forged id", &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageToken: forge("v2|1|not-a-uuid|" + fp)}, "not a token"},
				{"another organization", &accountpoolv1.ListAccountsRequest{OrganizationId: other, PageToken: token}, "different organization_id"},
				{"negative page size", &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageSize: -1}, "page_size: must not be negative"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, err := r.client.ListAccounts(ctx, tc.req)
					st := requireCode(t, err, codes.InvalidArgument, tc.want)
					require.NotContains(t, st.Message(), token, "the token is not echoed")
				})
			}
			// A GetUsage token is not a ListAccounts token, though the
			// format is the same.
			for i := range 2 {
				sel, err := r.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
				require.NoError(t, err)
				_, err = r.client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
					OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
					RequestId: "req-pages", Attempt: int32(i + 1), Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS,
				})
				require.NoError(t, err)
			}
			usage, err := r.client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true, PageSize: 1})
			require.NoError(t, err)
			require.NotEmpty(t, usage.GetNextPageToken())
			_, err = r.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org, PageToken: usage.GetNextPageToken()})
			requireCode(t, err, codes.InvalidArgument, "page_token: was issued for a different organization_id")
		})
	}
}
