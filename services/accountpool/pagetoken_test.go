package accountpool_test

import (
	"encoding/base64"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// A page token GetUsage did not issue for this very query is
// InvalidArgument on every store: garbage, truncated, forged to carry
// what a store cannot use, or issued for another filter or organization.
func TestUsagePageTokensAreCheckedOnEveryStore(t *testing.T) {
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
			testUsagePageTokens(t, r.client)
		})
	}
}

func testUsagePageTokens(t *testing.T, client accountpoolv1.AccountPoolServiceClient) {
	ctx := t.Context()
	org, other := newOrg(), newOrg()
	reg, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "alpha", ApiKey: "sk-ant-api03-page-token", Tier: "tier2"})
	require.NoError(t, err)
	for i := range 3 {
		sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
		require.NoError(t, err)
		_, err = client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
			OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
			RequestId: "req-token", Attempt: int32(i + 1), Outcome: accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, HttpStatus: 529,
		})
		require.NoError(t, err)
	}
	query := func(token string) *accountpoolv1.GetUsageRequest {
		return &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true, PageSize: 1, PageToken: token}
	}
	first, err := client.GetUsage(ctx, query(""))
	require.NoError(t, err)
	token := first.GetNextPageToken()
	require.NotEmpty(t, token)
	second, err := client.GetUsage(ctx, query(token))
	require.NoError(t, err, "the issued token works")
	require.NotEqual(t, first.GetRecords()[0].GetId(), second.GetRecords()[0].GetId())

	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	decoded, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	fp := string(decoded[len(decoded)-16:]) // 12 bytes of hash, base64url
	id := uuid.NewString()
	for _, tc := range []struct {
		name string
		req  *accountpoolv1.GetUsageRequest
		want string
	}{
		{"garbage", query("garbage"), "not a token"},
		{"truncated", query(token[:len(token)-4]), "omit"},
		{"id in braces", query(raw("v2|1|{" + id + "}|" + fp)), "not a token"},
		{"id as URN", query(raw("v2|1|urn:uuid:" + id + "|" + fp)), "not a token"},
		{"id not a UUID", query(raw("v2|1|x|" + fp)), "not a token"},
		{"time out of range", query(raw("v2|-9223372036854775808|" + id + "|" + fp)), "not a token"},
		{"another organization", &accountpoolv1.GetUsageRequest{OrganizationId: other, IncludeRecords: true, PageToken: token}, "different organization_id"},
		{"another account", &accountpoolv1.GetUsageRequest{OrganizationId: org, AccountId: reg.GetAccount().GetId(), IncludeRecords: true, PageToken: token}, "different organization_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.GetUsage(ctx, tc.req)
			requireCode(t, err, codes.InvalidArgument, "page_token: ", tc.want)
		})
	}
}
