// Package api is the gRPC face of the Orchestrator: it converts
// DelegateTask requests to delegate tasks and their results and errors back.
package api

import (
	"context"

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
	resp, err := s.runner.Run(ctx, delegate.Task{
		OrganizationID: req.GetOrganizationId(),
		SessionID:      req.GetSessionId(),
		UserID:         req.GetUserId(),
		Category:       req.GetCategory(),
		Skills:         req.GetLoadSkills(),
		Prompt:         req.GetPrompt(),
		RequestID:      req.GetRequestId(),
		MaxTokens:      int64(req.GetMaxTokens()),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}
