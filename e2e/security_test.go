package e2e_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
)

func TestCallersGetTheRightCodes(t *testing.T) {
	s := startStack(t, stackOptions{})
	s.register(t, "acme", "primary", "sk-ant-sim-tier4-acme", "tier4")
	ctx := testContext(t)
	code := func(err error) codes.Code { return status.Code(err) }

	anonymous := s.as(t, secret.String{})
	_, err := anonymous.orchestrator.DelegateTask(ctx, quickTask("acme"))
	require.Equal(t, codes.Unauthenticated, code(err))
	_, err = anonymous.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.Unauthenticated, code(err))
	_, err = anonymous.activity.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: "acme"})
	require.Equal(t, codes.Unauthenticated, code(err))
	health, err := healthpb.NewHealthClient(dial(t, s.addrs.pool, secret.String{})).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "health needs no token")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, health.GetStatus())

	forged := s.as(t, secret.New("sy_not-a-real-token"))
	_, err = forged.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.Unauthenticated, code(err))

	acme := s.as(t, s.tokens.acme)
	resp, err := acme.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{Category: "quick", Prompt: "hello"})
	require.NoError(t, err, "the organization comes from the token")
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
	require.Equal(t, "primary", resp.GetMetadata().GetAccountName())
	_, err = acme.orchestrator.DelegateTask(ctx, quickTask("beta"))
	require.Equal(t, codes.PermissionDenied, code(err))
	_, err = acme.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: "beta"})
	require.Equal(t, codes.PermissionDenied, code(err))
	_, err = acme.pool.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: "acme", Model: "claude-haiku-4-5"})
	require.Equal(t, codes.PermissionDenied, code(err), "only the orchestrator receives decrypted keys")

	orch := s.as(t, s.tokens.orchestrator)
	_, err = orch.pool.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: "acme", Model: "claude-haiku-4-5"})
	require.Equal(t, codes.PermissionDenied, code(err), "the orchestrator must forward its caller's organization")
	fwd := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, "acme")
	_, err = orch.pool.SelectAccount(fwd, &accountpoolv1.SelectAccountRequest{OrganizationId: "beta", Model: "claude-haiku-4-5"})
	require.Equal(t, codes.PermissionDenied, code(err), "the body cannot override the forwarded organization")
	_, err = orch.pool.ListAccounts(fwd, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	require.Equal(t, codes.PermissionDenied, code(err), "admin RPCs are not the orchestrator's")
	_, err = orch.orchestrator.DelegateTask(ctx, quickTask("acme"))
	require.Equal(t, codes.PermissionDenied, code(err))

	// Only the orchestrator writes activities. An organization that could
	// would create or complete the activity of one of its request_ids and
	// plant the result a retried DelegateTask replays; an admin could do
	// it in every organization.
	task, err := acme.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{Category: "quick", Prompt: "hello", RequestId: "planted"})
	require.NoError(t, err)
	activityID := task.GetMetadata().GetActivityId()
	require.NotEmpty(t, activityID)
	for name, c := range map[string]clients{"organization": acme, "admin": s.as(t, s.tokens.admin)} {
		_, err = c.activity.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: "acme", AgentType: "ai_executor"})
		require.Equal(t, codes.PermissionDenied, code(err), "%s TrackStart", name)
		_, err = c.activity.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: "acme", ActivityId: activityID, Message: "forged"})
		require.Equal(t, codes.PermissionDenied, code(err), "%s TrackProgress", name)
		_, err = c.activity.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: "acme", ActivityId: activityID, Status: activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED})
		require.Equal(t, codes.PermissionDenied, code(err), "%s TrackComplete", name)
		_, err = c.activity.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: "acme", ActivityId: activityID})
		require.NoError(t, err, "%s reads", name)
	}
	replayed, err := acme.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{Category: "quick", Prompt: "hello", RequestId: "planted"})
	require.NoError(t, err)
	require.True(t, replayed.GetMetadata().GetReplayed())
	require.Equal(t, task.GetOutput(), replayed.GetOutput(), "the replay is the orchestrator's own result")
	started, err := orch.activity.TrackStart(fwd, &activityv1.TrackStartRequest{AgentType: "ai_executor"})
	require.NoError(t, err, "the orchestrator tracks, for the organization it forwards")
	require.Equal(t, "acme", started.GetActivity().GetOrganizationId())
}

