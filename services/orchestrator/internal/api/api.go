// Package api is the gRPC face of the Orchestrator: it converts
// DelegateTask and StreamDelegateTask requests to delegate tasks, and their
// events, results and errors back.
package api

import (
	"context"

	"google.golang.org/grpc"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"
)

// Server implements orchestratorv1.OrchestratorServiceServer.
type Server struct {
	orchestratorv1.UnimplementedOrchestratorServiceServer
	runner *delegate.Runner
}

var _ orchestratorv1.OrchestratorServiceServer = (*Server)(nil)

// New returns a Server that runs tasks with runner.
func New(runner *delegate.Runner) *Server {
	return &Server{runner: runner}
}

// DelegateTask implements the RPC; see the proto for its contract.
func (s *Server) DelegateTask(ctx context.Context, req *orchestratorv1.DelegateTaskRequest) (*orchestratorv1.DelegateTaskResponse, error) {
	resp, err := s.runner.Run(ctx, toTask(req))
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// StreamDelegateTask implements the RPC; see the proto for its contract.
// It runs the same flow as DelegateTask and sends each event as it happens.
// Once a send fails (the client went away) nothing more is sent; the
// client's cancellation reaches the flow through the stream's context.
func (s *Server) StreamDelegateTask(req *orchestratorv1.StreamDelegateTaskRequest, stream grpc.ServerStreamingServer[orchestratorv1.StreamDelegateTaskResponse]) error {
	var sendErr error
	send := func(ev *orchestratorv1.StreamDelegateTaskResponse) {
		if sendErr == nil {
			sendErr = stream.Send(ev)
		}
	}
	resp, err := s.runner.Stream(stream.Context(), toTask(req), func(e delegate.Event) { send(eventToProto(e)) })
	if err != nil {
		return toStatus(err)
	}
	send(&orchestratorv1.StreamDelegateTaskResponse{Event: &orchestratorv1.StreamDelegateTaskResponse_Result{Result: resp}})
	return sendErr
}

// taskRequest is what DelegateTaskRequest and StreamDelegateTaskRequest
// share: the same fields, so one conversion serves both.
type taskRequest interface {
	GetOrganizationId() string
	GetSessionId() string
	GetUserId() string
	GetCategory() string
	GetLoadSkills() []string
	GetPrompt() string
	GetRequestId() string
	GetMaxTokens() int32
}

func toTask(req taskRequest) delegate.Task {
	return delegate.Task{
		OrganizationID: req.GetOrganizationId(),
		SessionID:      req.GetSessionId(),
		UserID:         req.GetUserId(),
		Category:       req.GetCategory(),
		Skills:         req.GetLoadSkills(),
		Prompt:         req.GetPrompt(),
		RequestID:      req.GetRequestId(),
		MaxTokens:      int64(req.GetMaxTokens()),
	}
}

func eventToProto(e delegate.Event) *orchestratorv1.StreamDelegateTaskResponse {
	out := &orchestratorv1.StreamDelegateTaskResponse{}
	switch e.Kind {
	case delegate.EventAccepted:
		out.Event = &orchestratorv1.StreamDelegateTaskResponse_Accepted{Accepted: &orchestratorv1.TaskAccepted{
			ActivityId: e.ActivityID, RequestId: e.RequestID, Model: e.Model, Category: e.Category,
		}}
	case delegate.EventAttemptStarted:
		out.Event = &orchestratorv1.StreamDelegateTaskResponse_AttemptStarted{AttemptStarted: &orchestratorv1.AttemptStarted{
			Number: int32(e.Attempt), AccountId: e.AccountID, AccountName: e.AccountName, LegacyMode: e.Legacy,
		}}
	case delegate.EventText:
		out.Event = &orchestratorv1.StreamDelegateTaskResponse_Text{Text: &orchestratorv1.TextDelta{Attempt: int32(e.Attempt), Text: e.Text}}
	case delegate.EventAttemptFailed:
		out.Event = &orchestratorv1.StreamDelegateTaskResponse_AttemptFailed{AttemptFailed: &orchestratorv1.AttemptFailed{
			Number: int32(e.Attempt), Outcome: e.Outcome, OutcomeCode: delegate.AttemptOutcomeCode(e.Outcome),
			HttpStatus: int32(e.HTTPStatus), Reason: e.Reason,
		}}
	case delegate.EventRestart:
		out.Event = &orchestratorv1.StreamDelegateTaskResponse_Restart{Restart: &orchestratorv1.Restart{DiscardedAttempt: int32(e.Attempt)}}
	}
	return out
}
