// Package api adapts the pool to gRPC: it validates requests, converts
// between proto and domain types, and translates errors (errors.go, the one
// place that picks status codes).
//
// The API key crosses this package twice and is never logged: inbound in
// RegisterAccount, RotateAccountKey and SetDefaultKey, straight into a
// secret.String, and outbound in the SelectAccount lease or default_key.
// No admin response has a field that could carry it.
package api

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Server implements accountpoolv1.AccountPoolServiceServer.
type Server struct {
	accountpoolv1.UnimplementedAccountPoolServiceServer
	pool   *pool.Pool
	logger *slog.Logger
}

var _ accountpoolv1.AccountPoolServiceServer = (*Server)(nil)

// New returns the handlers for p.
func New(p *pool.Pool, logger *slog.Logger) *Server {
	return &Server{pool: p, logger: logger}
}

// fail translates err and logs what the caller will not see: the cause of
// an Internal or Unavailable answer.
func (s *Server) fail(ctx context.Context, rpc string, err error) error {
	out := ToStatus(err)
	if c := status.Code(out); c == codes.Internal || c == codes.Unavailable {
		s.logger.ErrorContext(ctx, "rpc failed", "rpc", rpc, "code", c.String(), "error", err)
	}
	return out
}

// RegisterAccount implements AccountPoolServiceServer.
func (s *Server) RegisterAccount(ctx context.Context, req *accountpoolv1.RegisterAccountRequest) (*accountpoolv1.RegisterAccountResponse, error) {
	if err := firstError(
		checkOrg(req.GetOrganizationId()),
		checkName("name", req.GetName()),
		checkAPIKey(req.GetApiKey()),
		checkNonNegative("weight", int64(req.GetWeight())),
		checkText("quota_group", req.GetQuotaGroup(), maxNameLen),
		checkText("tier", req.GetTier(), maxNameLen),
		checkLabels(req.GetLabels()),
	); err != nil {
		return nil, s.fail(ctx, "RegisterAccount", err)
	}
	info, err := s.pool.RegisterAccount(ctx, pool.NewAccount{
		OrgID:      req.GetOrganizationId(),
		Name:       req.GetName(),
		APIKey:     secret.New(req.GetApiKey()),
		Tier:       req.GetTier(),
		Weight:     req.GetWeight(),
		Priority:   req.GetPriority(),
		QuotaGroup: req.GetQuotaGroup(),
		Labels:     req.GetLabels(),
	})
	if err != nil {
		return nil, s.fail(ctx, "RegisterAccount", err)
	}
	return &accountpoolv1.RegisterAccountResponse{Account: accountToProto(info)}, nil
}

// GetAccount implements AccountPoolServiceServer.
func (s *Server) GetAccount(ctx context.Context, req *accountpoolv1.GetAccountRequest) (*accountpoolv1.GetAccountResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "GetAccount", err)
	}
	id, err := parseUUID("account_id", req.GetAccountId())
	if err != nil {
		return nil, s.fail(ctx, "GetAccount", err)
	}
	info, err := s.pool.GetAccount(ctx, req.GetOrganizationId(), id)
	if err != nil {
		return nil, s.fail(ctx, "GetAccount", err)
	}
	return &accountpoolv1.GetAccountResponse{Account: accountToProto(info)}, nil
}

// ListAccounts implements AccountPoolServiceServer.
func (s *Server) ListAccounts(ctx context.Context, req *accountpoolv1.ListAccountsRequest) (*accountpoolv1.ListAccountsResponse, error) {
	out, err := s.listAccounts(ctx, req)
	if err != nil {
		return nil, s.fail(ctx, "ListAccounts", err)
	}
	return out, nil
}

// UpdateAccount implements AccountPoolServiceServer.
func (s *Server) UpdateAccount(ctx context.Context, req *accountpoolv1.UpdateAccountRequest) (*accountpoolv1.UpdateAccountResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "UpdateAccount", err)
	}
	id, err := parseUUID("account_id", req.GetAccountId())
	if err != nil {
		return nil, s.fail(ctx, "UpdateAccount", err)
	}
	st, err := statusFromProto(req.GetStatus())
	if err != nil {
		return nil, s.fail(ctx, "UpdateAccount", err)
	}
	var checks []error
	if req.Name != nil {
		checks = append(checks, checkName("name", req.GetName()))
	}
	if req.Weight != nil {
		checks = append(checks, checkNonNegative("weight", int64(req.GetWeight())))
	}
	if req.QuotaGroup != nil {
		checks = append(checks, checkText("quota_group", req.GetQuotaGroup(), maxNameLen))
	}
	if err := firstError(checks...); err != nil {
		return nil, s.fail(ctx, "UpdateAccount", err)
	}
	info, err := s.pool.UpdateAccount(ctx, req.GetOrganizationId(), id, pool.AccountChanges{
		Name:       req.Name,
		Tier:       req.Tier,
		Weight:     req.Weight,
		Priority:   req.Priority,
		Status:     st,
		QuotaGroup: req.QuotaGroup,
	})
	if err != nil {
		return nil, s.fail(ctx, "UpdateAccount", err)
	}
	return &accountpoolv1.UpdateAccountResponse{Account: accountToProto(info)}, nil
}

