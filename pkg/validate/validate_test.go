package validate_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/switchyard-dev/switchyard/pkg/validate"
)

func TestRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name    string
		check   func() error
		problem string // "" means valid
	}{
		{"org ok", func() error { return validate.OrganizationID("organization_id", "org-456_A.b:c") }, ""},
		{"org empty", func() error { return validate.OrganizationID("organization_id", "") }, "is required"},
		{"org max", func() error { return validate.OrganizationID("organization_id", long(128)) }, ""},
		{"org too long", func() error { return validate.OrganizationID("organization_id", long(129)) }, "printable ASCII"},
		{"org space", func() error { return validate.OrganizationID("organization_id", "org 1") }, "printable ASCII"},
		{"org control", func() error { return validate.OrganizationID("organization_id", "org\x01") }, "printable ASCII"},
		{"org non-ASCII", func() error { return validate.OrganizationID("organization_id", "orgé") }, "printable ASCII"},
		{"org DEL", func() error { return validate.OrganizationID("organization_id", "org\x7f") }, "printable ASCII"},

		{"request id empty", func() error { return validate.RequestID("request_id", "") }, ""},
		{"request id spaces", func() error { return validate.RequestID("request_id", "job 1") }, ""},
		{"request id tab", func() error { return validate.RequestID("request_id", "job\t1") }, "printable ASCII"},
		{"request id long", func() error { return validate.RequestID("request_id", long(129)) }, "printable ASCII"},

		{"identifier ok", func() error { return validate.Identifier("session_id", "séssion-123", 256) }, ""},
		{"identifier empty", func() error { return validate.Identifier("session_id", "", 256) }, ""},
		{"identifier long", func() error { return validate.Identifier("session_id", long(257), 256) }, "257 bytes long"},
		{"identifier newline", func() error { return validate.Identifier("session_id", "a\nb", 256) }, "control character"},
		{"identifier NUL", func() error { return validate.Identifier("user_id", "a\x00b", 256) }, "control character"},
		{"identifier C1", func() error { return validate.Identifier("user_id", "a\u0085b", 256) }, "control character"},
		{"identifier bad UTF-8", func() error { return validate.Identifier("user_id", "a\xffb", 256) }, "UTF-8"},

		{"text newline ok", func() error { return validate.Text("prompt", "line 1\nline 2\t", 100) }, ""},
		{"text NUL", func() error { return validate.Text("prompt", "a\x00", 100) }, "NUL"},
		{"text long", func() error { return validate.Text("prompt", long(101), 100) }, "limit is 100"},

		{"object ok", func() error { return validate.JSONObject("input_data", map[string]any{"a": []any{"b", 1.0}}, 100) }, ""},
		{"object NUL key", func() error { return validate.JSONObject("input_data", map[string]any{"a\x00": 1.0}, 100) }, "NUL"},
		{"object nested NUL", func() error {
			return validate.JSONObject("input_data", map[string]any{"a": []any{map[string]any{"b": "\x00"}}}, 100)
		}, "NUL"},
		// Over the worst-case bound but not over the limit once encoded.
		{"object measured when the bound is exceeded", func() error {
			return validate.JSONObject("input_data", map[string]any{"p": strings.Repeat("a", 60)}, 100)
		}, ""},
		{"object NaN", func() error { return validate.JSONObject("input_data", map[string]any{"n": math.NaN()}, 1<<20) }, "not representable"},
		{"object unknown type", func() error {
			return validate.JSONObject("input_data", map[string]any{"c": make(chan int)}, 1<<20)
		}, "not representable"},
		// 20 bytes of '<' are 120 bytes of JSON.
		{"object escaping counts", func() error {
			return validate.JSONObject("input_data", map[string]any{"p": strings.Repeat("<", 20)}, 100)
		}, "as JSON; the limit is 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if tc.problem == "" {
				require.NoError(t, err)
				return
			}
			var fe *validate.FieldError
			require.True(t, errors.As(err, &fe), "%v", err)
			require.NotEmpty(t, fe.Field)
			require.Contains(t, fe.Problem, tc.problem)
		})
	}
}

func TestQuoteIsBounded(t *testing.T) {
	require.Equal(t, `"short"`, validate.Quote("short"))
	q := validate.Quote(strings.Repeat("é", 2<<20))
	require.Less(t, len(q), 100)
	require.Contains(t, q, "(4194304 bytes)")
	require.NotContains(t, q, "\uFFFD", "cut on a rune boundary")
}

