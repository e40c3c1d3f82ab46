package delegate

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/outbox"
)

// taskMetrics are the orchestrator's task metrics. Their attributes are
// bounded: status, category (the category table), model, failover reason
// and outbox target; never an organization, account, session or request id
// (those are on the task's span and its log line).
type taskMetrics struct {
	tasks     metric.Int64Counter
	attempts  metric.Int64Histogram
	failovers metric.Int64Counter
	wait      metric.Float64Histogram
	duration  metric.Float64Histogram
	cost      metric.Float64Counter
}

const meterScope = "github.com/switchyard-dev/switchyard/services/orchestrator/internal/delegate"

// newTaskMetrics creates the task metrics and the outbox gauges (read from
// ob at each collection). The instruments' constructors fail only on
// invalid names, which these are not; a failure leaves a no-op instrument.
func newTaskMetrics(mp metric.MeterProvider, ob *outbox.Outbox) taskMetrics {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(meterScope)
	var tm taskMetrics
	tm.tasks, _ = m.Int64Counter("switchyard.tasks", metric.WithUnit("{task}"),
		metric.WithDescription("DelegateTask calls that ran, by final status (success, failed, rate_limited, error, replayed) and category."))
	tm.attempts, _ = m.Int64Histogram("switchyard.task.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Model calls per task, by final status."), metric.WithExplicitBucketBoundaries(0, 1, 2, 3))
	tm.failovers, _ = m.Int64Counter("switchyard.task.failovers", metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts that moved a task to another account, by the outcome that moved it."))
	tm.wait, _ = m.Float64Histogram("switchyard.task.wait.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a task spent waiting for capacity (in the pool's SelectAccount or between selections)."),
		metric.WithExplicitBucketBoundaries(0, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30))
	tm.duration, _ = m.Float64Histogram("switchyard.task.duration", metric.WithUnit("s"),
		metric.WithDescription("DelegateTask duration, by final status and category."),
		metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
	tm.cost, _ = m.Float64Counter("switchyard.cost", metric.WithUnit("USD"),
		metric.WithDescription("Cost of the model calls, by model."))
	if ob != nil {
		depth, _ := m.Int64ObservableGauge("switchyard.outbox.records", metric.WithUnit("{record}"),
			metric.WithDescription("Bookkeeping records waiting for delivery, by target service."))
		age, _ := m.Float64ObservableGauge("switchyard.outbox.oldest.age", metric.WithUnit("s"),
			metric.WithDescription("Age of the oldest bookkeeping record waiting, by target service (0 when none)."))
		failures, _ := m.Int64ObservableCounter("switchyard.outbox.delivery.failures", metric.WithUnit("{delivery}"),
			metric.WithDescription("Bookkeeping deliveries that failed (retried or dropped), by target service."))
		_, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			now := time.Now()
			for _, st := range ob.TargetStats() {
				set := metric.WithAttributes(attribute.String("switchyard.target", st.Target))
				o.ObserveInt64(depth, int64(st.Records), set)
				a := 0.0
				if !st.Oldest.IsZero() {
					a = now.Sub(st.Oldest).Seconds()
				}
				o.ObserveFloat64(age, a, set)
				o.ObserveInt64(failures, int64(st.Failures), set)
			}
			return nil
		}, depth, age, failures)
	}
	return tm
}

// Task span attribute names of our own; the GenAI semantic conventions
// supply the rest.
const (
	attrOrganization = attribute.Key("switchyard.organization_id")
	attrRequestID    = attribute.Key("switchyard.request_id")
	attrSessionID    = attribute.Key("switchyard.session_id")
	attrStatus       = attribute.Key("switchyard.task.status")
	attrAttempts     = attribute.Key("switchyard.task.attempts")
	attrLegacy       = attribute.Key("switchyard.legacy_mode")
	attrLegacyKey    = attribute.Key("switchyard.legacy_key")
	attrWaitMS       = attribute.Key("switchyard.task.wait_ms")
	// The names of the original design, kept for the dashboards built on
	// them.
	attrAccountID   = attribute.Key("account.id")
	attrAccountName = attribute.Key("account.name")
	attrModel       = attribute.Key("ai.model")
	attrCategory    = attribute.Key("ai.category")
	attrTokensIn    = attribute.Key("ai.tokens.input")
	attrTokensOut   = attribute.Key("ai.tokens.output")
	attrCacheRead   = attribute.Key("ai.tokens.cache_read")
	attrCacheWrite  = attribute.Key("ai.tokens.cache_creation")
	attrCost        = attribute.Key("ai.cost_usd")
	attrDurationMS  = attribute.Key("ai.duration_ms")
)

