package api

import (
	"google.golang.org/grpc"

	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/services/activity/internal/tracker"
)

// WatchActivities implements activityv1.ActivityServiceServer. The auth
// interceptor has already resolved the request's organization_id (and
// filled it in when it was empty) before the generated handler passed the
// request on; the tracker does the rest.
//
// The stream ends only when the client leaves (Canceled), when the
// service shuts down (the server turns that into Unavailable), or when the
// request is bad or the store fails.
func (s *Server) WatchActivities(req *activityv1.WatchActivitiesRequest, stream grpc.ServerStreamingServer[activityv1.WatchActivitiesResponse]) error {
	ctx := stream.Context()
	view := viewFromProto(req.GetView())
	err := s.tracker.Watch(ctx, tracker.WatchInput{
		OrganizationID: req.GetOrganizationId(),
		Cursor:         req.GetCursor(),
		Backlog:        int(req.GetBacklog()),
	}, func(ev tracker.WatchEvent) error {
		resp, err := watchResponse(ev, view)
		if err != nil {
			return err
		}
		return stream.Send(resp)
	})
	if ctx.Err() != nil {
		// Whatever failed, it failed because the stream ended: a send, a
		// read, or the wait.
		err = ctx.Err()
	}
	return s.fail(ctx, "WatchActivities", err)
}

// watchResponse converts one event, the activity in the watch's view.
func watchResponse(ev tracker.WatchEvent, view activityv1.ActivityView) (*activityv1.WatchActivitiesResponse, error) {
	resp := &activityv1.WatchActivitiesResponse{Cursor: ev.Cursor, CaughtUp: ev.CaughtUp}
	if ev.Change == nil {
		return resp, nil
	}
	pa, err := activityView(ev.Change.Activity, view)
	if err != nil {
		return nil, err
	}
	resp.Activity = pa
	if pe := ev.Change.LatestProgress; pe != nil {
		if resp.LatestProgress, err = eventToProto(*pe); err != nil {
			return nil, err
		}
	}
	return resp, nil
}