// DeleteAccount implements AccountPoolServiceServer.
func (s *Server) DeleteAccount(ctx context.Context, req *accountpoolv1.DeleteAccountRequest) (*accountpoolv1.DeleteAccountResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "DeleteAccount", err)
	}
	id, err := parseUUID("account_id", req.GetAccountId())
	if err != nil {
		return nil, s.fail(ctx, "DeleteAccount", err)
	}
	if err := s.pool.DeleteAccount(ctx, req.GetOrganizationId(), id); err != nil {
		return nil, s.fail(ctx, "DeleteAccount", err)
	}
	return &accountpoolv1.DeleteAccountResponse{}, nil
}

// RotateAccountKey implements AccountPoolServiceServer. The new key is
// validated like a registered one and never echoed, not even its length.
func (s *Server) RotateAccountKey(ctx context.Context, req *accountpoolv1.RotateAccountKeyRequest) (*accountpoolv1.RotateAccountKeyResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "RotateAccountKey", err)
	}
	id, err := parseUUID("account_id", req.GetAccountId())
	if err != nil {
		return nil, s.fail(ctx, "RotateAccountKey", err)
	}
	if err := checkAPIKey(req.GetApiKey()); err != nil {
		return nil, s.fail(ctx, "RotateAccountKey", err)
	}
	info, err := s.pool.RotateKey(ctx, req.GetOrganizationId(), id, secret.New(req.GetApiKey()))
	if err != nil {
		return nil, s.fail(ctx, "RotateAccountKey", err)
	}
	return &accountpoolv1.RotateAccountKeyResponse{Account: accountToProto(info)}, nil
}

// SelectAccount implements AccountPoolServiceServer.
func (s *Server) SelectAccount(ctx context.Context, req *accountpoolv1.SelectAccountRequest) (*accountpoolv1.SelectAccountResponse, error) {
	if err := firstError(
		checkOrg(req.GetOrganizationId()),
		checkText("model", req.GetModel(), maxModelLen),
		checkNonNegative("estimated_input_tokens", req.GetEstimatedInputTokens()),
		checkNonNegative("estimated_output_tokens", req.GetEstimatedOutputTokens()),
		checkText("session_id", req.GetSessionId(), maxTextLen),
	); err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	excluded, err := parseUUIDs("excluded_account_ids", req.GetExcludedAccountIds())
	if err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	allowed, err := parseUUIDs("allowed_account_ids", req.GetAllowedAccountIds())
	if err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	strategy, err := strategyFromProto("strategy", req.GetStrategy())
	if err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	wait, err := selectWait(ctx, req.GetMaxWait())
	if err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	sel, err := s.pool.Select(ctx, pool.SelectRequest{
		MaxWait:               wait,
		OrgID:                 req.GetOrganizationId(),
		Model:                 req.GetModel(),
		EstimatedInputTokens:  req.GetEstimatedInputTokens(),
		EstimatedOutputTokens: req.GetEstimatedOutputTokens(),
		Excluded:              excluded,
		Allowed:               allowed,
		Strategy:              strategy,
		SessionID:             req.GetSessionId(),
		AcceptDefaultKey:      req.GetAcceptDefaultKey(),
		// The response's contract includes the explanation.
		Explain: true,
	})
	if err != nil {
		return nil, s.fail(ctx, "SelectAccount", err)
	}
	if sel.DefaultKey != nil {
		return defaultKeyResponse(sel.DefaultKey), nil
	}
	out := &accountpoolv1.SelectAccountResponse{
		Lease: &accountpoolv1.Lease{
			LeaseId:     sel.LeaseID,
			AccountId:   sel.AccountID,
			AccountName: sel.AccountName,
			Tier:        sel.Tier,
			// The one place a key leaves the service: to the orchestrator,
			// for its upstream call.
			ApiKey:     sel.APIKey.Reveal(),
			ExpireTime: ts(sel.ExpireTime),
		},
		Strategy:          strategyToProto(sel.Strategy),
		OmittedCandidates: int32(sel.Omitted),
	}
	for reason, n := range sel.OmittedReasons {
		if out.OmittedReasons == nil {
			out.OmittedReasons = map[string]int32{}
		}
		out.OmittedReasons[reason] = int32(n)
	}
	for _, c := range sel.Candidates {
		out.Candidates = append(out.Candidates, &accountpoolv1.Candidate{
			AccountId:   c.AccountID,
			AccountName: c.AccountName,
			Chosen:      c.Chosen,
			SkipReason:  c.SkipReason,
			Headroom:    c.Headroom,
		})
	}
	return out, nil
}

