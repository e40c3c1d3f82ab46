package activity_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/fakeclock"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil/pgtest"
	"github.com/switchyard-dev/switchyard/pkg/syncbuf"
	"github.com/switchyard-dev/switchyard/services/activity"
)

const (
	serviceName = "switchyard.activity.v1.ActivityService"
	running     = activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING
	completed   = activityv1.ActivityStatus_ACTIVITY_STATUS_COMPLETED
	failed      = activityv1.ActivityStatus_ACTIVITY_STATUS_FAILED
)

type harness struct {
	client activityv1.ActivityServiceClient
	health healthpb.HealthClient
	clock  *fakeclock.Clock
	logs   *syncbuf.Buffer
	stop   func() error
}

// startService runs the service on the in-memory store on a real loopback
// socket and waits until its health check reports SERVING.
func startService(t *testing.T) *harness {
	t.Helper()
	return startServiceWith(t, activity.Config{})
}

// startServiceWith is startService with cfg's store settings and clock.
func startServiceWith(t *testing.T, cfg activity.Config) *harness {
	t.Helper()
	h := launch(t, cfg)
	h.waitServing(t)
	return h
}

// launch runs the service with cfg on a loopback port and the harness's
// logger and, unless cfg has one, clock, without waiting for it.
func launch(t *testing.T, cfg activity.Config) *harness {
	t.Helper()
	h := &harness{clock: fakeclock.New(time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)), logs: &syncbuf.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, nil))
	// Authentication and authorization are pkg/auth's and e2e's to test;
	// these tests are about the service's behaviour, unless they give
	// tokens.
	cfg.InsecureNoAuth = cfg.Tokens == nil
	if cfg.Now == nil {
		cfg.Now = h.clock.Now
	}
	svc, err := activity.New(ctx, cfg)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ctx) }()
	var once sync.Once
	var stopErr error
	h.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-served
		})
		return stopErr
	}
	t.Cleanup(func() { require.NoError(t, h.stop()) })

	conn, err := grpc.NewClient(svc.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	h.client = activityv1.NewActivityServiceClient(conn)
	h.health = healthpb.NewHealthClient(conn)
	return h
}

func (h *harness) waitServing(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		return h.healthStatus() == healthpb.HealthCheckResponse_SERVING
	}, 20*time.Second, 10*time.Millisecond)
}

func (h *harness) healthStatus() healthpb.HealthCheckResponse_ServingStatus {
	resp, err := h.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: serviceName})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// forEachStore runs test once on the in-memory store and once on a fresh
// PostgreSQL schema (skipped without a test database, failed when one is
// required): the service must behave the same on both.
func forEachStore(t *testing.T, test func(t *testing.T, h *harness)) {
	t.Run("memory", func(t *testing.T) {
		test(t, startService(t))
	})
	t.Run("postgres", func(t *testing.T) {
		schema := pgtest.NewSchema(t, migrations.Activity)
		test(t, startServiceWith(t, activity.Config{DatabaseURL: schema.AppURL}))
	})
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	require.NoError(t, err)
	return s
}

func requireCode(t *testing.T, err error, code codes.Code, msgContains string) {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "not a gRPC status: %v", err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	require.Contains(t, st.Message(), msgContains)
}

