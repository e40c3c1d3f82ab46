package api

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func TestCheckAPIKeyNeverEchoesTheKey(t *testing.T) {
	for _, key := range []string{
		"sk-ant-api03-with space",
		"sk-ant-api03-trailing-newline\n",
		"sk-ant-api03-" + strings.Repeat("x", 600),
		"sk-ant-\x00-control",
	} {
		err := checkAPIKey(key)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "sk-ant")
		require.True(t, strings.HasPrefix(err.Error(), "api_key: "))
	}
	require.NoError(t, checkAPIKey("sk-ant-api03-AbC_dEf-123"))
	require.Error(t, checkAPIKey(""))
}

func TestParseUUID(t *testing.T) {
	id := uuid.NewString()
	got, err := parseUUID("account_id", strings.ToUpper(id))
	require.NoError(t, err)
	require.Equal(t, id, got, "ids are canonicalised to lower case")
	for _, bad := range []string{"", "123", "{" + id + "}", "urn:uuid:" + id, id + "x"} {
		_, err := parseUUID("account_id", bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "account_id")
	}
}

func TestPageToken(t *testing.T) {
	f := store.UsageFilter{Start: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), AccountID: uuid.NewString()}
	fp := usageFingerprint("org-a", f)
	c := &store.UsageCursor{CreateTime: time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC), ID: uuid.NewString()}
	tok := encodePageToken(c, fp)
	got, err := decodePageToken(tok, fp)
	require.NoError(t, err)
	require.Equal(t, c, got)
	require.Empty(t, encodePageToken(nil, fp))
	none, err := decodePageToken("", fp)
	require.NoError(t, err)
	require.Nil(t, none)

	upper, err := decodePageToken(rawToken("v2|1|"+strings.ToUpper(c.ID)+"|"+fp), fp)
	require.NoError(t, err)
	require.Equal(t, c.ID, upper.ID, "the id reaches the store canonical")
	edge, err := decodePageToken(rawToken("v2|253402300799999999|"+c.ID+"|"+fp), fp)
	require.NoError(t, err)
	require.Equal(t, 9999, edge.CreateTime.Year())

	id := c.ID
	for _, tc := range []struct {
		name, tok, problem string
	}{
		{"not base64", "!!!", "not a token"},
		{"not a token", "garbage", "not a token"},
		{"truncated", tok[:len(tok)-6], ""},
		{"too long", strings.Repeat("A", maxPageTokenBytes+1), "not a token"},
		{"older format", rawToken("v1|123|" + id), "not a token"},
		{"unknown version", rawToken("v9|123|" + id + "|" + fp), "not a token"},
		{"extra part", rawToken("v2|123|" + id + "|" + fp + "|x"), "not a token"},
		{"time not a number", rawToken("v2|x|" + id + "|" + fp), "not a token"},
		{"time before year 1", rawToken("v2|-62135596800000001|" + id + "|" + fp), "not a token"},
		{"time after year 9999", rawToken("v2|253402300800000000|" + id + "|" + fp), "not a token"},
		{"time overflows", rawToken("v2|99999999999999999999|" + id + "|" + fp), "not a token"},
		{"id not a UUID", rawToken("v2|123|not-a-uuid|" + fp), "not a token"},
		{"id in braces", rawToken("v2|123|{" + id + "}|" + fp), "not a token"},
		{"id as URN", rawToken("v2|123|urn:uuid:" + id + "|" + fp), "not a token"},
		{"id without dashes", rawToken("v2|123|" + strings.ReplaceAll(id, "-", "") + "|" + fp), "not a token"},
		{"another organization", encodePageToken(c, usageFingerprint("org-b", f)), "different organization_id"},
		{"another account", encodePageToken(c, usageFingerprint("org-a", store.UsageFilter{Start: f.Start})), "different organization_id"},
		{"another window", encodePageToken(c, usageFingerprint("org-a", store.UsageFilter{AccountID: f.AccountID})), "different organization_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodePageToken(tc.tok, fp)
			require.Nil(t, got)
			var fe *validate.FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, "page_token", fe.Field)
			require.Contains(t, fe.Problem, tc.problem)
			require.Contains(t, fe.Problem, "omit", "says what to do")
		})
	}
}

