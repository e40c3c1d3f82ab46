package accountpool_test

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// start runs the real service on a loopback port and returns clients
// dialled over a real socket.
func start(t *testing.T) (accountpoolv1.AccountPoolServiceClient, healthpb.HealthClient) {
	t.Helper()
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := accountpool.New(ctx, accountpool.Config{
		Addr:    "127.0.0.1:0",
		Keyring: keyring,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		// These tests are about the service's behaviour; pkg/auth and
		// e2e test who may call what.
		InsecureNoAuth: true,
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	require.Eventually(t, func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 5*time.Second, 10*time.Millisecond)
	return accountpoolv1.NewAccountPoolServiceClient(conn), health
}

func newOrg() string { return "org-" + uuid.NewString() }

// requireNoKey asserts the key appears nowhere in a message, in either wire
// or JSON form.
func requireNoKey(t *testing.T, m proto.Message, keys ...string) {
	t.Helper()
	wire, err := proto.Marshal(m)
	require.NoError(t, err)
	js, err := protojson.Marshal(m)
	require.NoError(t, err)
	for _, k := range keys {
		require.NotContains(t, string(wire), k)
		require.NotContains(t, string(js), k)
		require.NotContains(t, m.(interface{ String() string }).String(), k)
	}
}

func requireCode(t *testing.T, err error, want codes.Code, msgContains ...string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status error: %v", err)
	require.Equal(t, want, st.Code(), st.Message())
	for _, s := range msgContains {
		require.Contains(t, st.Message(), s)
	}
	return st
}

func TestEndToEnd(t *testing.T) {
	client, health := start(t)
	ctx := t.Context()
	org := newOrg()

	resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: accountpoolv1.AccountPoolService_ServiceDesc.ServiceName})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())

	keys := map[string]string{
		"alpha":   "sk-ant-api03-e2e-alpha-Zq81",
		"bravo":   "sk-ant-api03-e2e-bravo-Kd02",
		"charlie": "sk-ant-api03-e2e-charlie-Pw77",
	}
	allKeys := []string{keys["alpha"], keys["bravo"], keys["charlie"]}
	ids := map[string]string{}
	for _, name := range []string{"charlie", "alpha", "bravo"} {
		reg, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
			OrganizationId: org, Name: name, ApiKey: keys[name], Tier: "tier2",
			Labels: map[string]string{"team": "e2e"},
		})
		require.NoError(t, err)
		requireNoKey(t, reg, allKeys...)
		a := reg.GetAccount()
		_, err = uuid.Parse(a.GetId())
		require.NoError(t, err, "account ids are UUIDs")
		require.Equal(t, accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE, a.GetStatus())
		require.Equal(t, int32(1), a.GetWeight(), "weight defaults to 1")
		require.Equal(t, int32(1), a.GetKeyVersion())
		ids[name] = a.GetId()
	}

	t.Run("ListHasNoKeys", func(t *testing.T) {
		list, err := client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
		require.NoError(t, err)
		requireNoKey(t, list, allKeys...)
		var names []string
		for _, a := range list.GetAccounts() {
			names = append(names, a.GetName())
			require.Equal(t, accountpoolv1.BreakerState_BREAKER_STATE_CLOSED, a.GetBreaker().GetState())
			require.Len(t, a.GetCapacity(), 4, "one capacity entry per model family")
			require.Equal(t, int64(1_000), a.GetCapacity()[0].GetRequestsLimit())
		}
		require.ElementsMatch(t, []string{"alpha", "bravo", "charlie"}, names)
		require.True(t, slices.IsSortedFunc(list.GetAccounts(), func(a, b *accountpoolv1.Account) int {
			return cmp.Or(a.GetCreateTime().AsTime().Compare(b.GetCreateTime().AsTime()), cmp.Compare(a.GetId(), b.GetId()))
		}), "ordered by create time, then id")
	})

	t.Run("SelectRecordRoundTrip", func(t *testing.T) {
		sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{
			OrganizationId: org, Model: "claude-sonnet-4-5", EstimatedInputTokens: 2_000, EstimatedOutputTokens: 500,
		})
		require.NoError(t, err)
		lease := sel.GetLease()
		require.Equal(t, keys[lease.GetAccountName()], lease.GetApiKey(), "the lease carries the decrypted key of the chosen account")
		require.Equal(t, ids[lease.GetAccountName()], lease.GetAccountId())
		require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED, sel.GetStrategy())
		require.Len(t, sel.GetCandidates(), 3)

		record := &accountpoolv1.RecordRequestRequest{
			OrganizationId: org, LeaseId: lease.GetLeaseId(), AccountId: lease.GetAccountId(),
			RequestId: "req-e2e-1", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS,
			Model: "claude-sonnet-4-5", InputTokens: 1_000, OutputTokens: 200, CacheReadTokens: 10_000,
			HttpStatus: 200, DurationMs: 900,
		}
		rec, err := client.RecordRequest(ctx, record)
		require.NoError(t, err)
		require.False(t, rec.GetDuplicate())
		require.NotEmpty(t, rec.GetUsageId())
		require.InDelta(t, (1_000*3+200*15+10_000*0.3)/1e6, rec.GetCostUsd(), 1e-12)

		dup, err := client.RecordRequest(ctx, record)
		require.NoError(t, err)
		require.True(t, dup.GetDuplicate())
		require.Equal(t, rec.GetUsageId(), dup.GetUsageId())

		usage, err := client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true})
		require.NoError(t, err)
		require.Equal(t, int64(1), usage.GetTotal().GetRequests(), "the duplicate wrote nothing")
		require.Equal(t, int64(1_000), usage.GetTotal().GetInputTokens())
		require.Equal(t, int64(10_000), usage.GetTotal().GetCacheReadTokens())
		require.InDelta(t, rec.GetCostUsd(), usage.GetTotal().GetCostUsd(), 1e-12)
		require.Len(t, usage.GetByAccount(), 1)
		require.Equal(t, lease.GetAccountName(), usage.GetByAccount()[0].GetAccountName())
		require.Len(t, usage.GetRecords(), 1)
		require.Equal(t, accountpoolv1.Outcome_OUTCOME_SUCCESS, usage.GetRecords()[0].GetOutcome())
		require.Empty(t, usage.GetNextPageToken())
	})

	t.Run("UsagePagination", func(t *testing.T) {
		for i := range 5 {
			sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
			require.NoError(t, err)
			_, err = client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
				OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
				RequestId: "req-page", Attempt: int32(i + 1), Outcome: accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, HttpStatus: 529,
			})
			require.NoError(t, err)
		}
		seen := map[string]bool{}
		token := ""
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			page, err := client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true, PageSize: 2, PageToken: token})
			require.NoError(t, err)
			require.LessOrEqual(t, len(page.GetRecords()), 2)
			require.Equal(t, int64(6), page.GetTotal().GetRequests())
			require.Equal(t, int64(5), page.GetTotal().GetFailedRequests())
			for _, r := range page.GetRecords() {
				require.False(t, seen[r.GetId()])
				seen[r.GetId()] = true
			}
			if token = page.GetNextPageToken(); token == "" {
				break
			}
		}
		require.Len(t, seen, 6)
	})

	t.Run("Settings", func(t *testing.T) {
		got, err := client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
		require.NoError(t, err)
		require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED, got.GetSettings().GetSelectionStrategy())
		upd, err := client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
			OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
		})
		require.NoError(t, err)
		require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, upd.GetSettings().GetSelectionStrategy())
		require.NotNil(t, upd.GetSettings().GetUpdateTime())
		got, err = client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
		require.NoError(t, err)
		require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, got.GetSettings().GetSelectionStrategy())

		chosen := map[string]bool{}
		for range 3 {
			sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
			require.NoError(t, err)
			require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, sel.GetStrategy())
			chosen[sel.GetLease().GetAccountName()] = true
		}
		require.Len(t, chosen, 3, "round-robin visits every account")
	})

	t.Run("UpdateAndDelete", func(t *testing.T) {
		disabled := accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED
		newName := "alpha-renamed"
		upd, err := client.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org, AccountId: ids["alpha"], Status: disabled, Name: &newName})
		require.NoError(t, err)
		requireNoKey(t, upd, allKeys...)
		require.Equal(t, disabled, upd.GetAccount().GetStatus())
		require.Equal(t, newName, upd.GetAccount().GetName())

		taken := "bravo"
		_, err = client.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org, AccountId: ids["alpha"], Name: &taken})
		requireCode(t, err, codes.AlreadyExists)

		_, err = client.DeleteAccount(ctx, &accountpoolv1.DeleteAccountRequest{OrganizationId: org, AccountId: ids["alpha"]})
		require.NoError(t, err)
		_, err = client.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: org, AccountId: ids["alpha"]})
		requireCode(t, err, codes.NotFound)
	})

	t.Run("CrossOrganizationIsolation", func(t *testing.T) {
		other := newOrg()
		_, err := client.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: other, AccountId: ids["bravo"]})
		requireCode(t, err, codes.NotFound)
		list, err := client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: other})
		require.NoError(t, err)
		require.Empty(t, list.GetAccounts())
		sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
		require.NoError(t, err)
		_, err = client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
			OrganizationId: other, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
			RequestId: "steal", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS,
		})
		requireCode(t, err, codes.NotFound)
		_, err = client.DeleteAccount(ctx, &accountpoolv1.DeleteAccountRequest{OrganizationId: other, AccountId: ids["bravo"]})
		requireCode(t, err, codes.NotFound)
		usage, err := client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: other, AccountId: ids["bravo"], IncludeRecords: true})
		require.NoError(t, err)
		require.Zero(t, usage.GetTotal().GetRequests())
		require.Empty(t, usage.GetRecords())
		_, err = client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: other})
		requireCode(t, err, codes.NotFound)
	})
}

