package accountpool_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/redistest"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// secured is a service serving with bearer tokens: one for an
// organization, one for the orchestrator, one for an admin.
type secured struct {
	org          string
	admin, owner accountpoolv1.AccountPoolServiceClient // owner holds the organization's token
	orchestrator accountpoolv1.AccountPoolServiceClient
	// shutdown stops the service and returns what Serve returned.
	shutdown func() error
}

func startSecured(t *testing.T) *secured {
	t.Helper()
	return startSecuredLogging(t, io.Discard)
}

// startSecuredLogging is startSecured with the service's log written to
// logs, as text at debug level.
func startSecuredLogging(t *testing.T, logs io.Writer) *secured {
	t.Helper()
	org := newOrg()
	tokens := map[string]string{"org:" + org: "org-token", "orchestrator": "orchestrator-token", "admin": "admin-token"}
	spec := ""
	for principal, token := range tokens {
		spec += auth.HashToken(token) + " " + principal + "\n"
	}
	table, err := auth.ParseTokens(spec)
	require.NoError(t, err)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := accountpool.New(ctx, accountpool.Config{
		Addr:    "127.0.0.1:0",
		Keyring: keyring,
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Tokens:  table,
	})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx) }()
	var once sync.Once
	var served error
	shutdown := func() error {
		once.Do(func() {
			cancel()
			served = <-done
		})
		return served
	}
	t.Cleanup(func() { require.NoError(t, shutdown()) })
	dial := func(token string) *grpc.ClientConn {
		conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(auth.ClientCredentials(secret.New(token), false)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	adminConn := dial("admin-token")
	health := healthpb.NewHealthClient(adminConn)
	require.Eventually(t, func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, 5*time.Second, 10*time.Millisecond)
	return &secured{
		org:          org,
		admin:        accountpoolv1.NewAccountPoolServiceClient(adminConn),
		owner:        accountpoolv1.NewAccountPoolServiceClient(dial("org-token")),
		orchestrator: accountpoolv1.NewAccountPoolServiceClient(dial("orchestrator-token")),
		shutdown:     shutdown,
	}
}

// received is one stream message and when the client had it.
type received struct {
	msg *accountpoolv1.WatchAccountsResponse
	at  time.Time
}

// watch opens a watch and receives its messages on a goroutine until the
// stream ends; the stream's error is sent on errc.
func watch(t *testing.T, ctx context.Context, client accountpoolv1.AccountPoolServiceClient, req *accountpoolv1.WatchAccountsRequest) (<-chan received, <-chan error) {
	t.Helper()
	stream, err := client.WatchAccounts(ctx, req)
	require.NoError(t, err)
	msgs := make(chan received, 1_000)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			msgs <- received{msg: m, at: time.Now()}
		}
	}()
	return msgs, errc
}

func next(t *testing.T, msgs <-chan received, errc <-chan error) received {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case err := <-errc:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return received{}
}

