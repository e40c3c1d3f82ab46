package accountpool_test

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/pkg/tcpproxy"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// running is a service serving on a loopback port, with clients.
type running struct {
	client accountpoolv1.AccountPoolServiceClient
	health healthpb.HealthClient
	// stop shuts the service down and waits for Serve to return.
	stop func()
}

// serve starts a service with cfg (on a free loopback port) and stops it
// when the test ends unless stopped before.
func serve(t *testing.T, cfg accountpool.Config) *running {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.InsecureNoAuth = true
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := accountpool.New(ctx, cfg)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return &running{client: accountpoolv1.NewAccountPoolServiceClient(conn), health: healthpb.NewHealthClient(conn), stop: stop}
}

func (r *running) serving(ctx context.Context) bool {
	resp, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// notReadyReason waits for the gate's first check and returns why calls
// are Unavailable.
func (r *running) notReadyReason(t *testing.T) string {
	t.Helper()
	var msg string
	require.Eventually(t, func() bool {
		_, err := r.client.ListAccounts(t.Context(), &accountpoolv1.ListAccountsRequest{OrganizationId: newOrg()})
		st := status.Convert(err)
		msg = st.Message()
		// Before its first check the gate answers "starting up".
		return st.Code() == codes.Unavailable && !strings.Contains(msg, "starting up")
	}, 10*time.Second, 10*time.Millisecond)
	return msg
}

func (r *running) requireServing(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return r.serving(t.Context()) }, 10*time.Second, 10*time.Millisecond)
}

// TestPostgresRestartKeepsEverything: what a service on PostgreSQL
// acknowledged is there after a restart with the same keyring: accounts
// (selectable, keys decrypt), settings, usage rows and their idempotency.
func TestPostgresRestartKeepsEverything(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	// Trust authentication ignores the password; it is here to prove it is
	// never logged.
	const password = "hunter2-never-logged"
	u, err := url.Parse(schema.AppURL)
	require.NoError(t, err)
	u.User = url.UserPassword(migrations.AppRole, password)
	logs := &syncbuf.Buffer{}
	cfg := accountpool.Config{Keyring: keyring, DatabaseURL: u.String(), Logger: slog.New(slog.NewTextHandler(logs, nil))}
	ctx := t.Context()
	org := newOrg()

	first := serve(t, cfg)
	first.requireServing(t)
	keys := map[string]string{"alpha": "sk-ant-api03-restart-alpha", "bravo": "sk-ant-api03-restart-bravo"}
	ids := map[string]string{}
	for _, name := range []string{"alpha", "bravo"} {
		reg, err := first.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{
			OrganizationId: org, Name: name, ApiKey: keys[name], Tier: "tier2", Labels: map[string]string{"team": "restart"},
		})
		require.NoError(t, err)
		ids[name] = reg.GetAccount().GetId()
	}
	_, err = first.client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
	})
	require.NoError(t, err)
	sel, err := first.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: "claude-sonnet-4-5"})
	require.NoError(t, err)
	record := &accountpoolv1.RecordRequestRequest{
		OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: sel.GetLease().GetAccountId(),
		RequestId: "req-restart", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS, Model: "claude-sonnet-4-5",
		InputTokens: 1_000, OutputTokens: 200, HttpStatus: 200,
	}
	rec, err := first.client.RecordRequest(ctx, record)
	require.NoError(t, err)
	legacy, err := first.client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
		OrganizationId: org, RequestId: "req-legacy", Attempt: 1, Outcome: accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR, HttpStatus: 529,
	})
	require.NoError(t, err)
	first.stop()

	require.Contains(t, logs.String(), "accountpool uses PostgreSQL")
	require.NotContains(t, logs.String(), password)
	require.NotContains(t, logs.String(), "in-memory store")

	second := serve(t, cfg)
	second.requireServing(t)

	list, err := second.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Len(t, list.GetAccounts(), 2)
	for i, name := range []string{"alpha", "bravo"} {
		a := list.GetAccounts()[i]
		require.Equal(t, name, a.GetName())
		require.Equal(t, ids[name], a.GetId())
		require.Equal(t, "tier2", a.GetTier())
		require.Equal(t, map[string]string{"team": "restart"}, a.GetLabels())
	}
	settings, err := second.client.GetOrganizationSettings(ctx, &accountpoolv1.GetOrganizationSettingsRequest{OrganizationId: org})
	require.NoError(t, err)
	require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, settings.GetSettings().GetSelectionStrategy())
	for name, id := range ids {
		sel, err := second.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, AllowedAccountIds: []string{id}})
		require.NoError(t, err, "account %s is selectable after the restart", name)
		require.Equal(t, keys[name], sel.GetLease().GetApiKey(), "the key of %s decrypts after the restart", name)
		require.Equal(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN, sel.GetStrategy())
	}

	usage, err := second.client.GetUsage(ctx, &accountpoolv1.GetUsageRequest{OrganizationId: org, IncludeRecords: true})
	require.NoError(t, err)
	require.Equal(t, int64(2), usage.GetTotal().GetRequests())
	require.Equal(t, int64(1), usage.GetTotal().GetFailedRequests())
	require.Equal(t, int64(1_000), usage.GetTotal().GetInputTokens())
	require.InDelta(t, rec.GetCostUsd(), usage.GetTotal().GetCostUsd(), 1e-12)
	var rowIDs []string
	for _, r := range usage.GetRecords() {
		rowIDs = append(rowIDs, r.GetId())
	}
	require.ElementsMatch(t, []string{rec.GetUsageId(), legacy.GetUsageId()}, rowIDs)

	dup, err := second.client.RecordRequest(ctx, record)
	require.NoError(t, err)
	require.True(t, dup.GetDuplicate(), "a retried RecordRequest is recognised across the restart")
	require.Equal(t, rec.GetUsageId(), dup.GetUsageId())
}

