package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Usage range defaults. A usage read costs what its range holds (the
// stores sum whole hours from summaries, but one summary per hour and
// active account and model still adds up over a year), so every read has
// a bounded range: a caller cannot make one read cost the whole ledger.
const (
	// DefaultUsageRange is the range of a query without a start: the 24
	// hours before its end (or before now).
	DefaultUsageRange = 24 * time.Hour
	// DefaultUsageMaxRange is UsageLimits.MaxRange's default: 400 days,
	// a year and its neighbouring month, for yearly reports.
	DefaultUsageMaxRange = 400 * 24 * time.Hour
	// DefaultUsageMaxRecordsRange is UsageLimits.MaxRecordsRange's
	// default: 31 days, a month of rows.
	DefaultUsageMaxRecordsRange = 31 * 24 * time.Hour
)

// UsageLimits bound the ranges Usage reads. Zero fields take their
// defaults.
type UsageLimits struct {
	// MaxRange is the longest range whose totals one query may ask for;
	// default DefaultUsageMaxRange.
	MaxRange time.Duration
	// MaxRecordsRange is the longest range of a query that also lists
	// rows (IncludeRecords); default DefaultUsageMaxRecordsRange.
	MaxRecordsRange time.Duration
}

func (l UsageLimits) withDefaults() UsageLimits {
	if l.MaxRange <= 0 {
		l.MaxRange = DefaultUsageMaxRange
	}
	if l.MaxRecordsRange <= 0 {
		l.MaxRecordsRange = DefaultUsageMaxRecordsRange
	}
	return l
}

// UsageQuery selects ledger rows.
type UsageQuery struct {
	// Filter.Start zero means DefaultUsageRange before the end. Filter.End
	// zero means no upper bound, which is "until now" without excluding a
	// row written in the same instant as the query; the range's length is
	// then measured to now. The range may be at most UsageLimits.MaxRange
	// long, and with IncludeRecords at most UsageLimits.MaxRecordsRange.
	Filter         store.UsageFilter
	IncludeRecords bool
	// PageSize is the number of rows per page, 1..1000.
	PageSize int
	After    *store.UsageCursor
}

// UsageReport is the answer to a UsageQuery.
type UsageReport struct {
	Total     store.UsageTotals
	ByAccount []store.UsageTotals
	Records   []store.UsageRecord
	// Next is the cursor of the following page, nil on the last one.
	Next *store.UsageCursor
}

// Usage sums the ledger by account and, when asked, returns one page of
// rows, newest first. Reading the ledger goes to the store: it is not a hot
// path. A range longer than the limits allow is a FieldError naming the
// limit; a store read that runs too long fails with store.ErrQueryTimeout.
func (p *Pool) Usage(ctx context.Context, orgID string, q UsageQuery) (UsageReport, error) {
	f, err := p.usageRange(q)
	if err != nil {
		return UsageReport{}, err
	}
	by, err := p.store.SumUsage(ctx, orgID, f)
	if err != nil {
		return UsageReport{}, fmt.Errorf("summing usage: %w", err)
	}
	r := UsageReport{ByAccount: by}
	for _, t := range by {
		r.Total.Requests += t.Requests
		r.Total.FailedRequests += t.FailedRequests
		r.Total.InputTokens += t.InputTokens
		r.Total.OutputTokens += t.OutputTokens
		r.Total.CacheReadTokens += t.CacheReadTokens
		r.Total.CacheCreationTokens += t.CacheCreationTokens
		r.Total.CostUSD += t.CostUSD
	}
	if q.IncludeRecords {
		r.Records, r.Next, err = p.store.ListUsage(ctx, orgID, f, q.PageSize, q.After)
		if err != nil {
			return UsageReport{}, fmt.Errorf("listing usage: %w", err)
		}
	}
	return r, nil
}

// usageRange returns q's filter with its default start, or a FieldError
// when its range is longer than the limits allow.
func (p *Pool) usageRange(q UsageQuery) (store.UsageFilter, error) {
	f := q.Filter
	end := f.End
	if end.IsZero() {
		end = p.now()
	}
	if f.Start.IsZero() {
		f.Start = end.Add(-DefaultUsageRange)
	}
	span := end.Sub(f.Start)
	switch {
	case q.IncludeRecords && span > p.usage.MaxRecordsRange:
		return store.UsageFilter{}, &FieldError{Field: "start_time", Problem: fmt.Sprintf(
			"with include_records the range may span at most %s, and [start_time, end_time) spans %s; list a shorter range, page by page, or ask for the totals alone (up to %s)",
			days(p.usage.MaxRecordsRange), days(span), days(p.usage.MaxRange))}
	case span > p.usage.MaxRange:
		return store.UsageFilter{}, &FieldError{Field: "start_time", Problem: fmt.Sprintf(
			"the range may span at most %s, and [start_time, end_time) spans %s; sum several shorter ranges",
			days(p.usage.MaxRange), days(span))}
	}
	return f, nil
}

// days shows a range in days when it is long enough to be counted so.
func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%.4g days", d.Hours()/24)
	}
	return d.Round(time.Second).String()
}