func byName(m *accountpoolv1.WatchAccountsResponse, name string) *accountpoolv1.Account {
	for _, a := range m.GetAccounts() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

func TestWatchAccounts(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	ids := map[string]string{}
	for _, name := range []string{"bravo", "alpha"} {
		reg, err := s.owner.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{Name: name, ApiKey: "sk-ant-api03-watch-" + name, Tier: "tier2"})
		require.NoError(t, err)
		ids[name] = reg.GetAccount().GetId()
	}
	const interval = 200 * time.Millisecond
	// No organization_id: the token's is filled in.
	msgs, errc := watch(t, ctx, s.owner, &accountpoolv1.WatchAccountsRequest{MinInterval: durationpb.New(interval)})

	first := next(t, msgs, errc)
	list, err := s.owner.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{})
	require.NoError(t, err)
	require.Len(t, first.msg.GetAccounts(), 2)
	listed := map[string]*accountpoolv1.Account{}
	for _, a := range list.GetAccounts() {
		listed[a.GetId()] = a
	}
	require.True(t, slices.IsSortedFunc(first.msg.GetAccounts(), func(a, b *accountpoolv1.Account) int { return cmp.Compare(a.GetName(), b.GetName()) }), "ordered by name")
	for _, a := range first.msg.GetAccounts() {
		want := listed[a.GetId()]
		require.NotNil(t, want, "the accounts ListAccounts lists")
		require.Equal(t, s.org, a.GetOrganizationId())
		require.Equal(t, want.GetCapacity(), a.GetCapacity(), "nothing used yet: the live state ListAccounts shows")
		require.Nil(t, a.GetCooldownUntil())
	}
	require.Equal(t, "alpha", first.msg.GetAccounts()[0].GetName())
	require.NotNil(t, first.msg.GetObserveTime())

	// The orchestrator calls alpha and gets a 429 with a retry-after.
	octx := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, s.org)
	sel, err := s.orchestrator.SelectAccount(octx, &accountpoolv1.SelectAccountRequest{
		Model: "claude-sonnet-4-5", AllowedAccountIds: []string{ids["alpha"]}, EstimatedInputTokens: 1_000,
	})
	require.NoError(t, err)
	_, err = s.orchestrator.RecordRequest(octx, &accountpoolv1.RecordRequestRequest{
		LeaseId: sel.GetLease().GetLeaseId(), AccountId: ids["alpha"], RequestId: "req-watch-429", Attempt: 1,
		Outcome: accountpoolv1.Outcome_OUTCOME_RATE_LIMITED, Model: "claude-sonnet-4-5", HttpStatus: 429,
		RateLimit: &accountpoolv1.RateLimitHeaders{RetryAfterSeconds: 30},
	})
	require.NoError(t, err)
	recorded := time.Now()
	all := []received{first}
	for {
		m := next(t, msgs, errc)
		all = append(all, m)
		alpha := byName(m.msg, "alpha")
		if alpha.GetCooldownUntil() != nil {
			require.WithinDuration(t, recorded.Add(30*time.Second), alpha.GetCooldownUntil().AsTime(), 5*time.Second)
			require.Nil(t, byName(m.msg, "bravo").GetCooldownUntil(), "bravo is no quota group of alpha's")
			break
		}
		require.True(t, m.msg.GetObserveTime().AsTime().Before(recorded), "a list read after the 429 shows its cool-down")
	}

	// A burst of calls on bravo changes the list every 20 ms — ten times
	// per interval, and few enough (about 60) to stay within bravo's
	// request capacity however fast the machine runs them; the messages
	// still come at most once per interval.
	beforeBurst := len(all)
	burstEnd := time.Now().Add(6 * interval)
	for i := 0; time.Now().Before(burstEnd); i++ {
		sel, err := s.orchestrator.SelectAccount(octx, &accountpoolv1.SelectAccountRequest{AllowedAccountIds: []string{ids["bravo"]}, EstimatedInputTokens: 100})
		require.NoError(t, err)
		_, err = s.orchestrator.RecordRequest(octx, &accountpoolv1.RecordRequestRequest{
			LeaseId: sel.GetLease().GetLeaseId(), AccountId: ids["bravo"], RequestId: fmt.Sprintf("req-burst-%d", i), Attempt: 1,
			Outcome: accountpoolv1.Outcome_OUTCOME_SUCCESS, InputTokens: 100, OutputTokens: 10,
		})
		require.NoError(t, err)
		time.Sleep(interval / 10)
	}
	// Once the burst ends, capacity refilling still changes the list; take
	// what came until a little after.
	settled := time.After(2 * interval)
	for collecting := true; collecting; {
		select {
		case m := <-msgs:
			all = append(all, m)
		case <-settled:
			collecting = false
		}
	}
	// How many messages the burst makes depends on the machine's speed;
	// that it makes some, and never two closer than the interval, does not.
	require.Greater(t, len(all), beforeBurst, "the burst's changes are sent")
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		gap := cur.msg.GetObserveTime().AsTime().Sub(prev.msg.GetObserveTime().AsTime())
		require.GreaterOrEqual(t, gap, interval, "message %d was observed %s after the one before", i, gap)
		require.GreaterOrEqual(t, cur.at.Sub(prev.msg.GetObserveTime().AsTime()), interval, "message %d arrived too soon", i)
	}
}

