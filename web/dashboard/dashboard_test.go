package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/web/dashboard"
)

// fakePool answers ListAccounts for the token "good" and refuses others,
// as the real service's auth would.
type fakePool struct {
	accountpoolv1.UnimplementedAccountPoolServiceServer
}

func tokenOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("authorization"), ",")
}

func (fakePool) ListAccounts(ctx context.Context, req *accountpoolv1.ListAccountsRequest) (*accountpoolv1.ListAccountsResponse, error) {
	if tokenOf(ctx) != "Bearer good" {
		return nil, status.Error(codes.PermissionDenied, "this token may not act for organization "+req.GetOrganizationId())
	}
	return &accountpoolv1.ListAccountsResponse{Accounts: []*accountpoolv1.Account{{Name: "primary", OrganizationId: req.GetOrganizationId(),
		Capacity: []*accountpoolv1.Capacity{{ModelFamily: "sonnet", RequestsLimit: 1 << 60}}}}}, nil
}

// fakeActivity streams the activities its test feeds it, after
// refusing a cursor "bad" at once.
type fakeActivity struct {
	activityv1.UnimplementedActivityServiceServer
	feed  chan *activityv1.WatchActivitiesResponse
	fail  chan error
	ended chan error
}

func (f *fakeActivity) WatchActivities(req *activityv1.WatchActivitiesRequest, stream grpc.ServerStreamingServer[activityv1.WatchActivitiesResponse]) error {
	if req.GetCursor() == "bad" {
		return status.Error(codes.InvalidArgument, "cursor: not a cursor this service issued")
	}
	for {
		select {
		case msg := <-f.feed:
			if err := stream.Send(msg); err != nil {
				return err
			}
		case err := <-f.fail:
			return err
		case <-stream.Context().Done():
			f.ended <- stream.Context().Err()
			return stream.Context().Err()
		}
	}
}

type fixture struct {
	url      string
	activity *fakeActivity
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	act := &fakeActivity{feed: make(chan *activityv1.WatchActivitiesResponse), fail: make(chan error), ended: make(chan error, 1)}
	accountpoolv1.RegisterAccountPoolServiceServer(srv, fakePool{})
	activityv1.RegisterActivityServiceServer(srv, act)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	tel, shutdown := telemetry.New("dashboard-test", nil)
	t.Cleanup(func() { _ = shutdown(context.Background()) })
	h, err := dashboard.New(dashboard.Config{AccountPool: conn, Activity: conn,
		Logger: slog.New(slog.DiscardHandler), Telemetry: tel})
	require.NoError(t, err)
	web := httptest.NewServer(h)
	t.Cleanup(web.Close)
	return fixture{url: web.URL, activity: act}
}

func post(t *testing.T, ctx context.Context, url, token, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

func decodeError(t *testing.T, resp *http.Response) (code, message string) {
	t.Helper()
	defer resp.Body.Close()
	var e struct{ Code, Message string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	return e.Code, e.Message
}

func TestUnaryCallsForwardTheCallersToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	resp := post(t, ctx, f.url+"/api/accountpool/ListAccounts", "good", `{"organizationId":"acme"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var got accountpoolv1.ListAccountsResponse
	require.NoError(t, protojson.Unmarshal(body, &got))
	require.Equal(t, "primary", got.GetAccounts()[0].GetName())
	require.Equal(t, "acme", got.GetAccounts()[0].GetOrganizationId())
	require.Contains(t, string(body), `"requestsLimit":"1152921504606846976"`, "int64 travels as a string, exact")

	resp = post(t, ctx, f.url+"/api/accountpool/ListAccounts", "other", `{"organizationId":"acme"}`)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	code, msg := decodeError(t, resp)
	require.Equal(t, "permission_denied", code)
	require.Contains(t, msg, "organization acme")
}

func TestRequestsTheAPIRefuses(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, path, token, body string
		status                  int
		code, message           string
	}{
		{"no token", "/api/accountpool/ListAccounts", "", `{}`, http.StatusUnauthorized, "unauthenticated", "Authorization: Bearer"},
		{"unknown method", "/api/accountpool/DeleteAccount", "good", `{}`, http.StatusNotFound, "not_found", "no method accountpool/DeleteAccount"},
		{"unknown route", "/api/x", "good", `{}`, http.StatusNotFound, "not_found", "POST /api/<service>/<Method>"},
		{"not JSON", "/api/accountpool/ListAccounts", "good", `{"organizationId":`, http.StatusBadRequest, "invalid_argument", "ListAccountsRequest in proto3 JSON"},
		{"unknown field", "/api/accountpool/ListAccounts", "good", `{"apiKey":"x"}`, http.StatusBadRequest, "invalid_argument", "apiKey"},
		{"too large", "/api/accountpool/ListAccounts", "good", `{"organizationId":"` + strings.Repeat("a", 70<<10) + `"}`, http.StatusRequestEntityTooLarge, "invalid_argument", "at most"},
		{"refused at once", "/api/activity/WatchActivities", "good", `{"cursor":"bad"}`, http.StatusBadRequest, "invalid_argument", "cursor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := post(t, ctx, f.url+tc.path, tc.token, tc.body)
			require.Equal(t, tc.status, resp.StatusCode)
			code, msg := decodeError(t, resp)
			require.Equal(t, tc.code, code)
			require.Contains(t, msg, tc.message)
		})
	}
}

func TestStreamsRelayEachMessageAsItArrives(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan *http.Response, 1)
	go func() { done <- post(t, ctx, f.url+"/api/activity/WatchActivities", "good", `{"backlog":5}`) }()

	// Each message reaches the browser before the next one exists.
	f.activity.feed <- &activityv1.WatchActivitiesResponse{CaughtUp: true, Cursor: "c1"}
	resp := <-done
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		require.True(t, lines.Scan(), "stream ended: %v", lines.Err())
		return lines.Text()
	}
	require.JSONEq(t, `{"cursor":"c1","caughtUp":true}`, next())
	f.activity.feed <- &activityv1.WatchActivitiesResponse{Activity: &activityv1.Activity{Id: "a1", Status: activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING}, Cursor: "c2"}
	require.JSONEq(t, `{"activity":{"id":"a1","status":"ACTIVITY_STATUS_RUNNING"},"cursor":"c2"}`, next())

	// A failure after the start is the stream's last line.
	f.activity.fail <- status.Error(codes.Unavailable, "the server is shutting down")
	require.JSONEq(t, `{"error":{"code":"unavailable","message":"the server is shutting down"}}`, next())
	require.False(t, lines.Scan())
}

func TestALeavingBrowserEndsTheServiceStream(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *http.Response, 1)
	go func() { done <- post(t, ctx, f.url+"/api/activity/WatchActivities", "good", `{}`) }()
	f.activity.feed <- &activityv1.WatchActivitiesResponse{CaughtUp: true}
	resp := <-done
	require.Equal(t, http.StatusOK, resp.StatusCode)
	cancel()
	select {
	case err := <-f.activity.ended:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the service's stream outlived the browser's request")
	}
}

func TestThePageIsServedWithAStrictPolicy(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.url + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, strings.ToLower(string(body)), "<!doctype html>")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'self'")
	require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
}
