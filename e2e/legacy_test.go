package e2e_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

const environmentKey = "sk-ant-sim-legacy-env"

func setDefaultKey(t *testing.T, s *stack, org, key string) *accountpoolv1.OrganizationSettings {
	t.Helper()
	resp, err := s.pool.SetDefaultKey(testContext(t), &accountpoolv1.SetDefaultKeyRequest{OrganizationId: org, ApiKey: key})
	require.NoError(t, err)
	return resp.GetSettings()
}

// requireLegacyOn asserts the task ran once, in legacy mode, on the key
// named name ("default" or "environment"), and says so in the answer, the
// activity and the usage ledger.
func requireLegacyOn(t *testing.T, s *stack, org string, resp *orchestratorv1.DelegateTaskResponse, name string) {
	t.Helper()
	md := resp.GetMetadata()
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
	require.True(t, md.GetLegacyMode())
	require.Equal(t, name, md.GetAccountName())
	require.Equal(t, name, md.GetLegacyKey())
	require.EqualValues(t, 1, md.GetAttempts())

	ctx := testContext(t)
	require.NoError(t, s.flush(ctx))
	act, err := s.activity.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: md.GetActivityId()})
	require.NoError(t, err)
	require.Equal(t, name, act.GetActivity().GetMetadata().GetFields()["legacy_key"].GetStringValue())
	usage, err := s.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true})
	require.NoError(t, err)
	require.NotEmpty(t, usage.GetRecords())
	require.Equal(t, name, usage.GetRecords()[0].GetAccountName(), "the newest ledger row")
}

// The three legacy paths: the organization's own default key, the
// operator's environment key, and neither.
func TestLegacyModePaths(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base.with(func(o *stackOptions) { o.fallbackKey = environmentKey }))

		settings := setDefaultKey(t, s, "solo", "sk-ant-sim-tier1-solo-own")
		require.True(t, settings.GetDefaultKey().GetConfigured())
		require.Positive(t, settings.GetDefaultKey().GetKeyVersion())
		requireLegacyOn(t, s, "solo", delegate(t, s, quickTask("solo")), "default")
		require.EqualValues(t, 1, s.sim.Stats("sk-ant-sim-tier1-solo-own").Succeeded)
		require.Zero(t, s.sim.Stats(environmentKey).Requests, "an organization with its own key is not billed to the operator")

		requireLegacyOn(t, s, "plain", delegate(t, s, quickTask("plain")), "environment")
		require.EqualValues(t, 1, s.sim.Stats(environmentKey).Succeeded)

		// Cleared, the organization is back on the environment key.
		_, err := s.pool.ClearDefaultKey(testContext(t), &accountpoolv1.ClearDefaultKeyRequest{OrganizationId: "solo"})
		require.NoError(t, err)
		requireLegacyOn(t, s, "solo", delegate(t, s, quickTask("solo")), "environment")

		// Neither key: FailedPrecondition, saying how to fix it.
		bare := startStack(t, base)
		_, err = bare.orchestrator.DelegateTask(testContext(t), quickTask("nobody"))
		require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		require.Contains(t, status.Convert(err).Message(), "SetDefaultKey")
	})
}

// Disabling every account is the documented rollback to legacy mode: the
// organization runs on its own key, and re-enabling one account brings
// the pool back.
func TestDisablingEveryAccountSwitchesToTheDefaultKey(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base.with(func(o *stackOptions) { o.fallbackKey = environmentKey }))
		acct := s.register(t, "acme", "main", "sk-ant-sim-tier4-main", "tier4")
		setDefaultKey(t, s, "acme", "sk-ant-sim-tier1-acme-own")

		resp := delegate(t, s, quickTask("acme"))
		require.Equal(t, "main", resp.GetMetadata().GetAccountName())
		require.False(t, resp.GetMetadata().GetLegacyMode())
		require.Empty(t, resp.GetMetadata().GetLegacyKey())

		update := func(st accountpoolv1.AccountStatus) {
			_, err := s.pool.UpdateAccount(testContext(t), &accountpoolv1.UpdateAccountRequest{OrganizationId: "acme", AccountId: acct.GetId(), Status: st})
			require.NoError(t, err)
		}
		update(accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED)
		requireLegacyOn(t, s, "acme", delegate(t, s, quickTask("acme")), "default")

		update(accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE)
		resp = delegate(t, s, quickTask("acme"))
		require.Equal(t, "main", resp.GetMetadata().GetAccountName())
		require.False(t, resp.GetMetadata().GetLegacyMode())
		require.Zero(t, s.sim.Stats(environmentKey).Requests)
	})
}

// A default key the upstream rejects is marked invalid, and the
// organization's tasks then fail rather than silently run on the
// operator's key; setting a new key makes it valid again.
func TestARejectedDefaultKeyIsNotBilledToTheOperator(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base.with(func(o *stackOptions) { o.fallbackKey = environmentKey }))
		setDefaultKey(t, s, "acme", "sk-ant-sim-401-acme-own")

		resp := delegate(t, s, quickTask("acme"))
		require.NotEqual(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
		require.Equal(t, "default", resp.GetMetadata().GetLegacyKey())
		require.Equal(t, orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_AUTH_FAILED, resp.GetMetadata().GetAttemptDetails()[0].GetOutcomeCode())
		require.NoError(t, s.flush(testContext(t)))

		got, err := s.pool.GetOrganizationSettings(testContext(t), &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: "acme"})
		require.NoError(t, err)
		require.True(t, got.GetSettings().GetDefaultKey().GetInvalid(), "the 401 marked the key invalid")

		_, err = s.orchestrator.DelegateTask(testContext(t), quickTask("acme"))
		require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		require.Contains(t, status.Convert(err).Message(), "SetDefaultKey")
		require.Zero(t, s.sim.Stats(environmentKey).Requests, "the operator's key was never used")

		settings := setDefaultKey(t, s, "acme", "sk-ant-sim-tier1-acme-new")
		require.False(t, settings.GetDefaultKey().GetInvalid(), "a new key is valid again")
		requireLegacyOn(t, s, "acme", delegate(t, s, quickTask("acme")), "default")
	})
}