// TestPostgresNotMigrated: on a schema that is not at this binary's
// version the service stays NOT_SERVING and answers Unavailable naming the
// command to run; once the schema is migrated it serves, without a
// restart.
func TestPostgresNotMigrated(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	pgtest.Down(t, schema.OwnerURL, migrations.AccountPool)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	svc := serve(t, accountpool.Config{Keyring: keyring, Store: accountpool.StorePostgres, DatabaseURL: schema.AppURL})
	ctx := t.Context()

	require.Contains(t, svc.notReadyReason(t), "switchyard migrate up")
	resp, err := svc.health.Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
	resp, err = svc.health.Check(ctx, &healthpb.HealthCheckRequest{Service: accountpoolv1.AccountPoolService_ServiceDesc.ServiceName})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())

	pgtest.Migrate(t, schema.OwnerURL, migrations.AccountPool)
	require.Eventually(t, func() bool { return svc.serving(ctx) }, 20*time.Second, 50*time.Millisecond,
		"the gate rechecks and opens once the schema is current")
	_, err = svc.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: newOrg()})
	require.NoError(t, err)
}

// TestPostgresUnreachableAtStart: a service whose database is down when it
// starts stays up, NOT_SERVING, says why, and turns SERVING once the
// database answers, without a restart.
func TestPostgresUnreachableAtStart(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	proxy, err := tcpproxy.New(pgtest.HostPort(t, schema.AppURL))
	require.NoError(t, err)
	t.Cleanup(proxy.Close)
	proxy.Down()
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	svc := serve(t, accountpool.Config{Keyring: keyring, Store: accountpool.StorePostgres, DatabaseURL: pgtest.WithHostPort(t, schema.AppURL, proxy.Addr())})
	ctx := t.Context()

	require.Contains(t, svc.notReadyReason(t), "does not answer")
	require.False(t, svc.serving(ctx))

	proxy.Up()
	require.Eventually(t, func() bool { return svc.serving(ctx) }, 20*time.Second, 20*time.Millisecond,
		"the service gets ready once the database answers")
	_, err = svc.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: newOrg()})
	require.NoError(t, err)
}

