package api

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// accountToProto converts an account with its live state. There is no key
// field to fill: the proto Account has none, by design.
func accountToProto(info pool.AccountInfo) *accountpoolv1.Account {
	a := info.Account
	out := &accountpoolv1.Account{
		Id:             a.ID,
		OrganizationId: a.OrganizationID,
		Name:           a.Name,
		Tier:           a.Tier,
		Status:         statusToProto(a.Status),
		Weight:         a.Weight,
		Priority:       a.Priority,
		QuotaGroup:     a.QuotaGroup,
		Labels:         a.Labels,
		KeyVersion:     a.KeyVersion,
		CreateTime:     ts(a.CreateTime),
		UpdateTime:     ts(a.UpdateTime),
		Breaker: &accountpoolv1.CircuitBreaker{
			State:               breakerToProto(info.Breaker.State),
			ConsecutiveFailures: info.Breaker.ConsecutiveFailures,
			OpenUntil:           ts(info.Breaker.OpenUntil),
		},
		CooldownUntil: ts(info.CooldownUntil),
	}
	for _, c := range info.Capacity {
		out.Capacity = append(out.Capacity, &accountpoolv1.Capacity{
			ModelFamily:           string(c.Family),
			RequestsLimit:         c.RequestsLimit,
			RequestsRemaining:     c.RequestsRemaining,
			InputTokensLimit:      c.InputTokensLimit,
			InputTokensRemaining:  c.InputRemaining,
			OutputTokensLimit:     c.OutputTokensLimit,
			OutputTokensRemaining: c.OutputRemaining,
		})
	}
	return out
}

// accountsToProto converts a list of accounts, as ListAccounts and
// WatchAccounts return it.
func accountsToProto(infos []pool.AccountInfo) []*accountpoolv1.Account {
	out := make([]*accountpoolv1.Account, 0, len(infos))
	for _, info := range infos {
		out = append(out, accountToProto(info))
	}
	return out
}

func statusToProto(s store.Status) accountpoolv1.AccountStatus {
	switch s {
	case store.StatusActive:
		return accountpoolv1.AccountStatus_ACCOUNT_STATUS_ACTIVE
	case store.StatusDisabled:
		return accountpoolv1.AccountStatus_ACCOUNT_STATUS_DISABLED
	case store.StatusInvalid:
		return accountpoolv1.AccountStatus_ACCOUNT_STATUS_INVALID
	}
	return accountpoolv1.AccountStatus_ACCOUNT_STATUS_UNSPECIFIED
}

func breakerToProto(s pool.BreakerState) accountpoolv1.BreakerState {
	switch s {
	case pool.BreakerClosed:
		return accountpoolv1.BreakerState_BREAKER_STATE_CLOSED
	case pool.BreakerOpen:
		return accountpoolv1.BreakerState_BREAKER_STATE_OPEN
	case pool.BreakerHalfOpen:
		return accountpoolv1.BreakerState_BREAKER_STATE_HALF_OPEN
	}
	return accountpoolv1.BreakerState_BREAKER_STATE_UNSPECIFIED
}

func strategyToProto(s store.Strategy) accountpoolv1.SelectionStrategy {
	switch s {
	case store.StrategyLeastLoaded:
		return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_LEAST_LOADED
	case store.StrategyRoundRobin:
		return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_ROUND_ROBIN
	case store.StrategyWeighted:
		return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_WEIGHTED
	case store.StrategyPriority:
		return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_PRIORITY
	case store.StrategySessionAffinity:
		return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_SESSION_AFFINITY
	}
	return accountpoolv1.SelectionStrategy_SELECTION_STRATEGY_UNSPECIFIED
}

func outcomeToProto(o store.Outcome) accountpoolv1.Outcome {
	switch o {
	case store.OutcomeSuccess:
		return accountpoolv1.Outcome_OUTCOME_SUCCESS
	case store.OutcomeRateLimited:
		return accountpoolv1.Outcome_OUTCOME_RATE_LIMITED
	case store.OutcomeSpendLimited:
		return accountpoolv1.Outcome_OUTCOME_SPEND_LIMITED
	case store.OutcomeAuthFailed:
		return accountpoolv1.Outcome_OUTCOME_AUTH_FAILED
	case store.OutcomeUpstreamError:
		return accountpoolv1.Outcome_OUTCOME_UPSTREAM_ERROR
	case store.OutcomeClientError:
		return accountpoolv1.Outcome_OUTCOME_CLIENT_ERROR
	case store.OutcomeCancelled:
		return accountpoolv1.Outcome_OUTCOME_CANCELLED
	}
	return accountpoolv1.Outcome_OUTCOME_UNSPECIFIED
}