// statusName is a task status as metrics and logs name it.
func statusName(resp *orchestratorv1.DelegateTaskResponse, err error) string {
	switch {
	case err != nil:
		return "error"
	case resp.GetMetadata().GetReplayed():
		return "replayed"
	}
	switch resp.GetStatus() {
	case orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS:
		return "success"
	case orchestratorv1.TaskStatus_TASK_STATUS_RATE_LIMITED:
		return "rate_limited"
	default:
		return "failed"
	}
}

// report puts the task's result on its span (the DelegateTask server span
// otelgrpc opened), in the metrics and in one log line: at info level, the
// only line a task writes.
func (run *taskRun) report(ctx context.Context, resp *orchestratorv1.DelegateTaskResponse, runErr error) {
	p := run.p
	status := statusName(resp, runErr)
	elapsed := time.Since(run.start)
	md := resp.GetMetadata()
	model := md.GetModel()
	if model == "" {
		model = p.category.Model
	}

	span := trace.SpanFromContext(ctx)
	attrs := []attribute.KeyValue{
		attrOrganization.String(p.OrganizationID), attrRequestID.String(p.RequestID),
		attrStatus.String(status), attrAttempts.Int(int(md.GetAttempts())), attrLegacy.Bool(run.legacy),
		attrWaitMS.Int64(run.waited.Milliseconds()),
		attrCategory.String(p.Category), attrModel.String(model),
		attrTokensIn.Int64(md.GetInputTokens()), attrTokensOut.Int64(md.GetOutputTokens()),
		attrCacheRead.Int64(md.GetCacheReadTokens()), attrCacheWrite.Int64(md.GetCacheCreationTokens()),
		attrCost.Float64(md.GetCostUsd()), attrDurationMS.Int64(elapsed.Milliseconds()),
		semconv.GenAIProviderNameAnthropic,
		semconv.GenAIRequestModel(p.category.Model),
		semconv.GenAIUsageInputTokens(int(md.GetInputTokens())),
		semconv.GenAIUsageOutputTokens(int(md.GetOutputTokens())),
		semconv.GenAIUsageCacheReadInputTokens(int(md.GetCacheReadTokens())),
		semconv.GenAIUsageCacheCreationInputTokens(int(md.GetCacheCreationTokens())),
	}
	if md.GetModel() != "" {
		attrs = append(attrs, semconv.GenAIResponseModel(md.GetModel()))
	}
	if p.SessionID != "" {
		attrs = append(attrs, attrSessionID.String(p.SessionID), semconv.GenAIConversationID(p.SessionID))
	}
	if p.UserID != "" {
		attrs = append(attrs, semconv.UserID(p.UserID))
	}
	if run.legacyKey != "" {
		attrs = append(attrs, attrLegacyKey.String(run.legacyKey))
	}
	if id := md.GetAccountId(); id != "" {
		attrs = append(attrs, attrAccountID.String(id), attrAccountName.String(md.GetAccountName()))
	}
	span.SetAttributes(attrs...)
	switch status {
	case "failed", "rate_limited":
		span.SetStatus(codes.Error, status+": "+resp.GetError())
	}

	st := attribute.String("switchyard.task.status", status)
	cat := attribute.String("ai.category", p.Category)
	m := run.r.metrics
	m.tasks.Add(ctx, 1, metric.WithAttributes(st, cat))
	m.attempts.Record(ctx, int64(len(run.tried)), metric.WithAttributes(st))
	m.duration.Record(ctx, elapsed.Seconds(), metric.WithAttributes(st, cat))
	m.wait.Record(ctx, run.waited.Seconds())
	for i, a := range run.tried {
		if a.costUSD > 0 {
			// The requested model (the category table's): bounded, where the
			// upstream's answer names any model it likes.
			m.cost.Add(ctx, a.costUSD, metric.WithAttributes(semconv.GenAIRequestModel(p.category.Model)))
		}
		if i < len(run.tried)-1 {
			m.failovers.Add(ctx, 1, metric.WithAttributes(attribute.String("switchyard.outcome", a.result.Outcome.String())))
		}
	}

	run.r.logger.InfoContext(ctx, "task finished",
		"request_id", p.RequestID, "organization_id", p.OrganizationID, "category", p.Category,
		"status", status, "attempts", len(run.tried), "account_id", md.GetAccountId(), "account_name", md.GetAccountName(),
		"legacy_mode", run.legacy, "legacy_key", run.legacyKey, "duration_ms", elapsed.Milliseconds(), "wait_ms", run.waited.Milliseconds(),
		"input_tokens", md.GetInputTokens(), "output_tokens", md.GetOutputTokens(), "cost_usd", md.GetCostUsd())
}