func TestUsageFingerprintIgnoresSubMicroseconds(t *testing.T) {
	at := time.Date(2026, 5, 1, 0, 0, 0, 1000, time.UTC)
	require.Equal(t, usageFingerprint("o", store.UsageFilter{Start: at}), usageFingerprint("o", store.UsageFilter{Start: at.Add(999)}),
		"the stores compare microseconds")
	require.NotEqual(t, usageFingerprint("o", store.UsageFilter{Start: at}), usageFingerprint("o", store.UsageFilter{End: at}))
}

func rawToken(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Every strategy the store knows has a proto value and comes back as itself;
// UNSPECIFIED means "unchanged" / "the organization's".
func TestStrategyConversionRoundTrips(t *testing.T) {
	for _, s := range store.Strategies() {
		p := strategyToProto(s)
		require.NotEqual(t, accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_UNSPECIFIED, p, s)
		got, err := strategyFromProto("strategy", p)
		require.NoError(t, err)
		require.Equal(t, s, got)
	}
	got, err := strategyFromProto("strategy", accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_UNSPECIFIED)
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = strategyFromProto("strategy", 42)
	require.ErrorContains(t, err, "strategy: unknown strategy 42")
	require.Len(t, accountpoolv1.SelectionStrategy_name, len(store.Strategies())+1, "a new proto strategy needs a store one")
}

func TestSelectWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wait    *durationpb.Duration
		timeout time.Duration // 0: no deadline
		want    time.Duration
		problem string
	}{
		{name: "unset answers at once", want: 0},
		{name: "as asked without a deadline", wait: durationpb.New(3 * time.Second), want: 3 * time.Second},
		{name: "negative", wait: durationpb.New(-time.Second), problem: "between 0 and 10m0s"},
		{name: "too long", wait: durationpb.New(11 * time.Minute), problem: "between 0 and 10m0s"},
		{name: "invalid", wait: &durationpb.Duration{Seconds: 1, Nanos: -5}, problem: "not a valid duration"},
		{name: "never past the deadline", wait: durationpb.New(time.Minute), timeout: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			got, err := selectWait(ctx, tc.wait)
			if tc.problem != "" {
				require.ErrorContains(t, err, "max_wait")
				require.ErrorContains(t, err, tc.problem)
				return
			}
			require.NoError(t, err)
			if tc.timeout > 0 {
				require.Less(t, got, tc.timeout, "the answer has time to travel back")
				require.Greater(t, got, tc.timeout-time.Second)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestWatchInterval(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      *durationpb.Duration
		want    time.Duration
		problem string
	}{
		{name: "unset is the default", want: 500 * time.Millisecond},
		{name: "the least", in: durationpb.New(100 * time.Millisecond), want: 100 * time.Millisecond},
		{name: "the most", in: durationpb.New(time.Minute), want: time.Minute},
		{name: "too short", in: durationpb.New(99 * time.Millisecond), problem: "must be between 100ms and 1m0s"},
		{name: "zero", in: durationpb.New(0), problem: "must be between 100ms and 1m0s"},
		{name: "too long", in: durationpb.New(time.Minute + time.Millisecond), problem: "must be between 100ms and 1m0s"},
		{name: "negative", in: durationpb.New(-time.Second), problem: "must be between 100ms and 1m0s"},
		{name: "invalid", in: &durationpb.Duration{Seconds: 1, Nanos: -5}, problem: "not a valid duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := watchInterval(tc.in)
			if tc.problem != "" {
				require.ErrorContains(t, err, "min_interval: ")
				require.ErrorContains(t, err, tc.problem)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