// RecordRequest implements AccountPoolServiceServer.
func (s *Server) RecordRequest(ctx context.Context, req *accountpoolv1.RecordRequestRequest) (*accountpoolv1.RecordRequestResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	// Without a lease and an account the call ran in legacy mode, on the
	// organization's default key or the orchestrator's environment key
	// (legacy_key): only its ledger row is recorded, and an AUTH_FAILED on
	// the default key marks it invalid.
	var leaseID, accountID string
	if req.GetLeaseId() != "" || req.GetAccountId() != "" {
		var err error
		if leaseID, err = parseUUID("lease_id", req.GetLeaseId()); err != nil {
			return nil, s.fail(ctx, "RecordRequest", err)
		}
		if accountID, err = parseUUID("account_id", req.GetAccountId()); err != nil {
			return nil, s.fail(ctx, "RecordRequest", err)
		}
	}
	outcome, err := outcomeFromProto(req.GetOutcome())
	if err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	legacyKey, err := legacyKeyFromProto(req.GetLegacyKey())
	if err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	if len(req.GetDefaultKeyGeneration()) > maxDefaultKeyGenerationLen {
		return nil, s.fail(ctx, "RecordRequest", invalid("default_key_generation", "must be at most %d bytes: pass the generation SelectAccount's default_key carried, unchanged", maxDefaultKeyGenerationLen))
	}
	var attemptErr error
	if req.GetAttempt() < 1 {
		attemptErr = invalid("attempt", "must be 1 or more (the first attempt of a request is 1), got %d", req.GetAttempt())
	}
	var requestIDErr error
	if req.GetRequestId() == "" {
		requestIDErr = invalid("request_id", "required; it makes recording idempotent, so pass the task's request id")
	}
	if err := firstError(
		requestIDErr,
		checkText("request_id", req.GetRequestId(), maxRequestIDLen),
		attemptErr,
		checkText("model", req.GetModel(), maxModelLen),
		checkText("category", req.GetCategory(), maxTextLen),
		checkText("session_id", req.GetSessionId(), maxTextLen),
		checkText("user_id", req.GetUserId(), maxTextLen),
		checkText("error_type", req.GetErrorType(), maxTextLen),
		checkText("upstream_request_id", req.GetUpstreamRequestId(), maxTextLen),
		checkNonNegative("input_tokens", req.GetInputTokens()),
		checkNonNegative("output_tokens", req.GetOutputTokens()),
		checkNonNegative("cache_read_tokens", req.GetCacheReadTokens()),
		checkNonNegative("cache_creation_tokens", req.GetCacheCreationTokens()),
		checkNonNegative("http_status", int64(req.GetHttpStatus())),
		checkNonNegative("duration_ms", req.GetDurationMs()),
	); err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	headers, err := headersFromProto(req.GetRateLimit())
	if err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	if outcome != store.OutcomeSuccess && req.GetErrorMessage() != "" {
		// The upstream's message explains failures to operators; the ledger
		// has no column for it.
		s.logger.InfoContext(ctx, "upstream call failed", "organization_id", req.GetOrganizationId(),
			"account_id", accountID, "outcome", string(outcome), "http_status", req.GetHttpStatus(),
			"error_type", req.GetErrorType(), "error_message", req.GetErrorMessage())
	}
	res, err := s.pool.Record(ctx, pool.RecordRequest{
		OrgID:     req.GetOrganizationId(),
		LeaseID:   leaseID,
		AccountID: accountID,
		RequestID: req.GetRequestId(),
		Attempt:   req.GetAttempt(),
		Outcome:   outcome,
		Model:     req.GetModel(),
		Category:  req.GetCategory(),
		SessionID: req.GetSessionId(),
		UserID:    req.GetUserId(),
		Tokens: pool.Tokens{
			Input:         req.GetInputTokens(),
			Output:        req.GetOutputTokens(),
			CacheRead:     req.GetCacheReadTokens(),
			CacheCreation: req.GetCacheCreationTokens(),
		},
		Headers:              headers,
		HTTPStatus:           req.GetHttpStatus(),
		ErrorType:            req.GetErrorType(),
		UpstreamRequestID:    req.GetUpstreamRequestId(),
		DurationMS:           req.GetDurationMs(),
		LegacyKey:            legacyKey,
		DefaultKeyGeneration: req.GetDefaultKeyGeneration(),
	})
	if err != nil {
		return nil, s.fail(ctx, "RecordRequest", err)
	}
	return &accountpoolv1.RecordRequestResponse{CostUsd: res.CostUSD, UsageId: res.UsageID, Duplicate: res.Duplicate}, nil
}