func TestServiceLifecycle(t *testing.T) {
	ctx := context.Background()
	h := startService(t)

	for _, name := range []string{"", serviceName} {
		resp, err := h.health.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus(), "service %q", name)
	}
	require.Contains(t, h.logs.String(), "keeps nothing across restarts")
	require.Equal(t, 1, strings.Count(h.logs.String(), "keeps nothing across restarts"))

	require.NoError(t, h.stop(), "a shutdown asked for by ctx is not an error")
	_, err := h.client.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: "org", ActivityId: uuid.NewString()})
	requireCode(t, err, codes.Unavailable, "")
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	_, err := activity.New(ctx, activity.Config{Addr: "127.0.0.1:0"})
	require.ErrorContains(t, err, "Logger is required")
	_, err = activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger})
	require.ErrorContains(t, err, "SWITCHYARD_TOKENS", "no tokens and no explicit opt-out: refuse to serve")
	_, err = activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger, InsecureNoAuth: true, Store: "postgres-someday"})
	require.ErrorContains(t, err, `unknown store "postgres-someday"`)
	_, err = activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger, InsecureNoAuth: true, Store: activity.StorePostgres})
	require.ErrorContains(t, err, "SWITCHYARD_DATABASE_URL")
	_, err = activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger, InsecureNoAuth: true, DatabaseURL: "postgres://switchyard_app:hunter2@[bad"})
	require.ErrorContains(t, err, "not a valid PostgreSQL connection string")
	require.NotContains(t, err.Error(), "hunter2")
	_, err = activity.New(ctx, activity.Config{Addr: "256.0.0.1:-1", Logger: logger, InsecureNoAuth: true})
	require.Error(t, err)
	_, err = activity.New(ctx, activity.Config{Addr: "127.0.0.1:0", Logger: logger, InsecureNoAuth: true, WatchPollInterval: -time.Second})
	require.ErrorContains(t, err, "watch poll interval")
}

func TestActivityLifecycleOverGRPC(t *testing.T) {
	forEachStore(t, testActivityLifecycleOverGRPC)
}

