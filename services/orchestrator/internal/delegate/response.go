package delegate

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/executor"
)

// response builds the task's result from its attempts.
func (run *taskRun) response() *orchestratorv1.DelegateTaskResponse {
	p := run.p
	md := &orchestratorv1.TaskMetadata{
		Model:      p.category.Model,
		DurationMs: time.Since(run.start).Milliseconds(),
		ActivityId: p.activityID,
		Attempts:   int32(len(run.tried)),
		RequestId:  p.clientRequestID,
		LegacyMode: run.legacy,
		LegacyKey:  run.legacyKey,
	}
	if !run.activityStarted {
		md.ActivityId = ""
	}
	resp := &orchestratorv1.DelegateTaskResponse{Metadata: md}
	rateLimited := 0
	var retryAfter time.Duration
	for _, a := range run.tried {
		u := a.result.Usage
		md.InputTokens += u.InputTokens
		md.OutputTokens += u.OutputTokens
		md.CacheReadTokens += u.CacheReadTokens
		md.CacheCreationTokens += u.CacheCreationTokens
		md.CostUsd += a.costUSD
		md.AccountId, md.AccountName = a.accountID, a.accountName
		md.AttemptDetails = append(md.AttemptDetails, &orchestratorv1.Attempt{
			Number: int32(a.number), AccountId: a.accountID, AccountName: a.accountName,
			Outcome: a.result.Outcome.String(), OutcomeCode: AttemptOutcomeCode(a.result.Outcome.String()), HttpStatus: int32(a.result.HTTPStatus),
			Error: errorText(a.result), DurationMs: a.result.Duration.Milliseconds(),
			Warnings: a.result.Warnings, MessageId: a.result.MessageID,
		})
		switch a.result.Outcome {
		case executor.Success:
			resp.Status, resp.Output = orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS, a.result.Text
			md.StopReason = a.result.StopReason
			if a.result.Model != "" {
				md.Model = a.result.Model
			}
		case executor.RateLimited, executor.SpendLimited:
			rateLimited++
			if ra := a.result.RateLimit.RetryAfter; ra > 0 && (retryAfter == 0 || ra < retryAfter) {
				retryAfter = ra
			}
		}
	}
	if resp.Status == orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
		return resp
	}
	if rateLimited == len(run.tried) && (len(run.tried) > 0 || run.exhausted != "") {
		resp.Status = orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED
		// The pool knows best when an account frees up; the upstream's
		// retry-after is the fallback.
		if run.retryAfter > 0 {
			retryAfter = run.retryAfter
		}
		md.RetryAfterMs = retryAfter.Milliseconds()
	} else {
		resp.Status = orchestratorv1.TaskStatus_TASK_STATUS_FAILED
	}
	resp.Error = run.failureMessage(rateLimited)
	return resp
}

func (run *taskRun) failureMessage(rateLimited int) string {
	var parts []string
	for _, a := range run.tried {
		parts = append(parts, fmt.Sprintf("%s (%s)", a.accountName, describe(a.result)))
	}
	var msg string
	switch {
	case len(run.tried) == 0:
		msg = "no attempt was made"
	case rateLimited == len(run.tried):
		msg = fmt.Sprintf("all %d attempts were rate limited: %s", len(run.tried), strings.Join(parts, ", "))
	default:
		last := run.tried[len(run.tried)-1]
		msg = fmt.Sprintf("attempt %d of %d failed on account %s: %s", last.number, len(run.tried), last.accountName, errorText(last.result))
		if len(parts) > 1 {
			msg += "; accounts tried: " + strings.Join(parts, ", ")
		}
	}
	if run.exhausted != "" {
		msg += "; no further account could be selected: " + run.exhausted
	}
	return msg
}

func describe(r executor.Result) string {
	switch {
	case r.HTTPStatus == http.StatusOK && r.Outcome != executor.Success:
		// The stream had started: the status says nothing about the failure.
		return r.ErrorType + " during the stream"
	case r.HTTPStatus != 0 && r.ErrorType != "":
		s := fmt.Sprintf("%d %s", r.HTTPStatus, r.ErrorType)
		if r.RateLimit.RetryAfter > 0 {
			s += fmt.Sprintf(", retry after %s", r.RateLimit.RetryAfter)
		}
		return s
	case r.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d", r.HTTPStatus)
	default:
		return r.Outcome.String()
	}
}

func errorText(r executor.Result) string {
	if r.Outcome == executor.Success {
		return ""
	}
	if r.ErrorMessage == "" {
		return describe(r)
	}
	return describe(r) + ": " + r.ErrorMessage
}

// maxSkippedInSummary bounds the explanation kept per selection, so an
// organization with many accounts cannot blow the activity's metadata
// limit.
const maxSkippedInSummary = 20

// selectionSummary condenses the pool's explanation of one selection for
// the activity's metadata: the strategy, the chosen account and its
// headroom, and why the others were skipped.
func selectionSummary(resp *accountpoolv1.SelectAccountResponse) map[string]any {
	summary := map[string]any{
		"strategy": resp.GetStrategy().String(),
		"account":  resp.GetLease().GetAccountName(),
	}
	if dk := resp.GetDefaultKey(); resp.GetLease() == nil && dk.GetApiKey() != "" {
		// Only what names the key, never the key.
		summary["account"], summary["legacy_key"], summary["key_version"] = legacyKeyDefault, legacyKeyDefault, dk.GetKeyVersion()
	}
	var skipped []any
	omitted := 0
	for _, c := range resp.GetCandidates() {
		switch {
		case c.GetChosen():
			summary["headroom"] = c.GetHeadroom()
		case c.GetSkipReason() == "":
		case len(skipped) < maxSkippedInSummary:
			skipped = append(skipped, c.GetAccountName()+": "+c.GetSkipReason())
		default:
			omitted++
		}
	}
	if len(skipped) > 0 {
		summary["skipped"] = skipped
	}
	if omitted > 0 {
		summary["skipped_omitted"] = omitted
	}
	// The pool explains the chosen account and its best alternatives only,
	// and counts the rest, by reason.
	if n := resp.GetOmittedCandidates(); n > 0 {
		reasons := make(map[string]any, len(resp.GetOmittedReasons()))
		for reason, count := range resp.GetOmittedReasons() {
			reasons[reason] = float64(count)
		}
		summary["not_explained"] = float64(n)
		summary["not_explained_reasons"] = reasons
	}
	return summary
}
