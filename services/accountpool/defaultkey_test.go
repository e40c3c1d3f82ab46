package accountpool_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

// requireReason asserts a NotFound from SelectAccount with the ErrorInfo
// reason of the contract.
func requireReason(t *testing.T, err error, reason string) {
	t.Helper()
	st := requireCode(t, err, codes.NotFound)
	var found bool
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			require.Equal(t, "switchyard.accountpool", info.GetDomain())
			require.Equal(t, reason, info.GetReason())
			found = true
		}
	}
	require.True(t, found, "no ErrorInfo in %v", st.Details())
}

// TestDefaultKeyOverTheWire drives an organization's default key through
// real gRPC with real tokens: set, replace, clear, the settings' view of
// it, who may set it, SelectAccount handing it out only while no account
// is in service, the NotFound reasons, an AUTH_FAILED marking it invalid
// and setting it again making it valid. The key is a canary: it must
// appear in no response but SelectAccount's default_key, in no error and
// in no log line.
func TestDefaultKeyOverTheWire(t *testing.T) {
	logs := &syncbuf.Buffer{}
	s := startSecuredLogging(t, logs)
	ctx := t.Context()
	// The orchestrator acts for the organization.
	octx := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, s.org)
	const canary, rotated = "sk-ant-api03-DEFAULTKEYCANARY-0001", "sk-ant-api03-DEFAULTKEYCANARY-0002"
	var responses []proto.Message
	keep := func(m proto.Message) { responses = append(responses, m) }
	selectIt := func(accept bool) (*accountpoolv1.SelectAccountResponse, error) {
		resp, err := s.orchestrator.SelectAccount(octx, &accountpoolv1.SelectAccountRequest{
			OrganizationId: s.org, Model: "claude-haiku-4-5", AcceptDefaultKey: accept,
		})
		if err != nil {
			require.NotContains(t, err.Error(), "CANARY")
		}
		return resp, err
	}
	settings := func() *accountpoolv1.DefaultKeyInfo {
		t.Helper()
		resp, err := s.owner.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: s.org})
		require.NoError(t, err)
		keep(resp)
		return resp.GetSettings().GetDefaultKey()
	}

	require.False(t, settings().GetConfigured())
	_, err := selectIt(true)
	requireReason(t, err, "NO_ACCOUNTS")

	// Only the organization itself (or an admin) sets its key.
	other := newOrg()
	_, err = s.owner.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: other, ApiKey: canary})
	requireCode(t, err, codes.PermissionDenied)
	_, err = s.owner.ClearDefaultKey(ctx, &accountpoolv1.ClearDefaultKeyRequest{OrganizationId: other})
	requireCode(t, err, codes.PermissionDenied)
	_, err = s.orchestrator.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org, ApiKey: canary})
	requireCode(t, err, codes.PermissionDenied)
	// Validated like an account's key, never echoed.
	_, err = s.owner.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org, ApiKey: canary + "\n"})
	st := requireCode(t, err, codes.InvalidArgument, "api_key")
	require.NotContains(t, st.Message(), "CANARY")
	_, err = s.owner.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org})
	requireCode(t, err, codes.InvalidArgument, "api_key")

	set, err := s.owner.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org, ApiKey: canary})
	require.NoError(t, err)
	keep(set)
	dk := set.GetSettings().GetDefaultKey()
	require.True(t, dk.GetConfigured())
	require.EqualValues(t, 1, dk.GetKeyVersion())
	require.False(t, dk.GetInvalid())
	require.NotNil(t, dk.GetUpdateTime())
	require.True(t, proto.Equal(dk, settings()))
	upd, err := s.owner.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: s.org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
	})
	require.NoError(t, err)
	keep(upd)
	require.True(t, upd.GetSettings().GetDefaultKey().GetConfigured(), "UpdateOrganizationSettings shows it too")

	sel, err := selectIt(true)
	require.NoError(t, err)
	require.Equal(t, canary, sel.GetDefaultKey().GetApiKey())
	require.EqualValues(t, 1, sel.GetDefaultKey().GetKeyVersion())
	require.Nil(t, sel.GetLease())
	require.Empty(t, sel.GetCandidates())
	_, err = selectIt(false)
	requireReason(t, err, "NO_ACCOUNTS")

	// An account in service takes over; all disabled, the default key again;
	// one re-enabled, a lease again.
	reg, err := s.owner.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: s.org, Name: "alpha", ApiKey: "sk-ant-api03-alpha", Tier: "tier2"})
	require.NoError(t, err)
	keep(reg)
	id := reg.GetAccount().GetId()
	sel, err = selectIt(true)
	require.NoError(t, err)
	require.Equal(t, id, sel.GetLease().GetAccountId())
	require.Nil(t, sel.GetDefaultKey())
	settle := func(leaseID, accountID, requestID string, o accountpoolv1.Outcome, legacy accountpoolv1.LegacyKey) *accountpoolv1.RecordRequestResponse {
		t.Helper()
		resp, err := s.orchestrator.RecordRequest(octx, &accountpoolv1.RecordRequestRequest{
			OrganizationId: s.org, LeaseId: leaseID, AccountId: accountID, RequestId: requestID, Attempt: 1,
			Outcome: o, Model: "claude-haiku-4-5", InputTokens: 10, OutputTokens: 1, HttpStatus: 200, LegacyKey: legacy,
		})
		require.NoError(t, err)
		return resp
	}
	settle(sel.GetLease().GetLeaseId(), id, "pooled", accountpoolv1.Outcome_OUTCOME_SUCCESS, 0)
	for _, status := range []accountpoolv1.AccountStatus{accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED, accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE} {
		upd, err := s.owner.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: s.org, AccountId: id, Status: status})
		require.NoError(t, err)
		keep(upd)
		sel, err = selectIt(true)
		require.NoError(t, err)
		if status == accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED {
			require.Equal(t, canary, sel.GetDefaultKey().GetApiKey(), "every account disabled: the default key")
			require.Nil(t, sel.GetLease())
			continue
		}
		require.Equal(t, id, sel.GetLease().GetAccountId(), "re-enabled: a lease again")
		require.Nil(t, sel.GetDefaultKey())
		settle(sel.GetLease().GetLeaseId(), id, "pooled-again", accountpoolv1.Outcome_OUTCOME_SUCCESS, 0)
	}
	_, err = s.owner.DeleteAccount(ctx, &accountpoolv1.DeleteAccountRequest{OrganizationId: s.org, AccountId: id})
	require.NoError(t, err)

	// Legacy calls name their key in the ledger; an AUTH_FAILED on the
	// default key marks it invalid.
	settle("", "", "on-environment", accountpoolv1.Outcome_OUTCOME_SUCCESS, accountpoolv1.LegacyKey_LEGACY_KEY_UNSPECIFIED)
	settle("", "", "on-environment-explicit", accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, accountpoolv1.LegacyKey_LEGACY_KEY_ENVIRONMENT)
	_, err = selectIt(true)
	require.NoError(t, err, "the environment key's rejection is not the organization's key's")
	settle("", "", "on-default", accountpoolv1.Outcome_OUTCOME_SUCCESS, accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT)
	settle("", "", "on-default-401", accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT)
	dup := settle("", "", "on-default-401", accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, accountpoolv1.LegacyKey_LEGACY_KEY_ORGANIZATION_DEFAULT)
	require.True(t, dup.GetDuplicate(), "idempotent on (request_id, attempt)")
	_, err = selectIt(true)
	requireReason(t, err, "DEFAULT_KEY_INVALID")
	_, err = selectIt(false)
	requireReason(t, err, "DEFAULT_KEY_INVALID")
	require.True(t, settings().GetInvalid())

	usage, err := s.owner.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: s.org, IncludeRecords: true, PageSize: 100})
	require.NoError(t, err)
	keep(usage)
	names := map[string]string{}
	for _, r := range usage.GetRecords() {
		names[r.GetRequestId()] = r.GetAccountName()
	}
	require.Equal(t, "environment", names["on-environment"])
	require.Equal(t, "environment", names["on-environment-explicit"])
	require.Equal(t, "default", names["on-default"])
	require.Equal(t, "default", names["on-default-401"])
	require.Equal(t, "alpha", names["pooled"])

	// Setting it again (a rotation) makes it valid.
	set, err = s.admin.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org, ApiKey: rotated})
	require.NoError(t, err)
	keep(set)
	require.False(t, set.GetSettings().GetDefaultKey().GetInvalid())
	sel, err = selectIt(true)
	require.NoError(t, err)
	require.Equal(t, rotated, sel.GetDefaultKey().GetApiKey())

	cleared, err := s.owner.ClearDefaultKey(ctx, &accountpoolv1.ClearDefaultKeyRequest{OrganizationId: s.org})
	require.NoError(t, err)
	keep(cleared)
	require.False(t, cleared.GetSettings().GetDefaultKey().GetConfigured())
	require.Zero(t, cleared.GetSettings().GetDefaultKey().GetKeyVersion())
	_, err = selectIt(true)
	requireReason(t, err, "NO_ACCOUNTS")
	again, err := s.owner.ClearDefaultKey(ctx, &accountpoolv1.ClearDefaultKeyRequest{OrganizationId: s.org})
	require.NoError(t, err, "clearing a key that is not set")
	keep(again)

	for _, m := range responses {
		requireNoKey(t, m, canary, rotated, "CANARY")
	}
	require.NoError(t, s.shutdown())
	require.NotContains(t, logs.String(), "CANARY", "the default key never reaches the log")
	require.Contains(t, logs.String(), "organization default key set", "the log did record the writes")
}

// TestDefaultKeyNeedsTheOrchestratorToLeaveTheService: an organization's
// or an admin's token cannot call SelectAccount at all, so only the
// orchestrator ever receives the key.
func TestDefaultKeyNeedsTheOrchestratorToLeaveTheService(t *testing.T) {
	s := startSecured(t)
	ctx := context.Background()
	_, err := s.owner.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: s.org, ApiKey: "sk-ant-api03-only-orchestrator"})
	require.NoError(t, err)
	for _, c := range []accountpoolv1.AccountPoolServiceClient{s.owner, s.admin} {
		_, err := c.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: s.org, AcceptDefaultKey: true})
		requireCode(t, err, codes.PermissionDenied)
	}
}