func TestTruncate(t *testing.T) {
	require.Equal(t, "short", validate.Truncate("short", 5))
	require.Equal(t, "ab…", validate.Truncate("abcdef", 5))
	require.Equal(t, "é…", validate.Truncate("éééé", 6), "cut on a rune boundary")
	require.LessOrEqual(t, len(validate.Truncate(strings.Repeat("x", 1<<20), 100)), 100)
}

// nestedStruct is depth levels of objects, {"a": {"a": ... {"leaf": 1}}},
// built without recursion.
func nestedStruct(depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{"leaf": structpb.NewNumberValue(1)}}
	for i := 1; i < depth; i++ {
		s = &structpb.Struct{Fields: map[string]*structpb.Value{"a": structpb.NewStructValue(s)}}
	}
	return s
}

// nestedList is an object holding depth-1 levels of lists, {"l": [[...[1]...]]}.
func nestedList(depth int) *structpb.Struct {
	v := structpb.NewNumberValue(1)
	for i := 1; i < depth; i++ {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{"l": v}}
}

// nestedMap is nestedStruct as the map the domain receives.
func nestedMap(depth int) map[string]any {
	m := map[string]any{"leaf": 1.0}
	for i := 1; i < depth; i++ {
		m = map[string]any{"a": m}
	}
	return m
}

func TestStruct(t *testing.T) {
	num := func(f float64) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"ok": structpb.NewStringValue("x"),
			"list": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{
				structpb.NewNumberValue(0), structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(f)}}),
			}})}}
	}
	for _, tc := range []struct {
		name    string
		s       *structpb.Struct
		field   string // "" means valid
		problem string
	}{
		{"nil", nil, "", ""},
		{"empty", &structpb.Struct{}, "", ""},
		{"finite numbers", num(math.MaxFloat64), "", ""},
		{"NaN", num(math.NaN()), "input_data.list[1].n", "NaN"},
		{"+Inf", num(math.Inf(1)), "input_data.list[1].n", "+Inf"},
		{"-Inf", num(math.Inf(-1)), "input_data.list[1].n", "-Inf"},
		{"objects at the limit", nestedStruct(validate.MaxStructDepth), "", ""},
		{"objects over the limit", nestedStruct(validate.MaxStructDepth + 1), "input_data" + strings.Repeat(".a", validate.MaxStructDepth), "more than 64 levels"},
		{"lists at the limit", nestedList(validate.MaxStructDepth), "", ""},
		{"lists over the limit", nestedList(validate.MaxStructDepth + 1), "input_data.l" + strings.Repeat("[0]", validate.MaxStructDepth-2), "more than 64 levels"},
		// Deeper than the protobuf decoder's own limit (about 3,333
		// levels of objects): built in memory, as an in-process caller can.
		{"objects 5,000 deep", nestedStruct(5000), "input_data.a", "more than 64 levels"},
		{"lists 100,000 deep", nestedList(100_000), "input_data.l", "more than 64 levels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate.Struct("input_data", tc.s)
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			var fe *validate.FieldError
			require.True(t, errors.As(err, &fe), "%v", err)
			require.True(t, strings.HasPrefix(fe.Field, tc.field) || fe.Field == tc.field, "field %q, want %q", fe.Field, tc.field)
			require.LessOrEqual(t, len(fe.Field), 4*validate.MaxEcho)
			require.Contains(t, fe.Problem, tc.problem)
		})
	}
}

func TestJSONObjectDepth(t *testing.T) {
	require.NoError(t, validate.JSONObject("metadata", nestedMap(validate.MaxStructDepth), 1<<20))
	for _, depth := range []int{validate.MaxStructDepth + 1, 5000} {
		err := validate.JSONObject("metadata", nestedMap(depth), 1<<20)
		var fe *validate.FieldError
		require.True(t, errors.As(err, &fe), "%v", err)
		require.Equal(t, "metadata", fe.Field)
		require.Contains(t, fe.Problem, "more than 64 levels")
	}
	list := []any{1.0}
	for range validate.MaxStructDepth - 1 {
		list = []any{list}
	}
	require.Error(t, validate.JSONObject("metadata", map[string]any{"l": list}, 1<<20), "the object and 64 lists are 65 levels")
}
