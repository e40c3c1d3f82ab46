// Package api serves ActivityService over gRPC: it converts between
// protobuf and domain types and translates domain errors into statuses
// (errors.go). Every rule lives in the tracker; a handler only converts,
// calls and converts back.
package api

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// Server implements activityv1.ActivityServiceServer.
type Server struct {
	activityv1.UnimplementedActivityServiceServer
	tracker *tracker.Tracker
	logger  *slog.Logger
}

var _ activityv1.ActivityServiceServer = (*Server)(nil)

// New returns a Server over t. logger receives the causes of Internal
// errors, which callers never see.
func New(t *tracker.Tracker, logger *slog.Logger) *Server {
	return &Server{tracker: t, logger: logger}
}

// fail turns err into the status the caller gets, logging what the
// caller cannot be told: the cause of an internal error, and why the store
// is unavailable.
func (s *Server) fail(ctx context.Context, method string, err error) error {
	st := toStatus(err)
	if st.Code() == codes.Internal || st.Code() == codes.Unavailable {
		s.logger.ErrorContext(ctx, "activity call failed", "method", method, "error", err)
	}
	return st.Err()
}

// TrackStart implements activityv1.ActivityServiceServer.
func (s *Server) TrackStart(ctx context.Context, req *activityv1.TrackStartRequest) (*activityv1.TrackStartResponse, error) {
	deadline, err := timeFromProto("deadline", req.GetDeadline())
	if err != nil {
		return nil, s.fail(ctx, "TrackStart", err)
	}
	input, err := structToMap("input_data", req.GetInputData())
	if err != nil {
		return nil, s.fail(ctx, "TrackStart", err)
	}
	metadata, err := structToMap("metadata", req.GetMetadata())
	if err != nil {
		return nil, s.fail(ctx, "TrackStart", err)
	}
	view := viewFromProto(req.GetResponseView())
	a, created, err := s.tracker.Start(ctx, tracker.StartInput{
		OrganizationID: req.GetOrganizationId(),
		ActivityID:     req.GetActivityId(),
		SessionID:      req.GetSessionId(),
		UserID:         req.GetUserId(),
		AgentType:      req.GetAgentType(),
		AgentName:      req.GetAgentName(),
		Category:       req.GetCategory(),
		Input:          input,
		Metadata:       metadata,
		Deadline:       deadline,
	})
	if err != nil {
		return nil, s.fail(ctx, "TrackStart", err)
	}
	if !created {
		view = activityv1.ActivityView_ACTIVITY_VIEW_FULL
	}
	pa, err := activityView(a, view)
	if err != nil {
		return nil, s.fail(ctx, "TrackStart", err)
	}
	return &activityv1.TrackStartResponse{Activity: pa, Created: created}, nil
}

// TrackProgress implements activityv1.ActivityServiceServer.
func (s *Server) TrackProgress(ctx context.Context, req *activityv1.TrackProgressRequest) (*activityv1.TrackProgressResponse, error) {
	data, err := structToMap("data", req.GetData())
	if err != nil {
		return nil, s.fail(ctx, "TrackProgress", err)
	}
	ev, err := s.tracker.Progress(ctx, tracker.ProgressInput{
		OrganizationID: req.GetOrganizationId(),
		ActivityID:     req.GetActivityId(),
		Message:        req.GetMessage(),
		Data:           data,
	})
	if err != nil {
		return nil, s.fail(ctx, "TrackProgress", err)
	}
	pe, err := eventToProto(ev)
	if err != nil {
		return nil, s.fail(ctx, "TrackProgress", err)
	}
	return &activityv1.TrackProgressResponse{Event: pe}, nil
}

// TrackComplete implements activityv1.ActivityServiceServer.
func (s *Server) TrackComplete(ctx context.Context, req *activityv1.TrackCompleteRequest) (*activityv1.TrackCompleteResponse, error) {
	st, err := statusFromProto(req.GetStatus())
	if err != nil {
		return nil, s.fail(ctx, "TrackComplete", err)
	}
	output, err := structToMap("output_data", req.GetOutputData())
	if err != nil {
		return nil, s.fail(ctx, "TrackComplete", err)
	}
	metadata, err := structToMap("metadata", req.GetMetadata())
	if err != nil {
		return nil, s.fail(ctx, "TrackComplete", err)
	}
	view := viewFromProto(req.GetResponseView())
	a, err := s.tracker.Complete(ctx, tracker.CompleteInput{
		OrganizationID: req.GetOrganizationId(),
		ActivityID:     req.GetActivityId(),
		Status:         st,
		Output:         output,
		ErrorMessage:   req.GetErrorMessage(),
		Metadata:       metadata,
	})
	if err != nil {
		return nil, s.fail(ctx, "TrackComplete", err)
	}
	pa, err := activityView(a, view)
	if err != nil {
		return nil, s.fail(ctx, "TrackComplete", err)
	}
	return &activityv1.TrackCompleteResponse{Activity: pa}, nil
}

// GetActivity implements activityv1.ActivityServiceServer.
func (s *Server) GetActivity(ctx context.Context, req *activityv1.GetActivityRequest) (*activityv1.GetActivityResponse, error) {
	a, evs, err := s.tracker.Get(ctx, req.GetOrganizationId(), req.GetActivityId())
	if err != nil {
		return nil, s.fail(ctx, "GetActivity", err)
	}
	pa, err := activityToProto(a)
	if err != nil {
		return nil, s.fail(ctx, "GetActivity", err)
	}
	resp := &activityv1.GetActivityResponse{Activity: pa, ProgressEvents: make([]*activityv1.ProgressEvent, 0, len(evs))}
	for _, ev := range evs {
		pe, err := eventToProto(ev)
		if err != nil {
			return nil, s.fail(ctx, "GetActivity", err)
		}
		resp.ProgressEvents = append(resp.ProgressEvents, pe)
	}
	return resp, nil
}

// ListActivities implements activityv1.ActivityServiceServer.
func (s *Server) ListActivities(ctx context.Context, req *activityv1.ListActivitiesRequest) (*activityv1.ListActivitiesResponse, error) {
	in, err := listInput(req)
	if err != nil {
		return nil, s.fail(ctx, "ListActivities", err)
	}
	res, err := s.tracker.List(ctx, in)
	if err != nil {
		return nil, s.fail(ctx, "ListActivities", err)
	}
	resp := &activityv1.ListActivitiesResponse{
		Activities:    make([]*activityv1.Activity, 0, len(res.Activities)),
		NextPageToken: res.NextPageToken,
	}
	for _, a := range res.Activities {
		pa, err := activityToProto(a)
		if err != nil {
			return nil, s.fail(ctx, "ListActivities", err)
		}
		resp.Activities = append(resp.Activities, pa)
	}
	return resp, nil
}

func listInput(req *activityv1.ListActivitiesRequest) (tracker.ListInput, error) {
	var (
		in  = tracker.ListInput{OrganizationID: req.GetOrganizationId(), SessionID: req.GetSessionId(), PageSize: int(req.GetPageSize()), PageToken: req.GetPageToken()}
		err error
	)
	if in.Status, err = statusFromProto(req.GetStatus()); err != nil {
		return tracker.ListInput{}, err
	}
	if in.StartFrom, err = timeFromProto("start_time_from", req.GetStartTimeFrom()); err != nil {
		return tracker.ListInput{}, err
	}
	if in.StartTo, err = timeFromProto("start_time_to", req.GetStartTimeTo()); err != nil {
		return tracker.ListInput{}, err
	}
	return in, nil
}
