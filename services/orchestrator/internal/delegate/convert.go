package delegate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	activityv1 "github.com/switchyard-dev/switchyard/gen/switchyard/activity/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// exhaustedDetails returns the pool's explanation and the RetryInfo delay
// of a ResourceExhausted error.
func exhaustedDetails(err error) (string, time.Duration) {
	st := status.Convert(err)
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	return st.Message(), delay
}

// AttemptOutcomeCode is the enum of an attempt outcome's name (Attempt's
// and AttemptFailed's outcome): ATTEMPT_OUTCOME_ and the name in capitals,
// UNSPECIFIED for a name the contract does not know.
func AttemptOutcomeCode(outcome string) orchestratorv1.AttemptOutcome {
	if v, ok := orchestratorv1.AttemptOutcome_value["ATTEMPT_OUTCOME_"+strings.ToUpper(outcome)]; ok {
		return orchestratorv1.AttemptOutcome(v)
	}
	return orchestratorv1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED
}

func outcomeToProto(o executor.Outcome) accountpoolv1.Outcome {
	switch o {
	case executor.Success:
		return accountpoolv1.Outcome_OUTCOME_SUCCESS
	case executor.RateLimited:
		return accountpoolv1.Outcome_OUTCOME_RATE_LIMITED
	case executor.SpendLimited:
		return accountpoolv1.Outcome_OUTCOME_SPEND_LIMITED
	case executor.AuthFailed:
		return accountpoolv1.Outcome_OUTCOME_AUTH_FAILED
	case executor.UpstreamError:
		return accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR
	case executor.ClientError, executor.NotSent:
		// A request that never left is the task's fault like a 400: the
		// pool releases the lease and counts nothing against the account.
		return accountpoolv1.Outcome_OUTCOME_CLIENT_ERROR
	case executor.Cancelled:
		return accountpoolv1.Outcome_OUTCOME_CANCELLED
	}
	return accountpoolv1.Outcome_OUTCOME_UNSPECIFIED
}

func rateLimitToProto(rl executor.RateLimit) *accountpoolv1.RateLimitHeaders {
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	return &accountpoolv1.RateLimitHeaders{
		RequestsLimit:         rl.RequestsLimit,
		RequestsRemaining:     rl.RequestsRemaining,
		RequestsReset:         ts(rl.RequestsReset),
		InputTokensLimit:      rl.InputTokensLimit,
		InputTokensRemaining:  rl.InputTokensRemaining,
		InputTokensReset:      ts(rl.InputTokensReset),
		OutputTokensLimit:     rl.OutputTokensLimit,
		OutputTokensRemaining: rl.OutputTokensRemaining,
		OutputTokensReset:     ts(rl.OutputTokensReset),
		RetryAfterSeconds:     int64(rl.RetryAfter / time.Second),
	}
}

// mustStruct converts a map of JSON-compatible values; the maps built in
// this package only hold strings, numbers, bools and string lists, so a
// failure is a programming error.
func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(fmt.Sprintf("delegate: building a struct: %v", err))
	}
	return s
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// storedResult is the task's response as the activity's output data, in
// the response's canonical JSON form, so a retried request can be answered
// from the activity alone. An answer too large for the activity (its JSON
// over validate.MaxObjectJSON) is stored with its output cut to fit and
// metadata.output_truncated set, rather than not at all.
func storedResult(resp *orchestratorv1.DelegateTaskResponse) *structpb.Struct {
	s := resultToStruct(resp)
	if 6*len(resp.GetOutput())+storedResultSlack <= validate.MaxObjectJSON-1024 {
		return s // fits however it is escaped: no need to measure
	}
	over := protoJSONSize(s) - (validate.MaxObjectJSON - 1024)
	if over <= 0 {
		return s
	}
	cut := proto.Clone(resp).(*orchestratorv1.DelegateTaskResponse)
	if cut.Metadata == nil {
		cut.Metadata = &orchestratorv1.TaskMetadata{}
	}
	cut.Metadata.OutputTruncated = true
	// Escaping can make one byte of output six bytes of JSON, so cutting
	// the excess may not be enough: halve until it fits.
	for keep := max(0, len(resp.Output)-over); ; keep /= 2 {
		cut.Output = validate.Truncate(resp.Output, keep)
		if s = resultToStruct(cut); keep == 0 || protoJSONSize(s) <= validate.MaxObjectJSON-1024 {
			return s
		}
	}
}

// storedResultSlack bounds the encoded size of a response apart from its
// output: metadata, at most three attempt details and an error text whose
// upstream parts are cut to 1 KiB each.
const storedResultSlack = 64 << 10

func protoJSONSize(s *structpb.Struct) int {
	raw, err := json.Marshal(s.AsMap())
	if err != nil {
		return 0
	}
	return len(raw)
}

// resultToStruct converts the task's response to a Struct in its canonical
// JSON form (protojson's), which structToResult reads back.
func resultToStruct(resp *orchestratorv1.DelegateTaskResponse) *structpb.Struct {
	if s, ok := protoStruct(resp.ProtoReflect()); ok {
		return s
	}
	return protojsonStruct(resp)
}

// protojsonStruct is resultToStruct through protojson's text: the general
// path, for what protoStruct does not cover.
func protojsonStruct(resp *orchestratorv1.DelegateTaskResponse) *structpb.Struct {
	raw, err := protojson.Marshal(resp)
	if err != nil {
		panic(fmt.Sprintf("delegate: encoding the response: %v", err))
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		panic(fmt.Sprintf("delegate: re-reading the response: %v", err))
	}
	return s
}

func structToResult(s *structpb.Struct) (*orchestratorv1.DelegateTaskResponse, error) {
	if len(s.GetFields()) == 0 {
		return nil, errors.New("no stored result")
	}
	raw, err := protojson.Marshal(s)
	if err != nil {
		return nil, err
	}
	resp := &orchestratorv1.DelegateTaskResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// sameTask rejects a request_id reused for a different task.
func sameTask(act *activityv1.Activity, p *prepared) error {
	if fp := act.GetMetadata().GetFields()["request_fingerprint"].GetStringValue(); fp != "" && fp != p.fingerprint {
		return fmt.Errorf("%w (activity %s); use a new request_id for a new task", ErrRequestIDReused, act.GetId())
	}
	return nil
}

// replay answers a request whose request_id already has an activity.
func replay(act *activityv1.Activity, p *prepared) (*orchestratorv1.DelegateTaskResponse, error) {
	if err := sameTask(act, p); err != nil {
		return nil, err
	}
	if act.GetStatus() == activityv1.ActivityStatus_ACTIVITY_STATUS_RUNNING {
		return nil, fmt.Errorf("%w (activity %s); retry later to get its result", ErrInProgress, act.GetId())
	}
	resp, err := structToResult(act.GetOutputData())
	if err != nil {
		resp = &orchestratorv1.DelegateTaskResponse{
			Status: orchestratorv1.TaskStatus_TASK_STATUS_FAILED,
			Error:  fmt.Sprintf("an earlier run of this request_id ended as %s but its result was not recorded: %s", act.GetStatus(), act.GetErrorMessage()),
		}
	}
	if resp.Metadata == nil {
		resp.Metadata = &orchestratorv1.TaskMetadata{}
	}
	if resp.Error == "" && resp.Status != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
		resp.Error = act.GetErrorMessage()
	}
	resp.Metadata.ActivityId = act.GetId()
	resp.Metadata.RequestId = p.clientRequestID
	resp.Metadata.Replayed = true
	return resp, nil
}
