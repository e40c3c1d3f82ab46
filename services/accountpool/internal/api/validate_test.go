package api

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
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
	c := &store.UsageCursor{CreateTime: time.Date(2026, 5, 1, 12, 0, 0, 123456000, time.UTC), ID: uuid.NewString()}
	got, err := decodePageToken(encodePageToken(c))
	require.NoError(t, err)
	require.Equal(t, c, got)
	require.Empty(t, encodePageToken(nil))
	none, err := decodePageToken("")
	require.NoError(t, err)
	require.Nil(t, none)
	for _, bad := range []string{"!!!", "djF8eA", "djJ8MXx4", "djF8MTIzfG5vdC1hLXV1aWQ"} {
		_, err := decodePageToken(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "page_token")
	}
}

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