func TestWatchAccountsAuthorization(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	_, err := s.owner.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{Name: "alpha", ApiKey: "sk-ant-api03-watch-alpha"})
	require.NoError(t, err)

	t.Run("AnotherOrganization", func(t *testing.T) {
		_, errc := watch(t, ctx, s.owner, &accountpoolv1.WatchAccountsRequest{OrganizationId: newOrg()})
		requireCode(t, <-errc, codes.PermissionDenied, "cannot act for")
	})
	t.Run("TheOrchestrator", func(t *testing.T) {
		octx := metadata.AppendToOutgoingContext(ctx, auth.OrganizationHeader, s.org)
		_, errc := watch(t, octx, s.orchestrator, &accountpoolv1.WatchAccountsRequest{OrganizationId: s.org})
		requireCode(t, <-errc, codes.PermissionDenied)
	})
	t.Run("AnAdminAnyOrganization", func(t *testing.T) {
		msgs, errc := watch(t, ctx, s.admin, &accountpoolv1.WatchAccountsRequest{OrganizationId: s.org})
		m := next(t, msgs, errc)
		require.Len(t, m.msg.GetAccounts(), 1)
		require.Equal(t, "alpha", m.msg.GetAccounts()[0].GetName())
	})
	t.Run("MinIntervalOutOfRange", func(t *testing.T) {
		for _, d := range []time.Duration{50 * time.Millisecond, 2 * time.Minute, -time.Second} {
			_, errc := watch(t, ctx, s.owner, &accountpoolv1.WatchAccountsRequest{MinInterval: durationpb.New(d)})
			requireCode(t, <-errc, codes.InvalidArgument, "min_interval", "between 100ms and 1m0s")
		}
	})
}

// A watch never ends on its own; the shutdown ends it with Unavailable at
// once, without holding the graceful stop for its grace.
func TestWatchAccountsEndsAtShutdown(t *testing.T) {
	s := startSecured(t)
	ctx := t.Context()
	msgs, errc := watch(t, ctx, s.owner, &accountpoolv1.WatchAccountsRequest{MinInterval: durationpb.New(100 * time.Millisecond)})
	next(t, msgs, errc)
	select {
	case err := <-errc:
		t.Fatalf("the watch ended on its own: %v", err)
	case <-time.After(500 * time.Millisecond):
	}

	stopped := make(chan error, 1)
	go func() { stopped <- s.shutdown() }()
	select {
	case err := <-errc:
		requireCode(t, err, codes.Unavailable)
	case <-time.After(9 * time.Second):
		t.Fatal("the watch outlived the shutdown")
	}
	require.NoError(t, <-stopped)
}

// Two replicas share the live state in Redis: a 429 settled in one shows
// in a watch on the other, which hears of no change and finds it by
// reading again every min_interval.
func TestWatchAccountsSeesAnotherReplicasLiveState(t *testing.T) {
	rdb := redistest.Client(t) // skips without SWITCHYARD_TEST_REDIS_URL
	schema := pgtest.NewSchema(t, migrations.AccountPool)
	keyring, err := accountpool.GenerateKeyring()
	require.NoError(t, err)
	cfg := accountpool.Config{Keyring: keyring, DatabaseURL: schema.AppURL,
		RedisURL: redistest.URL(t), RedisNamespace: redistest.Namespace(t, rdb)}
	a, b := serve(t, cfg), serve(t, cfg)
	a.requireServing(t)
	b.requireServing(t)
	ctx := t.Context()
	org := newOrg()
	reg, err := a.client.RegisterAccount(ctx, &accountpoolv1.RegisterAccountRequest{OrganizationId: org, Name: "shared", ApiKey: "sk-ant-api03-shared", Tier: "tier2"})
	require.NoError(t, err)
	id := reg.GetAccount().GetId()
	require.Eventually(t, func() bool {
		list, err := b.client.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
		return err == nil && len(list.GetAccounts()) == 1
	}, 10*time.Second, 10*time.Millisecond)

	msgs, errc := watch(t, ctx, b.client, &accountpoolv1.WatchAccountsRequest{OrganizationId: org, MinInterval: durationpb.New(100 * time.Millisecond)})
	require.Nil(t, next(t, msgs, errc).msg.GetAccounts()[0].GetCooldownUntil())
	sel, err := a.client.SelectAccount(ctx, &accountpoolv1.SelectAccountRequest{OrganizationId: org})
	require.NoError(t, err)
	_, err = a.client.RecordRequest(ctx, &accountpoolv1.RecordRequestRequest{
		OrganizationId: org, LeaseId: sel.GetLease().GetLeaseId(), AccountId: id, RequestId: "req-replica-429", Attempt: 1,
		Outcome: accountpoolv1.Outcome_OUTCOME_RATE_LIMITED, HttpStatus: 429, RateLimit: &accountpoolv1.RateLimitHeaders{RetryAfterSeconds: 30},
	})
	require.NoError(t, err)
	for {
		if next(t, msgs, errc).msg.GetAccounts()[0].GetCooldownUntil() != nil {
			break
		}
	}
}