// GetOrganizationSettings implements AccountPoolServiceServer.
func (s *Server) GetOrganizationSettings(ctx context.Context, req *accountpoolv1.GetOrganizationSettingsRequest) (*accountpoolv1.GetOrganizationSettingsResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "GetOrganizationSettings", err)
	}
	st, err := s.pool.Settings(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "GetOrganizationSettings", err)
	}
	k, err := s.pool.DefaultKeyInfo(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "GetOrganizationSettings", err)
	}
	return &accountpoolv1.GetOrganizationSettingsResponse{Settings: settingsToProto(st, k)}, nil
}

// UpdateOrganizationSettings implements AccountPoolServiceServer.
func (s *Server) UpdateOrganizationSettings(ctx context.Context, req *accountpoolv1.UpdateOrganizationSettingsRequest) (*accountpoolv1.UpdateOrganizationSettingsResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "UpdateOrganizationSettings", err)
	}
	strategy, err := strategyFromProto("selection_strategy", req.GetSelectionStrategy())
	if err != nil {
		return nil, s.fail(ctx, "UpdateOrganizationSettings", err)
	}
	change := pool.SettingsChange{Strategy: strategy}
	if tl := req.GetTaskLimits(); tl != nil {
		change.TaskLimits = &store.TaskLimits{MaxConcurrentTasks: tl.GetMaxConcurrentTasks(), TasksPerSecond: tl.GetTasksPerSecond(), Burst: tl.GetBurst()}
	}
	st, err := s.pool.ChangeSettings(ctx, req.GetOrganizationId(), change)
	if err != nil {
		return nil, s.fail(ctx, "UpdateOrganizationSettings", err)
	}
	k, err := s.pool.DefaultKeyInfo(ctx, req.GetOrganizationId())
	if err != nil {
		return nil, s.fail(ctx, "UpdateOrganizationSettings", err)
	}
	return &accountpoolv1.UpdateOrganizationSettingsResponse{Settings: settingsToProto(st, k)}, nil
}

// GetUsage implements AccountPoolServiceServer.
func (s *Server) GetUsage(ctx context.Context, req *accountpoolv1.GetUsageRequest) (*accountpoolv1.GetUsageResponse, error) {
	if err := checkOrg(req.GetOrganizationId()); err != nil {
		return nil, s.fail(ctx, "GetUsage", err)
	}
	q := pool.UsageQuery{IncludeRecords: req.GetIncludeRecords(), PageSize: defaultPageSize}
	var err error
	if q.Filter.Start, err = timeFromProto("start_time", req.GetStartTime()); err != nil {
		return nil, s.fail(ctx, "GetUsage", err)
	}
	if q.Filter.End, err = timeFromProto("end_time", req.GetEndTime()); err != nil {
		return nil, s.fail(ctx, "GetUsage", err)
	}
	if !q.Filter.Start.IsZero() && !q.Filter.End.IsZero() && !q.Filter.End.After(q.Filter.Start) {
		return nil, s.fail(ctx, "GetUsage", invalid("end_time", "must be after start_time (the range is [start_time, end_time))"))
	}
	if req.GetAccountId() != "" {
		if q.Filter.AccountID, err = parseUUID("account_id", req.GetAccountId()); err != nil {
			return nil, s.fail(ctx, "GetUsage", err)
		}
	}
	switch n := req.GetPageSize(); {
	case n < 0:
		return nil, s.fail(ctx, "GetUsage", invalid("page_size", "must not be negative; omit it for %d rows", defaultPageSize))
	case n > 0:
		q.PageSize = min(int(n), maxPageSize)
	}
	fp := usageFingerprint(req.GetOrganizationId(), q.Filter)
	if q.After, err = decodePageToken(req.GetPageToken(), fp); err != nil {
		return nil, s.fail(ctx, "GetUsage", err)
	}
	rep, err := s.pool.Usage(ctx, req.GetOrganizationId(), q)
	if err != nil {
		return nil, s.fail(ctx, "GetUsage", err)
	}
	out := &accountpoolv1.GetUsageResponse{Total: totalsToProto(rep.Total), NextPageToken: encodePageToken(rep.Next, fp)}
	for _, t := range rep.ByAccount {
		out.ByAccount = append(out.ByAccount, totalsToProto(t))
	}
	for _, r := range rep.Records {
		out.Records = append(out.Records, usageToProto(r))
	}
	return out, nil
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
