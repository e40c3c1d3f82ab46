package delegate_test

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

type fakeAccount struct{ id, name, key string }

// fakePool selects the first account not excluded, in order.
type fakePool struct {
	accountpoolv1.AccountPoolServiceClient
	mu        sync.Mutex
	accounts  []fakeAccount
	selectErr error // returned by every SelectAccount when set
	// selectDelay makes SelectAccount wait that long (or until its ctx ends).
	selectDelay time.Duration
	// busyCalls SelectAccount calls answer ResourceExhausted with RetryInfo
	// busyDelay before the pool selects normally.
	busyCalls int
	busyDelay time.Duration
	recordErr error
	// defaultKey, when set, is the organization's default key: with no
	// accounts, a request that accepts it gets it (and no lease).
	defaultKey string
	// notFoundReason, when set, is the ErrorInfo reason (in the
	// AccountPool's domain) of the NotFound answered with no accounts.
	notFoundReason string
	// onSelect, when set, runs at the start of every SelectAccount.
	onSelect func()
	selects  []*accountpoolv1.SelectAccountRequest
	records  []*accountpoolv1.RecordRequestRequest
}

func (p *fakePool) SelectAccount(ctx context.Context, req *accountpoolv1.SelectAccountRequest, _ ...grpc.CallOption) (*accountpoolv1.SelectAccountResponse, error) {
	if p.onSelect != nil {
		p.onSelect()
	}
	if p.selectDelay > 0 {
		select {
		case <-time.After(p.selectDelay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.selects = append(p.selects, proto.Clone(req).(*accountpoolv1.SelectAccountRequest))
	if p.selectErr != nil {
		return nil, p.selectErr
	}
	if p.busyCalls > 0 {
		p.busyCalls--
		st, _ := status.New(codes.ResourceExhausted, "every account is busy").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(p.busyDelay)})
		return nil, st.Err()
	}
	if len(p.accounts) == 0 {
		if p.defaultKey != "" && req.GetAcceptDefaultKey() {
			return &accountpoolv1.SelectAccountResponse{DefaultKey: &accountpoolv1.DefaultKey{ApiKey: p.defaultKey, KeyVersion: 3, Generation: fakeGeneration}}, nil
		}
		st := status.New(codes.NotFound, "organization has no accounts in service")
		if p.notFoundReason != "" {
			st, _ = st.WithDetails(&errdetails.ErrorInfo{Reason: p.notFoundReason, Domain: "switchyard.accountpool"})
		}
		return nil, st.Err()
	}
	excluded := map[string]bool{}
	for _, id := range req.GetExcludedAccountIds() {
		excluded[id] = true
	}
	for _, a := range p.accounts {
		if !excluded[a.id] {
			resp := &accountpoolv1.SelectAccountResponse{
				Lease:    &accountpoolv1.Lease{LeaseId: uuid.NewString(), AccountId: a.id, AccountName: a.name, ApiKey: a.key},
				Strategy: accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED,
			}
			for _, other := range p.accounts {
				c := &accountpoolv1.Candidate{AccountId: other.id, AccountName: other.name, Chosen: other.id == a.id, Headroom: 0.5}
				if excluded[other.id] {
					c.SkipReason, c.Headroom = "excluded", 0
				}
				resp.Candidates = append(resp.Candidates, c)
			}
			return resp, nil
		}
	}
	st, _ := status.New(codes.ResourceExhausted, "every account is excluded").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(7_000_000_000)})
	return nil, st.Err()
}

func (p *fakePool) RecordRequest(_ context.Context, req *accountpoolv1.RecordRequestRequest, _ ...grpc.CallOption) (*accountpoolv1.RecordRequestResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recordErr != nil {
		return nil, p.recordErr
	}
	p.records = append(p.records, proto.Clone(req).(*accountpoolv1.RecordRequestRequest))
	cost := 0.0
	if req.GetOutcome() == accountpoolv1.Outcome_OUTCOME_SUCCESS {
		cost = 0.25
	}
	return &accountpoolv1.RecordRequestResponse{CostUsd: cost}, nil
}

// fakeActivity keeps activities in memory with the real service's
// idempotency and lifecycle rules.
type fakeActivity struct {
	activityv1.ActivityServiceClient
	mu          sync.Mutex
	startErr    error
	progressErr error // returned by TrackProgress and TrackComplete when set
	starts      int
	// loseStartAnswers TrackStarts commit, lose their answer and are
	// retried with the same request, as gRPC's retry policy does.
	loseStartAnswers int
	// failCommittedStarts TrackStarts commit and then fail with
	// Unavailable, as when Activity dies before it answers.
	failCommittedStarts int
	// onStart, when set, runs at the start of every TrackStart.
	onStart    func()
	activities map[string]*activityv1.Activity
	progress   map[string][]string
	completes  int
}

func newFakeActivity() *fakeActivity {
	return &fakeActivity{activities: map[string]*activityv1.Activity{}, progress: map[string][]string{}}
}

