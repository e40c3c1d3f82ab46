package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
)

// maxRequestBytes bounds an API request body: every request the page
// sends is a few hundred bytes of filters.
const maxRequestBytes = 64 << 10

// method is one RPC the API forwards.
type method struct {
	conn       grpc.ClientConnInterface
	fullName   string
	newRequest func() proto.Message
	// newResponse makes the message each answer (or each stream message)
	// is read into.
	newResponse func() proto.Message
	stream      bool
}

// methods is everything the page may call: the reads of the admin API and
// the two watches. Writes are left to the gRPC API, where they are made
// deliberately with grpcurl or a client; a dashboard has no reason to
// register or delete accounts.
func methods(pool, activity grpc.ClientConnInterface) map[string]method {
	m := map[string]method{}
	add := func(service string, conn grpc.ClientConnInterface, fullName string, stream bool, req, resp func() proto.Message) {
		name := fullName[strings.LastIndexByte(fullName, '/')+1:]
		m[service+"/"+name] = method{conn: conn, fullName: fullName, newRequest: req, newResponse: resp, stream: stream}
	}
	add("accountpool", pool, accountpoolv1.AccountPoolService_ListAccounts_FullMethodName, false,
		func() proto.Message { return &accountpoolv1.ListAccountsRequest{} }, func() proto.Message { return &accountpoolv1.ListAccountsResponse{} })
	add("accountpool", pool, accountpoolv1.AccountPoolService_GetAccount_FullMethodName, false,
		func() proto.Message { return &accountpoolv1.GetAccountRequest{} }, func() proto.Message { return &accountpoolv1.GetAccountResponse{} })
	add("accountpool", pool, accountpoolv1.AccountPoolService_GetUsage_FullMethodName, false,
		func() proto.Message { return &accountpoolv1.GetUsageRequest{} }, func() proto.Message { return &accountpoolv1.GetUsageResponse{} })
	add("accountpool", pool, accountpoolv1.AccountPoolService_GetOrganizationSettings_FullMethodName, false,
		func() proto.Message { return &accountpoolv1.GetOrganizationSettingsRequest{} }, func() proto.Message { return &accountpoolv1.GetOrganizationSettingsResponse{} })
	add("accountpool", pool, accountpoolv1.AccountPoolService_WatchAccounts_FullMethodName, true,
		func() proto.Message { return &accountpoolv1.WatchAccountsRequest{} }, func() proto.Message { return &accountpoolv1.WatchAccountsResponse{} })
	add("activity", activity, activityv1.ActivityService_GetActivity_FullMethodName, false,
		func() proto.Message { return &activityv1.GetActivityRequest{} }, func() proto.Message { return &activityv1.GetActivityResponse{} })
	add("activity", activity, activityv1.ActivityService_ListActivities_FullMethodName, false,
		func() proto.Message { return &activityv1.ListActivitiesRequest{} }, func() proto.Message { return &activityv1.ListActivitiesResponse{} })
	add("activity", activity, activityv1.ActivityService_WatchActivities_FullMethodName, true,
		func() proto.Message { return &activityv1.WatchActivitiesRequest{} }, func() proto.Message { return &activityv1.WatchActivitiesResponse{} })
	return m
}

type api struct {
	methods      map[string]method
	logger       *slog.Logger
	unaryTimeout time.Duration
}

var (
	unmarshal = protojson.UnmarshalOptions{}
	marshal   = protojson.MarshalOptions{}
)

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m, ok := a.methods[r.PathValue("service")+"/"+r.PathValue("method")]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("the dashboard API has no method %s/%s", r.PathValue("service"), r.PathValue("method")))
		return
	}
	token, ok := bearer(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthenticated", "send your Switchyard token as: Authorization: Bearer <token>")
		return
	}
	req := m.newRequest()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_argument", fmt.Sprintf("the request body must be at most %d bytes", maxRequestBytes))
		return
	}
	if len(body) > 0 {
		if err := unmarshal.Unmarshal(body, req); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a "+string(req.ProtoReflect().Descriptor().FullName())+" in proto3 JSON: "+err.Error())
			return
		}
	}
	ctx := metadata.NewOutgoingContext(r.Context(), metadata.Pairs("authorization", "Bearer "+token))
	if m.stream {
		a.serveStream(ctx, w, m, req)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.unaryTimeout)
	defer cancel()
	resp := m.newResponse()
	if err := m.conn.Invoke(ctx, m.fullName, req, resp); err != nil {
		writeStatus(w, err)
		return
	}
	out, err := marshal.Marshal(resp)
	if err != nil {
		a.encodingFailed(ctx, m, err)
		writeError(w, http.StatusInternalServerError, "internal", "encoding the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// serveStream relays a server stream as newline-delimited JSON until the
// service ends it or the browser leaves (its request context then ends,
// which cancels the gRPC stream).
func (a *api) serveStream(ctx context.Context, w http.ResponseWriter, m method, req proto.Message) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := m.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, m.fullName)
	if err == nil {
		err = stream.SendMsg(req)
	}
	if err == nil {
		err = stream.CloseSend()
	}
	// The first message (or the first error) decides the HTTP status: an
	// error the service answers at once (a bad token, a bad cursor) is an
	// ordinary error response, not a stream that fails.
	first := m.newResponse()
	if err == nil {
		err = stream.RecvMsg(first)
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	msg := first
	for {
		line, err := marshal.Marshal(msg)
		if err != nil {
			a.encodingFailed(ctx, m, err)
			writeStreamError(w, status.Error(codes.Internal, "encoding a message: "+err.Error()))
			return
		}
		if _, err := w.Write(append(line, '\n')); err != nil {
			return // the browser left
		}
		if err := rc.Flush(); err != nil {
			return
		}
		msg = m.newResponse()
		if err := stream.RecvMsg(msg); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return
			}
			writeStreamError(w, err)
			_ = rc.Flush()
			return
		}
	}
}

// encodingFailed logs a service answer that proto3 JSON cannot encode: a
// bug on one side or the other, the only failure that is the dashboard's
// own (the services log their errors, and the browser sees each).
func (a *api) encodingFailed(ctx context.Context, m method, err error) {
	a.logger.ErrorContext(ctx, "encoding a service's answer as JSON", "method", m.fullName, "error", err)
}

// bearer is the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