func canaryKey(t *testing.T) string {
	var b [12]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "sk-ant-api03-CANARY" + hex.EncodeToString(b[:])
}

// A canary key registered at the start must never appear in logs, spans,
// error messages or responses, on success and failure paths alike.
func TestCanaryKeyNeverLeaks(t *testing.T) {
	logs := &syncbuf.Buffer{}
	exp := tracetest.NewInMemoryExporter()
	s := startStack(t, stackOptions{logs: logs, exporter: exp})
	ctx := testContext(t)
	canary, rotated := canaryKey(t), canaryKey(t)
	var seen []string // every response and error text
	record := func(m proto.Message, err error) {
		if err != nil {
			seen = append(seen, err.Error())
			for _, d := range status.Convert(err).Details() {
				seen = append(seen, fmt.Sprint(d))
			}
		}
		if m != nil {
			seen = append(seen, protojson.Format(m), fmt.Sprint(m))
		}
	}

	reg, err := s.pool.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: "acme", Name: "canary", ApiKey: canary, Tier: "tier4"})
	require.NoError(t, err)
	record(reg, err)
	id := reg.GetAccount().GetId()

	// Failures that carry the key in the request.
	for _, bad := range []*accountpoolv1.RegisterAccountRequest{
		{OrganizationId: "acme", Name: "canary", ApiKey: canary, Tier: "tier4"},                // duplicate name
		{OrganizationId: "acme", Name: "spaced", ApiKey: canary + " " + canary, Tier: "tier4"}, // implausible key
		{OrganizationId: "acme", Name: "tiered", ApiKey: canary, Tier: "tier99"},               // unknown tier
	} {
		resp, err := s.pool.RegisterAccount(ctx, bad)
		require.Error(t, err)
		record(resp, err)
	}

	// The upstream rejects the key once: the task fails, the account turns invalid.
	s.sim.SetFault(canary, anthropicsim.Fault{Status: 401, Count: 1})
	failed, err := s.orchestrator.DelegateTask(ctx, quickTask("acme"))
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_FAILED, failed.GetStatus())
	record(failed, err)
	s.sim.SetFault(canary, anthropicsim.Fault{Status: 500, Count: 1})

	rot, err := s.pool.RotateAccountKey(ctx, &accountpoolv1.RotateAccountKeyRequest{OrganizationId: "acme", AccountId: id, ApiKey: rotated})
	require.NoError(t, err)
	record(rot, err)
	require.Equal(t, accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE, rot.GetAccount().GetStatus(), "a new key re-enables the account")
	s.sim.SetFault(rotated, anthropicsim.Fault{Status: 500, Count: 1})
	resp, err := s.orchestrator.DelegateTask(ctx, quickTask("acme"))
	record(resp, err)
	resp, err = s.orchestrator.DelegateTask(ctx, quickTask("acme"))
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), resp.GetError())
	record(resp, err)

	// An organization's default key, through legacy mode: set, refused,
	// rejected by the upstream (marked invalid), set again, used, cleared.
	defaultKey, defaultRotated := canaryKey(t), canaryKey(t)
	set, err := s.pool.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: "solo", ApiKey: defaultKey})
	require.NoError(t, err)
	record(set, err)
	badSet, err := s.pool.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: "solo", ApiKey: defaultKey + " " + defaultKey})
	require.Error(t, err)
	record(badSet, err)
	s.sim.SetFault(defaultKey, anthropicsim.Fault{Status: 401, Count: 1})
	legacy, err := s.orchestrator.DelegateTask(ctx, quickTask("solo"))
	require.NoError(t, err)
	require.Equal(t, "default", legacy.GetMetadata().GetLegacyKey())
	record(legacy, err)
	require.NoError(t, s.flush(ctx))
	refused, err := s.orchestrator.DelegateTask(ctx, quickTask("solo")) // the key is invalid now
	require.Error(t, err)
	record(refused, err)
	set, err = s.pool.SetDefaultKey(ctx, &accountpoolv1.SetDefaultKeyRequest{OrganizationId: "solo", ApiKey: defaultRotated})
	require.NoError(t, err)
	record(set, err)
	legacy, err = s.orchestrator.DelegateTask(ctx, quickTask("solo"))
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, legacy.GetStatus(), legacy.GetError())
	record(legacy, err)
	settings, err := s.pool.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: "solo"})
	record(settings, err)
	cleared, err := s.pool.ClearDefaultKey(ctx, &accountpoolv1.ClearDefaultKeyRequest{OrganizationId: "solo"})
	record(cleared, err)
	soloUsage, err := s.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: "solo", IncludeRecords: true})
	record(soloUsage, err)

	// Every read path.
	g, err := s.pool.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: "acme", AccountId: id})
	record(g, err)
	l, err := s.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: "acme"})
	record(l, err)
	u, err := s.pool.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: "acme", AccountId: id, Status: accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE})
	record(u, err)
	usage, err := s.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: "acme", IncludeRecords: true})
	record(usage, err)
	acts, err := s.activity.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: "acme"})
	record(acts, err)
	for _, a := range acts.GetActivities() {
		one, err := s.activity.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: "acme", ActivityId: a.GetId()})
		record(one, err)
	}

	// The last call's server span ends after its response: wait for it, so
	// every span of the test is in the exporter.
	require.Eventually(t, func() bool {
		require.NoError(t, s.flush(ctx))
		for _, sp := range exp.GetSpans() {
			if sp.Name == "switchyard.activity.v1.ActivityService/GetActivity" && sp.SpanKind == trace.SpanKindServer {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)
	var spanText []string
	for _, sp := range exp.GetSpans() {
		spanText = append(spanText, sp.Name, fmt.Sprint(sp.Attributes), fmt.Sprint(sp.Events), sp.Status.Description)
	}

	require.NotEmpty(t, logs.String())
	for _, key := range []string{canary, rotated, defaultKey, defaultRotated} {
		require.NotContains(t, logs.String(), key, "logs")
		for _, text := range seen {
			require.NotContains(t, text, key, "responses and errors")
		}
		for _, text := range spanText {
			require.NotContains(t, text, key, "spans")
		}
	}
}

// Acting as organization acme, a random sequence of calls over every RPC,
// aimed at beta's accounts, usage and activities, never reads or changes
// them.
func TestCrossTenantIsolationRandomized(t *testing.T) {
	eachStore(t, func(t *testing.T, base stackOptions) {
		s := startStack(t, base)
		ctx := testContext(t)
		acme, beta := s.as(t, s.tokens.acme), s.as(t, s.tokens.beta)

		var betaAccounts, betaActivities []string
		for i, c := range []clients{acme, beta} {
			for j := range 2 {
				resp, err := c.pool.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{Name: fmt.Sprintf("acct-%d", j), ApiKey: fmt.Sprintf("sk-ant-sim-tier4-%d-%d", i, j), Tier: "tier4"})
				require.NoError(t, err)
				if i == 1 {
					betaAccounts = append(betaAccounts, resp.GetAccount().GetId())
				}
			}
			task, err := c.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{Category: "quick", Prompt: "work", SessionId: "s", RequestId: fmt.Sprintf("shared-request-%d", i)})
			require.NoError(t, err)
			require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, task.GetStatus(), task.GetError())
			if i == 1 {
				betaActivities = append(betaActivities, task.GetMetadata().GetActivityId())
			}
		}
		snapshot := func() string {
			accts, err := beta.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{})
			require.NoError(t, err)
			for _, a := range accts.GetAccounts() {
				a.Capacity, a.Breaker, a.CooldownUntil = nil, nil, nil // live state moves on its own
			}
			usage, err := beta.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{IncludeRecords: true})
			require.NoError(t, err)
			settings, err := beta.pool.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{})
			require.NoError(t, err)
			acts, err := beta.activity.ListActivities(ctx, &activityv1.ListActivitiesRequest{})
			require.NoError(t, err)
			var b strings.Builder
			for _, m := range []proto.Message{accts, usage, settings, acts} {
				b.WriteString(protojson.Format(m))
			}
			return b.String()
		}
		before := snapshot()

		seed := time.Now().UnixNano()
		t.Logf("seed %d", seed)
		rng := mrand.New(mrand.NewPCG(uint64(seed), 0))
		pick := func(ids []string) string { return ids[rng.IntN(len(ids))] }
		// denied checks a write only the orchestrator may make: an
		// organization's token is refused whatever it names.
		denied := func(resp proto.Message, err error) (proto.Message, error) {
			require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			return resp, err
		}
		org := func() string { return []string{"", "beta", "BETA", "beta "}[rng.IntN(4)] }
		ops := []func() (proto.Message, error){
			func() (proto.Message, error) {
				return acme.pool.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: org(), AccountId: pick(betaAccounts)})
			},
			func() (proto.Message, error) {
				return acme.pool.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org(), AccountId: pick(betaAccounts), Status: accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED})
			},
			func() (proto.Message, error) {
				return acme.pool.DeleteAccount(ctx, &accountpoolv1.DeleteAccountRequest{OrganizationId: org(), AccountId: pick(betaAccounts)})
			},
			func() (proto.Message, error) {
				return acme.pool.RotateAccountKey(ctx, &accountpoolv1.RotateAccountKeyRequest{OrganizationId: org(), AccountId: pick(betaAccounts), ApiKey: "sk-ant-sim-tier4-stolen"})
			},
			func() (proto.Message, error) {
				return acme.pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org()})
			},
			func() (proto.Message, error) {
				return acme.pool.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org(), Name: fmt.Sprintf("x-%d", rng.Int()), ApiKey: "sk-ant-sim-tier4-x", Tier: "tier4"})
			},
			func() (proto.Message, error) {
				return acme.pool.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org(), AccountId: pick(betaAccounts), IncludeRecords: true})
			},
			func() (proto.Message, error) {
				return acme.pool.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: org(), SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN})
			},
			func() (proto.Message, error) {
				return acme.pool.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org(), Model: "claude-haiku-4-5"})
			},
			func() (proto.Message, error) {
				return acme.activity.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org(), ActivityId: pick(betaActivities)})
			},
			func() (proto.Message, error) {
				return acme.activity.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org()})
			},
			func() (proto.Message, error) {
				return denied(acme.activity.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org(), ActivityId: pick(betaActivities), Message: "hijack"}))
			},
			func() (proto.Message, error) {
				return denied(acme.activity.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org(), ActivityId: pick(betaActivities), Status: activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED, ErrorMessage: "hijacked"}))
			},
			func() (proto.Message, error) {
				return denied(acme.activity.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org(), ActivityId: pick(betaActivities), AgentType: "x", AgentName: "x"}))
			},
			func() (proto.Message, error) {
				// beta's request id: acme must get a run of its own, never
				// beta's stored result.
				return acme.orchestrator.DelegateTask(ctx, &orchestratorv1.DelegateTaskRequest{OrganizationId: org(), Category: "quick", Prompt: "work", SessionId: "s", RequestId: "shared-request-1"})
			},
		}
		for i := range 150 {
			resp, err := ops[rng.IntN(len(ops))]()
			if err == nil {
				// Allowed only because it acted on acme (organization_id was
				// empty). Activity ids are scoped to their organization, so
				// acme may create and use its own activity under an id beta
				// also has; the snapshot below proves beta's was not touched.
				// Nothing else of beta's may come back.
				text := protojson.Format(resp)
				for _, id := range betaAccounts {
					require.NotContains(t, text, id, "op %d returned beta's account", i)
				}
				require.NotRegexp(t, `"organizationId":\s*"beta"`, text, "op %d", i)
				continue
			}
			c := status.Code(err)
			require.True(t, c == codes.PermissionDenied || c == codes.NotFound || c == codes.InvalidArgument || c == codes.FailedPrecondition,
				"op %d: unexpected %v", i, err)
		}
		require.Equal(t, before, snapshot(), "beta's accounts, usage, settings and activities are untouched")
	})
}