func (a *fakeActivity) TrackStart(_ context.Context, req *activityv1.TrackStartRequest, _ ...grpc.CallOption) (*activityv1.TrackStartResponse, error) {
	if a.onStart != nil {
		a.onStart()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starts++
	if a.startErr != nil {
		return nil, a.startErr
	}
	if a.failCommittedStarts > 0 {
		a.failCommittedStarts--
		a.activities[req.GetActivityId()] = &activityv1.Activity{
			Id: req.GetActivityId(), OrganizationId: req.GetOrganizationId(), Status: activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING,
			InputData: req.GetInputData(), Metadata: req.GetMetadata(), Category: req.GetCategory(), Deadline: req.GetDeadline(),
		}
		return nil, status.Error(codes.Unavailable, "connection reset")
	}
	if a.loseStartAnswers > 0 {
		// The start commits but its answer is lost; gRPC's retry policy
		// resends the same request, which finds the activity (below).
		a.loseStartAnswers--
		a.activities[req.GetActivityId()] = &activityv1.Activity{
			Id: req.GetActivityId(), OrganizationId: req.GetOrganizationId(), Status: activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING,
			InputData: req.GetInputData(), Metadata: req.GetMetadata(), Category: req.GetCategory(), Deadline: req.GetDeadline(),
		}
	}
	if existing, ok := a.activities[req.GetActivityId()]; ok {
		return &activityv1.TrackStartResponse{Activity: proto.Clone(existing).(*activityv1.Activity)}, nil
	}
	act := &activityv1.Activity{
		Id: req.GetActivityId(), OrganizationId: req.GetOrganizationId(), Status: activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING,
		InputData: req.GetInputData(), Metadata: req.GetMetadata(), Category: req.GetCategory(), Deadline: req.GetDeadline(),
	}
	a.activities[act.Id] = act
	answer := proto.Clone(act).(*activityv1.Activity)
	if req.GetResponseView() == activityv1.ActivityView_ACTIVITY_VIEW_BASIC {
		// As the service answers: a created activity without what the
		// caller sent, so the orchestrator must not need it back.
		answer.InputData, answer.Metadata = nil, nil
	}
	return &activityv1.TrackStartResponse{Activity: answer, Created: true}, nil
}

func (a *fakeActivity) TrackProgress(_ context.Context, req *activityv1.TrackProgressRequest, _ ...grpc.CallOption) (*activityv1.TrackProgressResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.progressErr != nil {
		return nil, a.progressErr
	}
	a.progress[req.GetActivityId()] = append(a.progress[req.GetActivityId()], req.GetMessage())
	return &activityv1.TrackProgressResponse{}, nil
}

func (a *fakeActivity) TrackComplete(_ context.Context, req *activityv1.TrackCompleteRequest, _ ...grpc.CallOption) (*activityv1.TrackCompleteResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.progressErr != nil {
		return nil, a.progressErr
	}
	act, ok := a.activities[req.GetActivityId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such activity")
	}
	if act.Status != activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING && act.Status != activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED {
		return nil, status.Error(codes.FailedPrecondition, "already ended")
	}
	a.completes++
	act.Status, act.OutputData, act.ErrorMessage = req.GetStatus(), req.GetOutputData(), req.GetErrorMessage()
	if act.Metadata == nil {
		act.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	for k, v := range req.GetMetadata().GetFields() {
		act.Metadata.Fields[k] = v
	}
	return &activityv1.TrackCompleteResponse{Activity: proto.Clone(act).(*activityv1.Activity)}, nil
}

// reopen makes an ended activity RUNNING again, as if its completion had
// never arrived.
func (a *fakeActivity) reopen(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.activities[id].Status = activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING
	a.activities[id].OutputData = nil
}

// abandon does what Activity's reaper does to a RUNNING activity.
func (a *fakeActivity) abandon(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.activities[id].Status = activityv1.ActivityStatus_ACTIVITY_STATUS_ABANDONED
}

func (a *fakeActivity) get(id string) *activityv1.Activity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return proto.Clone(a.activities[id]).(*activityv1.Activity)
}

// fakeExecutor answers by API key: each key has a script of results, the
// last of which repeats.
type fakeExecutor struct {
	mu      sync.Mutex
	scripts map[string][]executor.Result
	calls   []executor.Request
	block   chan struct{} // when set, Call waits for it or for ctx
}

func (e *fakeExecutor) Call(ctx context.Context, req executor.Request) executor.Result {
	e.mu.Lock()
	e.calls = append(e.calls, req)
	block := e.block
	script := e.scripts[req.APIKey.Reveal()]
	var res executor.Result
	switch {
	case len(script) == 0:
		res = ok("default answer")
	case len(script) == 1:
		res = script[0]
	default:
		res, e.scripts[req.APIKey.Reveal()] = script[0], script[1:]
	}
	e.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return executor.Result{Outcome: executor.Cancelled, ErrorMessage: ctx.Err().Error()}
		}
	}
	// The text (a success's answer, or what a failed stream sent before it
	// broke) arrives in deltas of at most deltaRunes.
	if req.OnText != nil {
		for rest := []rune(res.Text); len(rest) > 0; {
			n := min(len(rest), deltaRunes)
			req.OnText(string(rest[:n]))
			rest = rest[n:]
		}
	}
	return res
}

const deltaRunes = 4

func (e *fakeExecutor) keysCalled() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var keys []string
	for _, c := range e.calls {
		keys = append(keys, c.APIKey.Reveal())
	}
	return keys
}

func ok(text string) executor.Result {
	return executor.Result{Outcome: executor.Success, HTTPStatus: 200, Text: text, Model: "claude-haiku-4-5", StopReason: "end_turn",
		Usage: executor.Usage{InputTokens: 10, OutputTokens: 5, CacheReadTokens: 3, CacheCreationTokens: 2}}
}

func failed(outcome executor.Outcome, httpStatus int, errType string) executor.Result {
	return executor.Result{Outcome: outcome, HTTPStatus: httpStatus, ErrorType: errType, ErrorMessage: errType + " happened"}
}

// sleeper records the waits of a Runner instead of waiting.
type sleeper struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeper) total() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t time.Duration
	for _, w := range s.waits {
		t += w
	}
	return t
}

// fakeGeneration is the generation the fake pool gives its default key.
const fakeGeneration = "gen-1"