func TestSelectErrors(t *testing.T) {
	client, _ := start(t)
	ctx := t.Context()

	t.Run("NoAccountsIsNotFound", func(t *testing.T) {
		_, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: newOrg()})
		requireCode(t, err, codes.NotFound, "no accounts in service", "legacy mode")
	})

	t.Run("ExhaustedCarriesRetryInfo", func(t *testing.T) {
		org := newOrg()
		_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "small", ApiKey: "sk-ant-small-1", Tier: "tier1"})
		require.NoError(t, err)
		big := &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: "claude-haiku-4-5", EstimatedInputTokens: 30_000}
		_, err = client.SelectAccount(ctx, big)
		require.NoError(t, err)
		_, err = client.SelectAccount(ctx, big)
		st := requireCode(t, err, codes.ResourceExhausted, "small", "no headroom for the estimate: input tokens", "held by calls in flight")
		require.NotContains(t, st.Message(), "sk-ant-small-1")
		var retry *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				retry = r
			}
		}
		require.NotNil(t, retry, "ResourceExhausted carries google.rpc.RetryInfo")
		delay := retry.GetRetryDelay().AsDuration()
		require.Greater(t, delay, 50*time.Second)
		require.LessOrEqual(t, delay, 2*time.Minute, "the call in flight holds the tokens until it settles, at the latest when its lease expires")
	})
}

