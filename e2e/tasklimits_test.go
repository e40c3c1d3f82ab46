package e2e_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
)

// An organization's task_limits setting reaches the orchestrator (which
// reads it with its own token, as the organization): with
// max_concurrent_tasks 1, a second task while the first is on the model is
// RESOURCE_EXHAUSTED with a RetryInfo, unary and streamed, and selects no
// account; another organization is unaffected.
func TestOrganizationTaskLimitOverTheWire(t *testing.T) {
	const heldKey = "sk-ant-sim-tier4-held"
	sim := anthropicsim.New(anthropicsim.Config{})
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if carriesKey(r, heldKey) {
			arrived <- struct{}{}
			<-release
		}
		sim.ServeHTTP(w, r)
	})
	s := startStack(t, stackOptions{upstream: upstream})
	ctx := testContext(t)
	s.register(t, "capped", "held", heldKey, "tier4")
	s.register(t, "free", "steady", "sk-ant-sim-tier4-free", "tier4")
	_, err := s.pool.UpdateOrganizationSettings(ctx, &accountpoolv1.UpdateOrganizationSettingsRequest{
		OrganizationId: "capped", TaskLimits: &accountpoolv1.TaskLimits{MaxConcurrentTasks: 1},
	})
	require.NoError(t, err)

	first := make(chan error, 1)
	go func() {
		resp, err := s.orchestrator.DelegateTask(ctx, quickTask("capped"))
		if err == nil && resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			err = status.Error(codes.Unknown, resp.GetError())
		}
		first <- err
	}()
	select {
	case <-arrived: // the first task is on the model
	case err := <-first:
		t.Fatalf("the first task ended before it reached the model: %v", err)
	}

	_, err = s.orchestrator.DelegateTask(ctx, quickTask("capped"))
	st := status.Convert(err)
	require.Equal(t, codes.ResourceExhausted, st.Code(), st.Message())
	require.Contains(t, st.Message(), "max_concurrent_tasks 1")
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	require.NotNil(t, retry)
	require.Positive(t, retry.GetRetryDelay().AsDuration())

	stream, err := s.orchestrator.StreamDelegateTask(ctx, streamRequest(quickTask("capped")))
	require.NoError(t, err)
	_, err = stream.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "the stream is refused the same way")

	resp, err := s.orchestrator.DelegateTask(ctx, quickTask("free"))
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus(), "another organization runs")

	close(release)
	require.NoError(t, <-first)
	require.EqualValues(t, 1, sim.Stats(heldKey).Requests, "the refused tasks never reached the model")
	resp, err = s.orchestrator.DelegateTask(ctx, quickTask("capped"))
	require.NoError(t, err)
	require.Equal(t, orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, resp.GetStatus())
}

// carriesKey reports whether a request to the upstream carries key, in
// whichever header the SDK put it.
func carriesKey(r *http.Request, key string) bool {
	return r.Header.Get("x-api-key") == key || r.Header.Get("authorization") == "Bearer "+key
}