// TestPostgresTwoProcessesShareAccounts: two services on one schema, as two
// replicas would run. What one registers, disables or re-enables, and the
// settings it saves, take effect in the other without a restart, though
// the other selects from its in-memory view.
func TestPostgresTwoProcessesShareAccounts(t *testing.T) {
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	cfg := accountpool.Config{Keyring: keyring, DatabaseURL: schema.AppURL}
	a, b := serve(t, cfg), serve(t, cfg)
	a.requireServing(t)
	b.requireServing(t)
	ctx := t.Context()
	org := newOrg()
	selectIn := func(r *running) (*accountpoolv1.SelectAccountResponse, error) {
		return r.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org, Model: "claude-haiku-4-5"})
	}

	// b loads the organization's view while it has no accounts.
	_, err = selectIn(b)
	requireCode(t, err, codes.NotFound)

	reg, err := a.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "shared", ApiKey: "sk-ant-api03-shared", Tier: "tier2"})
	require.NoError(t, err)
	id := reg.GetAccount().GetId()
	require.Eventually(t, func() bool {
		sel, err := selectIn(b)
		return err == nil && sel.GetLease().GetAccountId() == id && sel.GetLease().GetApiKey() == "sk-ant-api03-shared"
	}, 10*time.Second, 10*time.Millisecond, "registered in a, selectable in b with its key")

	disabled := accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED
	_, err = a.client.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org, AccountId: id, Status: disabled})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := selectIn(b)
		return status.Code(err) == codes.NotFound
	}, 10*time.Second, 10*time.Millisecond, "disabled in a, no longer selected in b")

	_, err = a.client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN,
	})
	require.NoError(t, err)
	active := accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE
	_, err = a.client.UpdateAccount(ctx, &accountpoolv1.UpdateAccountRequest{OrganizationId: org, AccountId: id, Status: active})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		sel, err := selectIn(b)
		return err == nil && sel.GetStrategy() == accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN
	}, 10*time.Second, 10*time.Millisecond, "re-enabled and re-configured in a, both visible in b")

	_, err = a.client.RotateAccountKey(ctx, &accountpoolv1.RotateAccountKeyRequest{OrganizationId: org, AccountId: id, ApiKey: "sk-ant-api03-shared-rotated"})
	require.NoError(t, err)
	_, err = a.client.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: org, SelectionStrategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY,
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		sel, err := selectIn(b)
		return err == nil && sel.GetLease().GetApiKey() == "sk-ant-api03-shared-rotated" &&
			sel.GetStrategy() == accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY
	}, 10*time.Second, 10*time.Millisecond, "key rotated and strategy changed in a: b hands out the new key under the new strategy")
}

func TestStoreConfiguration(t *testing.T) {
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, tc := range map[string]struct {
		cfg  accountpool.Config
		want string
		// requireAuth leaves authentication on (and unconfigured).
		requireAuth bool
	}{
		"postgres without a URL": {cfg: accountpool.Config{Store: accountpool.StorePostgres}, want: "SWITCHYARD_DATABASE_URL (or DATABASE_URL)"},
		"no tokens":              {cfg: accountpool.Config{}, want: "SWITCHYARD_TOKENS", requireAuth: true},
		"unknown store":          {cfg: accountpool.Config{Store: "sqlite"}, want: `unknown store "sqlite"`},
		"malformed database URL": {cfg: accountpool.Config{DatabaseURL: "postgres://u:hunter2-secret@127.0.0.1:notaport/db"},
			want: "not a valid PostgreSQL connection string"},
	} {
		t.Run(name, func(t *testing.T) {
			tc.cfg.Keyring, tc.cfg.Logger, tc.cfg.Addr, tc.cfg.InsecureNoAuth = keyring, logger, "127.0.0.1:0", !tc.requireAuth
			_, err := accountpool.New(t.Context(), tc.cfg)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "hunter2-secret")
		})
	}
}