// settingsToProto describes the default key, never carries it: DefaultKeyInfo
// has no field that could.
func settingsToProto(s store.Settings, k pool.DefaultKeyInfo) *accountpoolv1.OrganizationSettings {
	return &accountpoolv1.OrganizationSettings{
		OrganizationId:    s.OrganizationID,
		SelectionStrategy: strategyToProto(s.SelectionStrategy),
		UpdateTime:        ts(s.UpdateTime),
		DefaultKey: &accountpoolv1.DefaultKeyInfo{
			Configured: k.Configured,
			KeyVersion: k.KeyVersion,
			Invalid:    k.Invalid,
			UpdateTime: ts(k.UpdateTime),
		},
		TaskLimits: &accountpoolv1.TaskLimits{
			MaxConcurrentTasks: s.TaskLimits.MaxConcurrentTasks,
			TasksPerSecond:     s.TaskLimits.TasksPerSecond,
			Burst:              s.TaskLimits.Burst,
		},
	}
}

func totalsToProto(t store.UsageTotals) *accountpoolv1.UsageTotals {
	return &accountpoolv1.UsageTotals{
		AccountId:           t.AccountID,
		AccountName:         t.AccountName,
		Requests:            t.Requests,
		FailedRequests:      t.FailedRequests,
		InputTokens:         t.InputTokens,
		OutputTokens:        t.OutputTokens,
		CacheReadTokens:     t.CacheReadTokens,
		CacheCreationTokens: t.CacheCreationTokens,
		CostUsd:             t.CostUSD,
	}
}

func usageToProto(r store.UsageRecord) *accountpoolv1.UsageRecord {
	return &accountpoolv1.UsageRecord{
		Id:                  r.ID,
		OrganizationId:      r.OrganizationID,
		AccountId:           r.AccountID,
		AccountName:         r.AccountName,
		RequestId:           r.RequestID,
		Attempt:             r.Attempt,
		Outcome:             outcomeToProto(r.Outcome),
		Model:               r.Model,
		Category:            r.Category,
		SessionId:           r.SessionID,
		UserId:              r.UserID,
		InputTokens:         r.InputTokens,
		OutputTokens:        r.OutputTokens,
		CacheReadTokens:     r.CacheReadTokens,
		CacheCreationTokens: r.CacheCreationTokens,
		CostUsd:             r.CostUSD,
		HttpStatus:          r.HTTPStatus,
		ErrorType:           r.ErrorType,
		UpstreamRequestId:   r.UpstreamRequestID,
		DurationMs:          r.DurationMS,
		CreateTime:          ts(r.CreateTime),
	}
}

func headersFromProto(h *accountpoolv1.RateLimitHeaders) (pool.RateLimitHeaders, error) {
	if h == nil {
		return pool.RateLimitHeaders{}, nil
	}
	for _, f := range []struct {
		name string
		n    int64
	}{
		{"rate_limit.requests_limit", h.GetRequestsLimit()},
		{"rate_limit.requests_remaining", h.GetRequestsRemaining()},
		{"rate_limit.input_tokens_limit", h.GetInputTokensLimit()},
		{"rate_limit.input_tokens_remaining", h.GetInputTokensRemaining()},
		{"rate_limit.output_tokens_limit", h.GetOutputTokensLimit()},
		{"rate_limit.output_tokens_remaining", h.GetOutputTokensRemaining()},
		{"rate_limit.retry_after_seconds", h.GetRetryAfterSeconds()},
	} {
		if err := checkNonNegative(f.name, f.n); err != nil {
			return pool.RateLimitHeaders{}, err
		}
	}
	const maxRetryAfter = 7 * 24 * 3600
	if h.GetRetryAfterSeconds() > maxRetryAfter {
		return pool.RateLimitHeaders{}, invalid("rate_limit.retry_after_seconds", "more than a week (%d s); pass the header's value in seconds", maxRetryAfter)
	}
	out := pool.RateLimitHeaders{
		RequestsLimit:     h.GetRequestsLimit(),
		RequestsRemaining: h.GetRequestsRemaining(),
		InputLimit:        h.GetInputTokensLimit(),
		InputRemaining:    h.GetInputTokensRemaining(),
		OutputLimit:       h.GetOutputTokensLimit(),
		OutputRemaining:   h.GetOutputTokensRemaining(),
		RetryAfter:        time.Duration(h.GetRetryAfterSeconds()) * time.Second,
	}
	var err error
	if out.RequestsReset, err = timeFromProto("rate_limit.requests_reset", h.GetRequestsReset()); err != nil {
		return pool.RateLimitHeaders{}, err
	}
	if out.InputReset, err = timeFromProto("rate_limit.input_tokens_reset", h.GetInputTokensReset()); err != nil {
		return pool.RateLimitHeaders{}, err
	}
	if out.OutputReset, err = timeFromProto("rate_limit.output_tokens_reset", h.GetOutputTokensReset()); err != nil {
		return pool.RateLimitHeaders{}, err
	}
	return out, nil
}
