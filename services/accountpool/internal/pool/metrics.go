package pool

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// poolMetrics are the pool's instruments. The per-account gauges carry the
// organization and account ids: an operator alerting on an account's
// headroom or breaker needs them, and they are bounded by the accounts
// registered (series: accounts × families × 3 for capacity). Only the
// organizations this process has loaded are reported.
type poolMetrics struct {
	leases metric.Int64UpDownCounter
}

// metricsReadTimeout bounds the live-state reads of one collection.
const metricsReadTimeout = 2 * time.Second

const poolScope = "github.com/switchyard-dev/switchyard/services/accountpool/internal/pool"

// breaker states as the gauge reports them.
var breakerValues = map[BreakerState]int64{BreakerClosed: 0, BreakerHalfOpen: 1, BreakerOpen: 2}

func (p *Pool) newMetrics(mp metric.MeterProvider) poolMetrics {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(poolScope)
	var pm poolMetrics
	var err error
	if pm.leases, err = m.Int64UpDownCounter("switchyard.leases.open", metric.WithUnit("{lease}"),
		metric.WithDescription("Leases issued and not yet settled or expired, as this replica counts them: with shared state, sum the replicas.")); err != nil {
		pm.leases = metricnoop.Int64UpDownCounter{}
	}
	remaining, err1 := m.Int64ObservableGauge("switchyard.account.capacity.remaining", metric.WithUnit("{unit}"),
		metric.WithDescription("What a new call could take now from an account's bucket (requests, input_tokens, output_tokens), per model family."))
	limit, err2 := m.Int64ObservableGauge("switchyard.account.capacity.limit", metric.WithUnit("{unit}"),
		metric.WithDescription("The per-minute limit of an account's bucket, per model family."))
	cooldown, err3 := m.Float64ObservableGauge("switchyard.account.cooldown.remaining", metric.WithUnit("s"),
		metric.WithDescription("Seconds until an account's cool-down (429, spend limit, retry-after) ends; 0 when none."))
	breaker, err4 := m.Int64ObservableGauge("switchyard.account.breaker.state", metric.WithUnit("{state}"),
		metric.WithDescription("An account's circuit breaker: 0 closed, 1 half-open, 2 open."))
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return pm
	}
	_, _ = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		// One deadline for the whole collection: with the live state in an
		// unreachable Redis, reads one organization after another would
		// outlast the scrape and take every other metric down with them.
		ctx, cancel := context.WithTimeout(ctx, metricsReadTimeout)
		defer cancel()
		now := p.now()
		for orgID, v := range p.loadedViews() {
			if ctx.Err() != nil {
				break
			}
			infos, err := p.infos(ctx, v, v.accounts())
			if err != nil {
				continue // the live state is unreachable; nothing to report for it
			}
			for _, info := range infos {
				a := info.Account
				ids := []attribute.KeyValue{attribute.String("switchyard.organization_id", orgID), attribute.String("account.id", a.ID), attribute.String("account.name", a.Name)}
				o.ObserveInt64(breaker, breakerValues[info.Breaker.State], metric.WithAttributes(ids...))
				cd := 0.0
				if info.CooldownUntil.After(now) {
					cd = info.CooldownUntil.Sub(now).Seconds()
				}
				o.ObserveFloat64(cooldown, cd, metric.WithAttributes(ids...))
				for _, c := range info.Capacity {
					fam := attribute.String("switchyard.model_family", string(c.Family))
					for _, d := range []struct {
						name     string
						rem, lim int64
					}{
						{"requests", c.RequestsRemaining, c.RequestsLimit},
						{"input_tokens", c.InputRemaining, c.InputTokensLimit},
						{"output_tokens", c.OutputRemaining, c.OutputTokensLimit},
					} {
						set := metric.WithAttributes(append(ids[:3:3], fam, attribute.String("switchyard.dimension", d.name))...)
						o.ObserveInt64(remaining, d.rem, set)
						o.ObserveInt64(limit, d.lim, set)
					}
				}
			}
		}
		return nil
	}, remaining, limit, cooldown, breaker)
	return pm
}

// loadedViews returns the organizations' views this process holds now.
func (p *Pool) loadedViews() map[string]*orgView {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*orgView, len(p.orgs))
	for id, e := range p.orgs {
		if v := e.view.Load(); v != nil {
			out[id] = v
		}
	}
	return out
}

// countLeases adjusts the open-lease count.
func (p *Pool) countLeases(ctx context.Context, n int64) {
	if n != 0 {
		p.metrics.leases.Add(ctx, n)
	}
}
