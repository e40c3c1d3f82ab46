package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Input limits. They bound what one organization can make the service
// store and keep every field printable in logs and explanations.
const (
	maxIDLen         = 128
	maxNameLen       = 128
	maxAPIKeyLen     = 512
	maxRequestIDLen  = 256
	maxModelLen      = 256
	maxTextLen       = 256 // category, session, user, error type, upstream request id
	maxLabels        = 64
	maxLabelKeyLen   = 63
	maxLabelValueLen = 256
	maxIDList        = 1000
	defaultPageSize  = 100
	maxPageSize      = 1000
)

func invalid(field, format string, args ...any) *pool.FieldError {
	return &pool.FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func checkOrg(org string) error {
	return validate.OrganizationID("organization_id", org)
}

// printable reports whether s is valid UTF-8 with no whitespace or control
// characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func checkName(field, name string) error {
	if strings.TrimSpace(name) == "" {
		return invalid(field, "required; give the account a name unique in the organization, such as \"prod-primary\"")
	}
	if len(name) > maxNameLen {
		return invalid(field, "%d bytes is too long; use at most %d", len(name), maxNameLen)
	}
	if !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) || strings.TrimSpace(name) != name {
		return invalid(field, "must be valid UTF-8 without control characters or leading/trailing whitespace")
	}
	return nil
}

// checkAPIKey never echoes the key: not in the message, not its length
// beyond the limit.
func checkAPIKey(key string) error {
	switch {
	case key == "":
		return invalid("api_key", "required; pass the account's Anthropic API key")
	case len(key) > maxAPIKeyLen:
		return invalid("api_key", "longer than %d bytes, which no Anthropic API key is; check what was pasted", maxAPIKeyLen)
	case !printable(key):
		return invalid("api_key", "contains whitespace or control characters; check for a trailing newline or a pasted header")
	}
	return nil
}

// parseUUID returns the canonical form of a UUID field. The bad value is
// not echoed: callers sometimes paste the wrong secret into the wrong field.
func parseUUID(field, s string) (string, error) {
	if s == "" {
		return "", invalid(field, "required; use the id the service returned")
	}
	u, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", invalid(field, "not a UUID such as 0b6f3f0e-8f6b-4c1a-9d2e-3c5a7f1e2d4b; use the id the service returned")
	}
	return u.String(), nil
}

func parseUUIDs(field string, ids []string) ([]string, error) {
	if len(ids) > maxIDList {
		return nil, invalid(field, "at most %d ids", maxIDList)
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		c, err := parseUUID(fmt.Sprintf("%s[%d]", field, i), id)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

func checkText(field, s string, maxLen int) error {
	return validate.Identifier(field, s, maxLen)
}

func checkNonNegative(field string, n int64) error {
	if n < 0 {
		return invalid(field, "must not be negative, got %d", n)
	}
	return nil
}

// maxSelectWait bounds SelectAccountRequest.max_wait.
const maxSelectWait = 10 * time.Minute

// selectWait checks max_wait and returns how long the pool may wait: never
// so long that the answer misses the call's deadline.
func selectWait(ctx context.Context, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("max_wait", "is not a valid duration: %v", err)
	}
	w := d.AsDuration()
	if w < 0 || w > maxSelectWait {
		return 0, invalid("max_wait", "must be between 0 and %s, got %s", maxSelectWait, w)
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave the answer time to travel back.
		left := time.Until(dl)
		w = min(w, left-min(left/10, 100*time.Millisecond))
	}
	return max(w, 0), nil
}

// WatchAccountsRequest.min_interval: its default and its bounds. The lower
// bound keeps one watcher from costing a state read every few
// milliseconds; the upper one keeps a watch live.
const (
	defaultWatchInterval = 500 * time.Millisecond
	minWatchInterval     = 100 * time.Millisecond
	maxWatchInterval     = time.Minute
)

// watchInterval checks min_interval and returns the least time between two
// WatchAccounts messages.
func watchInterval(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return defaultWatchInterval, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("min_interval", "is not a valid duration: %v", err)
	}
	w := d.AsDuration()
	if w < minWatchInterval || w > maxWatchInterval {
		return 0, invalid("min_interval", "must be between %s and %s (omit it for %s), got %s", minWatchInterval, maxWatchInterval, defaultWatchInterval, w)
	}
	return w, nil
}

func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return invalid("labels", "at most %d labels, got %d", maxLabels, len(labels))
	}
	for k, v := range labels {
		if k == "" || len(k) > maxLabelKeyLen || !printable(k) {
			return invalid("labels", "keys must be 1 to %d printable bytes without whitespace", maxLabelKeyLen)
		}
		if err := checkText("labels["+k+"]", v, maxLabelValueLen); err != nil {
			return err
		}
	}
	return nil
}

func strategyFromProto(field string, s accountpoolv1.SelectionStrategy) (store.Strategy, error) {
	switch s {
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_UNSPECIFIED:
		return "", nil
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED:
		return store.StrategyLeastLoaded, nil
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN:
		return store.StrategyRoundRobin, nil
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_WEIGHTED:
		return store.StrategyWeighted, nil
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY:
		return store.StrategyPriority, nil
	case accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY:
		return store.StrategySessionAffinity, nil
	}
	return "", invalid(field, "unknown strategy %d; use SELECTION_STRATEGY_LEAST_LOADED, _ROUND_ROBIN, _WEIGHTED, _PRIORITY or _SESSION_AFFINITY", s)
}

