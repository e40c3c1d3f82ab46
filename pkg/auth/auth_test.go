package auth

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
)

const (
	orgToken   = "token-for-acme"
	orchToken  = "token-for-orchestrator"
	adminToken = "token-for-admin"
	listMethod = "/switchyard.accountpool.v1.AccountPoolService/ListAccounts"
	selMethod  = "/switchyard.accountpool.v1.AccountPoolService/SelectAccount"
)

func testTokens(t *testing.T) *Tokens {
	t.Helper()
	tokens, err := ParseTokens(strings.Join([]string{
		"# comment",
		HashToken(orgToken) + " org:acme",
		HashToken(orchToken) + " orchestrator",
		HashToken(adminToken) + "  admin",
	}, "\n"))
	require.NoError(t, err)
	return tokens
}

var testPolicy = Policy{
	listMethod: {Organization, Admin},
	selMethod:  {Orchestrator},
}

// call runs the unary interceptor with the given token and metadata and
// returns what the handler saw.
func call(t *testing.T, token, method string, req *accountpoolv1.ListAccountsRequest, md ...string) (*accountpoolv1.ListAccountsRequest, context.Context, error) {
	t.Helper()
	unary, _ := Interceptors(testTokens(t), testPolicy)
	pairs := append([]string{}, md...)
	if token != "" {
		pairs = append(pairs, "authorization", "Bearer "+token)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(pairs...))
	var seen context.Context
	_, err := unary(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		seen = ctx
		return r, nil
	})
	return req, seen, err
}

func TestAuthentication(t *testing.T) {
	_, _, err := call(t, "", listMethod, &accountpoolv1.ListAccountsRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	_, _, err = call(t, "not-a-token", listMethod, &accountpoolv1.ListAccountsRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.NotContains(t, err.Error(), "not-a-token", "the presented token is not echoed")

	_, _, err = call(t, "", "/grpc.health.v1.Health/Check", &accountpoolv1.ListAccountsRequest{})
	require.NoError(t, err, "health needs no token")
}

func TestOrganizationTokenActsForItsOrganizationOnly(t *testing.T) {
	req, ctx, err := call(t, orgToken, listMethod, &accountpoolv1.ListAccountsRequest{})
	require.NoError(t, err)
	require.Equal(t, "acme", req.GetOrganizationId(), "an empty organization is filled in from the token")
	org, _ := ActingOrganization(ctx)
	require.Equal(t, "acme", org)

	_, _, err = call(t, orgToken, listMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.NoError(t, err)
	_, _, err = call(t, orgToken, listMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "globex"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	_, _, err = call(t, orgToken, selMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "only the orchestrator may select accounts")

	_, _, err = call(t, orgToken, listMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "globex"}, OrganizationHeader, "globex")
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the forwarding header means nothing from an organization token")
}

func TestOrchestratorActsForTheForwardedOrganization(t *testing.T) {
	_, _, err := call(t, orchToken, selMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "no forwarded organization")

	req, _, err := call(t, orchToken, selMethod, &accountpoolv1.ListAccountsRequest{}, OrganizationHeader, "acme")
	require.NoError(t, err)
	require.Equal(t, "acme", req.GetOrganizationId())

	_, _, err = call(t, orchToken, selMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "globex"}, OrganizationHeader, "acme")
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the body cannot override the forwarded organization")

	_, _, err = call(t, orchToken, listMethod, &accountpoolv1.ListAccountsRequest{}, OrganizationHeader, "acme")
	require.Equal(t, codes.PermissionDenied, status.Code(err), "admin RPCs are not the orchestrator's")
}

func TestAdminActsForAnyNamedOrganization(t *testing.T) {
	req, ctx, err := call(t, adminToken, listMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "globex"})
	require.NoError(t, err)
	require.Equal(t, "globex", req.GetOrganizationId())
	org, _ := ActingOrganization(ctx)
	require.Equal(t, "globex", org)
	_, _, err = call(t, adminToken, selMethod, &accountpoolv1.ListAccountsRequest{OrganizationId: "globex"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
}

func TestMethodsOutsideThePolicyAreDenied(t *testing.T) {
	_, _, err := call(t, adminToken, "/switchyard.accountpool.v1.AccountPoolService/Unlisted", &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
}

func TestParseTokensRejectsMistakes(t *testing.T) {
	for name, spec := range map[string]string{
		"empty":           "# nothing\n",
		"plain token":     "sy_abcdef org:acme",
		"bad principal":   HashToken("x") + " root",
		"empty org":       HashToken("x") + " org:",
		"duplicate":       HashToken("x") + " admin;" + HashToken("x") + " orchestrator",
		"too many fields": HashToken("x") + " admin extra",
		"non-ASCII org":   HashToken("x") + " org:acmé",
		"control in org":  HashToken("x") + " org:ac\x01me",
		"long org":        HashToken("x") + " org:" + strings.Repeat("a", 129),
	} {
		_, err := ParseTokens(spec)
		require.Error(t, err, name)
		require.NotContains(t, err.Error(), "sy_abcdef", name)
	}
}

func TestForwardOrganizationSendsTheActingOrganization(t *testing.T) {
	ctx := WithActingOrganization(context.Background(), "acme")
	var sent metadata.MD
	err := ForwardOrganization()(ctx, selMethod, nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		sent, _ = metadata.FromOutgoingContext(ctx)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"acme"}, sent.Get(OrganizationHeader))
}

func TestGeneratedTokensAreDistinctAndRedacted(t *testing.T) {
	a, err := GenerateToken()
	require.NoError(t, err)
	b, err := GenerateToken()
	require.NoError(t, err)
	require.False(t, a.Equal(b))
	require.True(t, strings.HasPrefix(a.Reveal(), "sy_"))
	require.NotContains(t, a.String(), a.Reveal())
}

func TestAdmissionRefusesUnknownTokensAtTheHeaders(t *testing.T) {
	require.Nil(t, Admission(nil), "no tokens, no check")
	admit := Admission(testTokens(t))
	for name, tc := range map[string]struct {
		method string
		md     metadata.MD
		want   codes.Code
	}{
		"known token":        {listMethod, metadata.Pairs("authorization", "Bearer "+orgToken), codes.OK},
		"scheme in any case": {listMethod, metadata.Pairs("authorization", "bearer "+adminToken), codes.OK},
		"no token":           {listMethod, metadata.MD{}, codes.Unauthenticated},
		"other scheme":       {listMethod, metadata.Pairs("authorization", "Basic "+orgToken), codes.Unauthenticated},
		"no scheme":          {listMethod, metadata.Pairs("authorization", orgToken), codes.Unauthenticated},
		"unknown token":      {listMethod, metadata.Pairs("authorization", "Bearer nope"), codes.Unauthenticated},
		"health is exempt":   {"/grpc.health.v1.Health/Check", metadata.MD{}, codes.OK},
	} {
		t.Run(name, func(t *testing.T) {
			err := admit(tc.method, tc.md)
			require.Equal(t, tc.want, status.Code(err), "%v", err)
			if err != nil {
				require.NotContains(t, err.Error(), orgToken)
			}
		})
	}
}
