package delegate

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// The direct conversion must give exactly the Struct the protojson round
// trip gives, for every shape a response takes.
func TestProtoStructMatchesProtojson(t *testing.T) {
	check := func(t *testing.T, resp *orchestratorv1.DelegateTaskResponse) {
		t.Helper()
		got, ok := protoStruct(resp.ProtoReflect())
		if !ok {
			t.Fatal("protoStruct refused a DelegateTaskResponse")
		}
		if want := protojsonStruct(resp); !proto.Equal(want, got) {
			t.Fatalf("protoStruct differs from protojson:\nprotojson: %s\ndirect:    %s", prototext.Format(want), prototext.Format(got))
		}
		if len(got.GetFields()) == 0 {
			return // an empty response is stored as no result, either way
		}
		back, err := structToResult(got)
		if err != nil {
			t.Fatalf("reading the stored result back: %v", err)
		}
		if !proto.Equal(resp, back) && !hasNaN(resp) {
			t.Fatalf("round trip changed the response:\n%v\n%v", resp, back)
		}
	}
	t.Run("empty", func(t *testing.T) { check(t, &orchestratorv1.DelegateTaskResponse{}) })
	t.Run("special values", func(t *testing.T) {
		for _, cost := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 1e-300, 123456789.123456789} {
			check(t, &orchestratorv1.DelegateTaskResponse{
				Status: orchestratorv1.TaskStatus(99), // a number no enum value has
				Output: "héllo \"quoted\" \n\t\u2028 <tag> & \x7f",
				Metadata: &orchestratorv1.TaskMetadata{CostUsd: cost, InputTokens: math.MaxInt64, OutputTokens: math.MinInt64,
					Attempts: math.MinInt32, RetryAfterMs: 1 << 53},
			})
		}
	})
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		b := make([]rune, rng.IntN(12))
		for i := range b {
			b[i] = rune(rng.IntN(0x2FFF))
		}
		return string(b)
	}
	for i := range 300 {
		md := &orchestratorv1.TaskMetadata{
			Model: str(), InputTokens: rng.Int64(), OutputTokens: rng.Int64N(5000), CacheReadTokens: rng.Int64N(3),
			CacheCreationTokens: int64(rng.IntN(2)), CostUsd: rng.Float64() * 10, DurationMs: rng.Int64N(1e6),
			AccountId: str(), AccountName: str(), ActivityId: str(), Attempts: int32(rng.IntN(4)), RequestId: str(),
			StopReason: str(), RetryAfterMs: rng.Int64N(1e5), LegacyMode: rng.IntN(2) == 0, Replayed: rng.IntN(2) == 0,
			OutputTruncated: rng.IntN(2) == 0, LegacyKey: str(),
		}
		for range rng.IntN(4) {
			md.AttemptDetails = append(md.AttemptDetails, &orchestratorv1.Attempt{
				Number: int32(rng.IntN(4)), AccountId: str(), AccountName: str(), Outcome: str(), HttpStatus: int32(rng.IntN(600)),
				Error: str(), DurationMs: rng.Int64N(1e6), Warnings: []string{str()}, MessageId: str(),
				OutcomeCode: orchestratorv1.AttemptOutcome(rng.IntN(10)), // 9: a number no value has
			})
		}
		for range rng.IntN(3) {
			md.BookkeepingErrors = append(md.BookkeepingErrors, str())
			md.BookkeepingPending = append(md.BookkeepingPending, str())
		}
		resp := &orchestratorv1.DelegateTaskResponse{Status: orchestratorv1.TaskStatus(rng.IntN(4)), Output: str(), Error: str()}
		if i%5 != 0 {
			resp.Metadata = md
		}
		check(t, resp)
	}
}

func hasNaN(resp *orchestratorv1.DelegateTaskResponse) bool {
	return math.IsNaN(resp.GetMetadata().GetCostUsd())
}

// go test -run '^$' -bench ResultToStruct ./services/orchestrator/internal/delegate/
func BenchmarkResultToStruct(b *testing.B) {
	resp := &orchestratorv1.DelegateTaskResponse{Status: orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, Output: "Hello! How can I help you today?",
		Metadata: &orchestratorv1.TaskMetadata{Model: "claude-haiku-4-5", InputTokens: 12, OutputTokens: 9, CostUsd: 0.000057, DurationMs: 1,
			AccountId: "0193f0d2-7c1e-7a55-9b7e-2f0c9e1d4a11", AccountName: "account-3", ActivityId: "0193f0d2-7c1e-7a55-9b7e-2f0c9e1d4a12", Attempts: 1,
			RequestId: "0193f0d2-7c1e-7a55-9b7e-2f0c9e1d4a13", StopReason: "end_turn",
			AttemptDetails: []*orchestratorv1.Attempt{{Number: 1, AccountId: "0193f0d2-7c1e-7a55-9b7e-2f0c9e1d4a11", AccountName: "account-3", Outcome: "success", HttpStatus: 200, DurationMs: 1, MessageId: "msg_01"}}}}
	b.Run("protojson", func(b *testing.B) {
		for b.Loop() {
			protojsonStruct(resp)
		}
	})
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			resultToStruct(resp)
		}
	})
}