func testActivityLifecycleOverGRPC(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org := "org-" + uuid.NewString()

	// Start with a generated id.
	started, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{
		OrganizationId: org, SessionId: "session-1", UserId: "user-1",
		AgentType: "ai_executor", AgentName: "built-in", Category: "quick",
		InputData: mustStruct(t, map[string]any{"prompt": "hello", "skills": []any{"git"}}),
		Metadata:  mustStruct(t, map[string]any{"account_id": "acc-1", "account_name": "primary"}),
	})
	require.NoError(t, err)
	require.True(t, started.GetCreated())
	a := started.GetActivity()
	_, err = uuid.Parse(a.GetId())
	require.NoError(t, err)
	require.Equal(t, org, a.GetOrganizationId())
	require.Equal(t, running, a.GetStatus())
	require.Equal(t, h.clock.Now(), a.GetStartTime().AsTime())
	require.Nil(t, a.GetCompleteTime())
	require.Zero(t, a.GetDurationMs())
	require.Equal(t, "hello", a.GetInputData().GetFields()["prompt"].GetStringValue())

	// Start is idempotent on a client-given id.
	h.clock.Advance(time.Second) // so that list order does not rest on ids
	id := uuid.NewString()
	req := &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: id, SessionId: "session-2", AgentType: "ai_executor"}
	first, err := c.TrackStart(ctx, req)
	require.NoError(t, err)
	require.True(t, first.GetCreated())
	h.clock.Advance(time.Second)
	again, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: id, SessionId: "changed"})
	require.NoError(t, err)
	require.False(t, again.GetCreated())
	require.True(t, proto.Equal(first.GetActivity(), again.GetActivity()), "returned unchanged")

	// Progress, in order.
	for i := 1; i <= 2; i++ {
		h.clock.Advance(100 * time.Millisecond)
		resp, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{
			OrganizationId: org, ActivityId: a.GetId(),
			Message: fmt.Sprintf("attempt %d of 3", i),
			Data:    mustStruct(t, map[string]any{"attempt": i}),
		})
		require.NoError(t, err)
		require.Equal(t, int64(i), resp.GetEvent().GetSequence())
		require.Equal(t, a.GetId(), resp.GetEvent().GetActivityId())
	}

	// Complete; duration is the service's clock, metadata is merged.
	h.clock.Advance(1300 * time.Millisecond)
	complete := &activityv1.TrackCompleteRequest{
		OrganizationId: org, ActivityId: a.GetId(), Status: completed,
		OutputData: mustStruct(t, map[string]any{"text": "hi there", "model": "claude", "input_tokens": 12}),
		Metadata:   mustStruct(t, map[string]any{"account_id": "acc-2", "cost_usd": 0.0021, "attempts": 2}),
	}
	done, err := c.TrackComplete(ctx, complete)
	require.NoError(t, err)
	d := done.GetActivity()
	require.Equal(t, completed, d.GetStatus())
	require.Equal(t, int64(3500), d.GetDurationMs(), "1s + 1s + 2×100ms + 1300ms on the service's clock")
	require.Equal(t, h.clock.Now(), d.GetCompleteTime().AsTime())
	require.Equal(t, map[string]any{"account_id": "acc-2", "account_name": "primary", "cost_usd": 0.0021, "attempts": 2.0}, d.GetMetadata().AsMap())
	require.Equal(t, "hi there", d.GetOutputData().GetFields()["text"].GetStringValue())

	// Repeating the completion returns the stored activity; a different
	// one is refused.
	h.clock.Advance(time.Minute)
	repeat, err := c.TrackComplete(ctx, complete)
	require.NoError(t, err)
	require.True(t, proto.Equal(d, repeat.GetActivity()))
	_, err = c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: a.GetId(), Status: failed, ErrorMessage: "late"})
	requireCode(t, err, codes.FailedPrecondition, "never overwritten")
	_, err = c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: a.GetId(), Message: "after the end"})
	requireCode(t, err, codes.FailedPrecondition, "already ended")

	// Get shows the activity and its events in order.
	got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: a.GetId()})
	require.NoError(t, err)
	require.True(t, proto.Equal(d, got.GetActivity()))
	require.Len(t, got.GetProgressEvents(), 2)
	for i, ev := range got.GetProgressEvents() {
		require.Equal(t, int64(i+1), ev.GetSequence())
		require.Equal(t, fmt.Sprintf("attempt %d of 3", i+1), ev.GetMessage())
		require.Equal(t, float64(i+1), ev.GetData().GetFields()["attempt"].GetNumberValue())
	}

	// A failed activity.
	f, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, SessionId: "session-1"})
	require.NoError(t, err)
	fd, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: f.GetActivity().GetId(), Status: failed, ErrorMessage: "every account rate limited"})
	require.NoError(t, err)
	require.Equal(t, failed, fd.GetActivity().GetStatus())
	require.Equal(t, "every account rate limited", fd.GetActivity().GetErrorMessage())

	// List: newest first, filtered, paginated.
	list := func(req *activityv1.ListActivitiesRequest) []string {
		t.Helper()
		req.OrganizationId = org
		var ids []string
		for range 100 {
			resp, err := c.ListActivities(ctx, req)
			require.NoError(t, err)
			for _, x := range resp.GetActivities() {
				ids = append(ids, x.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids
			}
			req.PageToken = resp.GetNextPageToken()
		}
		t.Fatal("pagination did not end")
		return nil
	}
	fID, startedID := f.GetActivity().GetId(), a.GetId()
	all := list(&activityv1.ListActivitiesRequest{})
	require.Equal(t, []string{fID, id, startedID}, all, "newest first")
	require.Equal(t, all, list(&activityv1.ListActivitiesRequest{PageSize: 1}))
	require.Equal(t, []string{fID, startedID}, list(&activityv1.ListActivitiesRequest{SessionId: "session-1"}))
	require.Equal(t, []string{id}, list(&activityv1.ListActivitiesRequest{Status: running}))
	require.Equal(t, []string{startedID}, list(&activityv1.ListActivitiesRequest{Status: completed}))
	require.Equal(t, []string{fID}, list(&activityv1.ListActivitiesRequest{Status: failed, PageSize: 500}))
	require.Equal(t, []string{id, startedID}, list(&activityv1.ListActivitiesRequest{
		StartTimeFrom: a.GetStartTime(),
		StartTimeTo:   timestamppb.New(f.GetActivity().GetStartTime().AsTime()),
	}))
}