func outcomeFromProto(o accountpoolv1.Outcome) (store.Outcome, error) {
	switch o {
	case accountpoolv1.Outcome_OUTCOME_SUCCESS:
		return store.OutcomeSuccess, nil
	case accountpoolv1.Outcome_OUTCOME_RATE_LIMITED:
		return store.OutcomeRateLimited, nil
	case accountpoolv1.Outcome_OUTCOME_SPEND_LIMITED:
		return store.OutcomeSpendLimited, nil
	case accountpoolv1.Outcome_OUTCOME_AUTH_FAILED:
		return store.OutcomeAuthFailed, nil
	case accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR:
		return store.OutcomeUpstreamError, nil
	case accountpoolv1.Outcome_OUTCOME_CLIENT_ERROR:
		return store.OutcomeClientError, nil
	case accountpoolv1.Outcome_OUTCOME_CANCELLED:
		return store.OutcomeCancelled, nil
	case accountpoolv1.Outcome_OUTCOME_UNSPECIFIED:
		return "", invalid("outcome", "required; classify the upstream's answer (OUTCOME_SUCCESS, OUTCOME_RATE_LIMITED, ...)")
	}
	return "", invalid("outcome", "unknown outcome %d; use one of the Outcome values", o)
}

func statusFromProto(s accountpoolv1.AccountStatus) (*store.Status, error) {
	var st store.Status
	switch s {
	case accountpoolv1.AccountStatus_ACCOUNT_STATUS_UNSPECIFIED:
		return nil, nil
	case accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE:
		st = store.StatusActive
	case accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED:
		st = store.StatusDisabled
	case accountpoolv1.AccountStatus_ACCOUNT_STATUS_INVALID:
		st = store.StatusInvalid
	default:
		return nil, invalid("status", "unknown status %d; use ACCOUNT_STATUS_ACTIVE, _DISABLED or _INVALID, or leave it unset", s)
	}
	return &st, nil
}

// timeFromProto converts an optional timestamp; nil is the zero time.
func timeFromProto(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalid(field, "not a valid timestamp")
	}
	return ts.AsTime(), nil
}

// Page tokens are opaque to callers: base64url of
// "v2|<unix micros>|<row id>|<fingerprint>", where the fingerprint ties the
// token to the organization and filter it was issued for. Tokens are not
// signed (a forged one can only move a caller within its own
// organization's ledger), so decodePageToken checks every part and no
// store ever sees a cursor it cannot use.
const (
	pageTokenVersion = "v2"
	// maxPageTokenBytes rejects garbage before decoding it; a real token
	// is about 120 bytes.
	maxPageTokenBytes = 256
	// minCursorMicros and maxCursorMicros bound a cursor's time to years
	// 1 to 9999 (what a google.protobuf.Timestamp can hold): every ledger
	// row is in that range and every store can compare against it.
	minCursorMicros = -62135596800000000 // 0001-01-01T00:00:00Z
	maxCursorMicros = 253402300799999999 // 9999-12-31T23:59:59.999999Z
)

// usageFingerprint identifies an organization and a usage filter, so that
// a page token is honoured only for the query it was issued for.
func usageFingerprint(org string, f store.UsageFilter) string {
	micros := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return store.Normalize(t).UnixMicro()
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%q|%q|%d|%d", org, f.AccountID, micros(f.Start), micros(f.End)))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// encodePageToken is the token for cursor c of the query fingerprinted fp;
// "" for no cursor (the last page).
func encodePageToken(c *store.UsageCursor, fp string) string {
	if c == nil {
		return ""
	}
	raw := pageTokenVersion + "|" + strconv.FormatInt(c.CreateTime.UnixMicro(), 10) + "|" + c.ID + "|" + fp
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodePageToken returns the cursor of tok, nil for "", or an
// InvalidArgument error for page_token: a token this service did not
// issue (garbage, truncated, an older format, a time out of range, a row
// id that is not a UUID in 8-4-4-4-12 form), or one issued for a query
// other than the one fingerprinted fp. The cursor's id is a lowercase
// canonical UUID and its time is between years 1 and 9999.
func decodePageToken(tok, fp string) (*store.UsageCursor, error) {
	return decodeCursorToken(tok, fp, usagePages)
}

// pageKind names what a page token pages through, for its errors: the
// RPC that issues it, where a request without one starts, and the request
// fields its fingerprint covers.
type pageKind struct{ rpc, start, fields string }

var usagePages = pageKind{"GetUsage", "the newest row", "organization_id, account_id, start_time or end_time"}

// decodeCursorToken is decodePageToken for the pages of any RPC whose
// cursor is a (time, UUID) pair: GetUsage's rows and ListAccounts'
// accounts share one token format and one set of checks.
func decodeCursorToken(tok, fp string, kind pageKind) (*store.UsageCursor, error) {
	if tok == "" {
		return nil, nil
	}
	bad := invalid("page_token", "not a token from a previous %s response; pass next_page_token unchanged, or omit it to start from %s", kind.rpc, kind.start)
	if len(tok) > maxPageTokenBytes {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, bad
	}
	parts := strings.Split(string(raw), "|")
	if len(parts) != 4 || parts[0] != pageTokenVersion {
		return nil, bad
	}
	micros, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || micros < minCursorMicros || micros > maxCursorMicros {
		return nil, bad
	}
	id, err := uuid.Parse(parts[2])
	if err != nil || len(parts[2]) != 36 {
		return nil, bad
	}
	if parts[3] != fp {
		return nil, invalid("page_token", "was issued for a different %s; keep them unchanged while paging, or omit page_token to start again", kind.fields)
	}
	return &store.UsageCursor{CreateTime: time.UnixMicro(micros).UTC(), ID: id.String()}, nil
}