func TestInvalidArguments(t *testing.T) {
	client, _ := start(t)
	ctx := t.Context()
	org := newOrg()
	reg, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "main", ApiKey: "sk-ant-main", Tier: "tier1"})
	require.NoError(t, err)
	id := reg.GetAccount().GetId()
	_, err = client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "main", ApiKey: "sk-ant-main-2"})
	requireCode(t, err, codes.AlreadyExists)

	badKey := "sk-ant-api03 has-a-space"
	negative := int32(-1)
	record := func(mod func(*accountpoolv1.RecordRequestRequest)) func() error {
		return func() error {
			r := &accountpoolv1.RecordRequestRequest{OrganizationId: org, LeaseId: uuid.NewString(), AccountId: id, RequestId: "r", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS}
			mod(r)
			_, err := client.RecordRequest(ctx, r)
			return err
		}
	}
	for name, tc := range map[string]struct {
		call  func() error
		field string
	}{
		"missing organization": {func() error {
			_, err := client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{})
			return err
		}, "organization_id"},
		"empty name": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, ApiKey: "sk-ant-x"})
			return err
		}, "name"},
		"oversized name": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: strings.Repeat("n", 200), ApiKey: "sk-ant-x"})
			return err
		}, "name"},
		"empty key": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "k"})
			return err
		}, "api_key"},
		"implausible key": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "k", ApiKey: badKey})
			return err
		}, "api_key"},
		"oversized key": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "k", ApiKey: strings.Repeat("k", 513)})
			return err
		}, "api_key"},
		"unknown tier": {func() error {
			_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "k", ApiKey: "sk-ant-x", Tier: "gold"})
			return err
		}, "tier"},
		"negative weight": {func() error {
			_, err := client.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org, AccountId: id, Weight: &negative})
			return err
		}, "weight"},
		"unknown strategy": {func() error {
			_, err := client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: org, SelectionStrategy: 42})
			return err
		}, "selection_strategy"},
		"bad account id": {func() error {
			_, err := client.GetAccount(ctx, &accountpoolv1.GetAccountRequest{OrganizationId: org, AccountId: "acct-1"})
			return err
		}, "account_id"},
		"bad excluded id": {func() error {
			_, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, ExcludedAccountIds: []string{"nope"}})
			return err
		}, "excluded_account_ids[0]"},
		"negative estimate": {func() error {
			_, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, EstimatedInputTokens: -5})
			return err
		}, "estimated_input_tokens"},
		"unknown outcome": {record(func(r *accountpoolv1.RecordRequestRequest) { r.Outcome = 99 }), "outcome"},
		"missing outcome": {record(func(r *accountpoolv1.RecordRequestRequest) { r.Outcome = 0 }), "outcome"},
		"attempt zero":    {record(func(r *accountpoolv1.RecordRequestRequest) { r.Attempt = 0 }), "attempt"},
		"negative tokens": {record(func(r *accountpoolv1.RecordRequestRequest) { r.OutputTokens = -1 }), "output_tokens"},
		"missing request": {record(func(r *accountpoolv1.RecordRequestRequest) { r.RequestId = "" }), "request_id"},
		"bad lease id":    {record(func(r *accountpoolv1.RecordRequestRequest) { r.LeaseId = "lease" }), "lease_id"},
		"negative headers": {record(func(r *accountpoolv1.RecordRequestRequest) {
			r.RateLimit = &accountpoolv1.RateLimitHeaders{RetryAfterSeconds: -3}
		}), "rate_limit.retry_after_seconds"},
		"bad page token": {func() error {
			_, err := client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, PageToken: "garbage"})
			return err
		}, "page_token"},
	} {
		t.Run(name, func(t *testing.T) {
			st := requireCode(t, tc.call(), codes.InvalidArgument, tc.field+": ")
			require.NotContains(t, st.Message(), badKey)
			var bad *errdetails.BadRequest
			for _, d := range st.Details() {
				if b, ok := d.(*errdetails.BadRequest); ok {
					bad = b
				}
			}
			require.NotNil(t, bad)
			require.Equal(t, tc.field, bad.GetFieldViolations()[0].GetField())
		})
	}
}