func TestInvalidArgumentSaysWhatToFix(t *testing.T) {
	ctx := context.Background()
	h := startService(t)
	c := h.client
	org := "org-" + uuid.NewString()
	a, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	id := a.GetActivity().GetId()
	tooBig := mustStruct(t, map[string]any{"blob": strings.Repeat("x", (1<<20)+1)})

	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"start without organization", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{})
			return err
		}, "organization_id"},
		{"activity id not a UUID", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, ActivityId: "task-1"})
			return err
		}, "activity_id"},
		{"input too large", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, InputData: tooBig})
			return err
		}, "input_data"},
		{"invalid deadline", func() error {
			_, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, Deadline: &timestamppb.Timestamp{Seconds: 1 << 40}})
			return err
		}, "deadline"},
		{"complete as abandoned", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: abandonedStatus})
			return err
		}, "status"},
		{"progress without message", func() error {
			_, err := c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id})
			return err
		}, "message"},
		{"complete without status", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id})
			return err
		}, "status"},
		{"complete as running", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: running})
			return err
		}, "status"},
		{"complete with unknown status", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: 9})
			return err
		}, "status"},
		{"output too large", func() error {
			_, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: completed, OutputData: tooBig})
			return err
		}, "output_data"},
		{"get with bad id", func() error {
			_, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: "42"})
			return err
		}, "activity_id"},
		{"page size out of range", func() error {
			_, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, PageSize: 501})
			return err
		}, "page_size"},
		{"bad page token", func() error {
			_, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, PageToken: "bm90IGEgdG9rZW4"})
			return err
		}, "page_token"},
		{"empty time window", func() error {
			now := timestamppb.Now()
			_, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, StartTimeFrom: now, StartTimeTo: now})
			return err
		}, "start_time_to"},
		{"invalid timestamp", func() error {
			_, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: org, StartTimeFrom: &timestamppb.Timestamp{Nanos: -1}})
			return err
		}, "start_time_from"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			requireCode(t, tc.call(), codes.InvalidArgument, tc.field)
		})
	}

	got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
	require.NoError(t, err)
	require.Equal(t, running, got.GetActivity().GetStatus(), "rejected calls changed nothing")
	require.Empty(t, got.GetProgressEvents())
}

func TestUnknownActivityIsNotFound(t *testing.T) {
	forEachStore(t, testUnknownActivityIsNotFound)
}

func testUnknownActivityIsNotFound(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org, id := "org-"+uuid.NewString(), uuid.NewString()

	_, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: id})
	requireCode(t, err, codes.NotFound, "not found")
	_, err = c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: id, Message: "m"})
	requireCode(t, err, codes.NotFound, "not found")
	_, err = c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: org, ActivityId: id, Status: completed})
	requireCode(t, err, codes.NotFound, "not found")
}

func TestProgressLimitIsResourceExhausted(t *testing.T) {
	forEachStore(t, testProgressLimitIsResourceExhausted)
}

func testProgressLimitIsResourceExhausted(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	org := "org-" + uuid.NewString()
	a, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org})
	require.NoError(t, err)
	for i := 0; ; i++ {
		_, err = c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: org, ActivityId: a.GetActivity().GetId(), Message: fmt.Sprint(i)})
		if err != nil {
			require.Positive(t, i)
			break
		}
		require.Less(t, i, 10000, "progress is never limited")
	}
	requireCode(t, err, codes.ResourceExhausted, "limit")
}

func TestOrganizationsAreIsolated(t *testing.T) {
	forEachStore(t, testOrganizationsAreIsolated)
}

