package api

import (
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
)

// Policy says who may call each RPC: an organization delegates its own
// tasks; an admin may delegate for any organization it names.
func Policy() auth.Policy {
	return auth.Policy{
		orchestratorv1.OrchestratorService_DelegateTask_FullMethodName:       {auth.Organization, auth.Admin},
		orchestratorv1.OrchestratorService_StreamDelegateTask_FullMethodName: {auth.Organization, auth.Admin},
	}
}