func TestRotateAccountKey(t *testing.T) {
	client, _ := start(t)
	ctx := t.Context()
	org := newOrg()
	const oldKey, newKey = "sk-ant-api03-rotate-old-Qx11", "sk-ant-api03-rotate-new-Zr22"
	reg, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "main", ApiKey: oldKey, Tier: "tier2"})
	require.NoError(t, err)
	id := reg.GetAccount().GetId()

	// The upstream rejects the old key: the account turns INVALID and
	// nothing can be selected.
	sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Equal(t, oldKey, sel.GetLease().GetApiKey())
	_, err = client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
		OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: id,
		RequestId: "req-401", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_AUTH_FAILED, HttpStatus: 401,
	})
	require.NoError(t, err)
	_, err = client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
	requireCode(t, err, codes.ResourceExhausted, "invalid")

	rot, err := client.RotateAccountKey(ctx, &accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: id, ApiKey: newKey})
	require.NoError(t, err)
	requireNoKey(t, rot, oldKey, newKey)
	require.Equal(t, accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE, rot.GetAccount().GetStatus())
	require.Equal(t, accountpoolv1.BreakerState_BREAKER_STATE_CLOSED, rot.GetAccount().GetBreaker().GetState())
	require.Equal(t, int32(1), rot.GetAccount().GetKeyVersion())

	sel, err = client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
	require.NoError(t, err, "the account is selectable again")
	require.Equal(t, newKey, sel.GetLease().GetApiKey(), "and hands out the new key")

	list, err := client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
	require.NoError(t, err)
	requireNoKey(t, list, oldKey, newKey)

	for name, tc := range map[string]struct {
		req   *accountpoolv1.RotateAccountKeyRequest
		code  codes.Code
		field string
	}{
		"empty key":       {&accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: id}, codes.InvalidArgument, "api_key"},
		"implausible key": {&accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: id, ApiKey: "sk-ant-api03 with-space"}, codes.InvalidArgument, "api_key"},
		"bad account id":  {&accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: "main", ApiKey: newKey}, codes.InvalidArgument, "account_id"},
		"unknown account": {&accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: uuid.NewString(), ApiKey: newKey}, codes.NotFound, ""},
		"other org":       {&accountpoolv1.RotateAccountKeyRequest{OrganizationId: newOrg(), AccountId: id, ApiKey: newKey}, codes.NotFound, ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := client.RotateAccountKey(ctx, tc.req)
			st := requireCode(t, err, tc.code, tc.field)
			require.NotContains(t, st.Message(), "with-space")
			require.NotContains(t, st.Message(), newKey)
		})
	}
}

func TestEveryStrategyOverTheWire(t *testing.T) {
	client, _ := start(t)
	ctx := t.Context()
	org := newOrg()
	for _, name := range []string{"a", "b"} {
		_, err := client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: name, ApiKey: "sk-ant-" + name, Tier: "tier4"})
		require.NoError(t, err)
	}
	for _, s := range []accountpoolv1.SelectionStrategy{
		accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED,
		accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
		accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_WEIGHTED,
		accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY,
		accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY,
	} {
		t.Run(s.String(), func(t *testing.T) {
			upd, err := client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{OrganizationId: org, SelectionStrategy: s})
			require.NoError(t, err)
			require.Equal(t, s, upd.GetSettings().GetSelectionStrategy())
			got, err := client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
			require.NoError(t, err)
			require.Equal(t, s, got.GetSettings().GetSelectionStrategy())
			sel, err := client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, SessionId: "session-1"})
			require.NoError(t, err)
			require.Equal(t, s, sel.GetStrategy())
			require.Len(t, sel.GetCandidates(), 2, "the explanation is part of the answer")

			// The request's strategy overrides the organization's.
			sel, err = client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Strategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY})
			require.NoError(t, err)
			require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY, sel.GetStrategy())
		})
	}
}