func testOrganizationsAreIsolated(t *testing.T, h *harness) {
	ctx := context.Background()
	c := h.client
	orgA, orgB := "org-a-"+uuid.NewString(), "org-b-"+uuid.NewString()

	a, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: orgA, SessionId: "shared-session", UserId: "alice"})
	require.NoError(t, err)
	id := a.GetActivity().GetId()

	_, err = c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: orgB, ActivityId: id})
	requireCode(t, err, codes.NotFound, "")
	_, err = c.TrackProgress(ctx, &activityv1.TrackProgressRequest{OrganizationId: orgB, ActivityId: id, Message: "intrusion"})
	requireCode(t, err, codes.NotFound, "")
	_, err = c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: orgB, ActivityId: id, Status: failed, ErrorMessage: "hijacked"})
	requireCode(t, err, codes.NotFound, "")
	for _, req := range []*activityv1.ListActivitiesRequest{
		{OrganizationId: orgB},
		{OrganizationId: orgB, SessionId: "shared-session"},
		{OrganizationId: orgB, Status: running},
	} {
		resp, err := c.ListActivities(ctx, req)
		require.NoError(t, err)
		require.Empty(t, resp.GetActivities())
	}

	// Ids are scoped by organization: B using A's id gets an activity of
	// its own, and learns nothing about A's.
	b, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: orgB, ActivityId: id, UserId: "bob"})
	require.NoError(t, err)
	require.True(t, b.GetCreated())
	require.Equal(t, "bob", b.GetActivity().GetUserId())
	require.Equal(t, orgB, b.GetActivity().GetOrganizationId())
	_, err = c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{OrganizationId: orgB, ActivityId: id, Status: failed, ErrorMessage: "b's own"})
	require.NoError(t, err)

	got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: orgA, ActivityId: id})
	require.NoError(t, err)
	require.True(t, proto.Equal(a.GetActivity(), got.GetActivity()), "org A's activity is untouched")
	require.Empty(t, got.GetProgressEvents())
	listA, err := c.ListActivities(ctx, &activityv1.ListActivitiesRequest{OrganizationId: orgA})
	require.NoError(t, err)
	require.Len(t, listA.GetActivities(), 1)
	require.Equal(t, "alice", listA.GetActivities()[0].GetUserId())
}

func TestBasicViewLeavesOutWhatTheWriterSent(t *testing.T) {
	forEachStore(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		c := h.client
		org := "org-" + uuid.NewString()
		basic := activityv1.ActivityView_ACTIVITY_VIEW_BASIC
		start := &activityv1.TrackStartRequest{
			OrganizationId: org, ActivityId: uuid.NewString(), SessionId: "s", AgentType: "ai_executor",
			InputData:    mustStruct(t, map[string]any{"prompt": "hello"}),
			Metadata:     mustStruct(t, map[string]any{"start_token": "t1"}),
			ResponseView: basic,
		}
		started, err := c.TrackStart(ctx, start)
		require.NoError(t, err)
		require.True(t, started.GetCreated())
		a := started.GetActivity()
		require.Equal(t, start.GetActivityId(), a.GetId())
		require.Equal(t, running, a.GetStatus())
		require.NotNil(t, a.GetStartTime())
		require.Nil(t, a.GetInputData(), "the basic view leaves out the input")
		require.Nil(t, a.GetMetadata(), "and the metadata")

		again, err := c.TrackStart(ctx, start)
		require.NoError(t, err)
		require.False(t, again.GetCreated())
		require.Equal(t, "t1", again.GetActivity().GetMetadata().GetFields()["start_token"].GetStringValue(),
			"an activity that already existed comes back whole, whatever the view")
		require.Equal(t, "hello", again.GetActivity().GetInputData().GetFields()["prompt"].GetStringValue())

		done, err := c.TrackComplete(ctx, &activityv1.TrackCompleteRequest{
			OrganizationId: org, ActivityId: a.GetId(), Status: completed,
			OutputData: mustStruct(t, map[string]any{"text": "hi"}), ResponseView: basic,
		})
		require.NoError(t, err)
		require.Equal(t, completed, done.GetActivity().GetStatus())
		require.NotNil(t, done.GetActivity().GetCompleteTime())
		require.Nil(t, done.GetActivity().GetOutputData())

		got, err := c.GetActivity(ctx, &activityv1.GetActivityRequest{OrganizationId: org, ActivityId: a.GetId()})
		require.NoError(t, err)
		require.Equal(t, "hi", got.GetActivity().GetOutputData().GetFields()["text"].GetStringValue(), "the view changes the answer, not what is stored")

		newer, err := c.TrackStart(ctx, &activityv1.TrackStartRequest{OrganizationId: org, AgentType: "x",
			InputData: mustStruct(t, map[string]any{"prompt": "p"}), ResponseView: 9})
		require.NoError(t, err, "a view this server does not know is not a reason to refuse the write")
		require.Equal(t, "p", newer.GetActivity().GetInputData().GetFields()["prompt"].GetStringValue(), "it answers the full view")
	})
}
