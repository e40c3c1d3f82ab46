package pool

import (
	"context"
	"fmt"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// UsageQuery selects ledger rows.
type UsageQuery struct {
	// Filter.End zero means no upper bound, which is "until now" without
	// excluding a row written in the same instant as the query.
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
// path.
func (p *Pool) Usage(ctx context.Context, orgID string, q UsageQuery) (UsageReport, error) {
	by, err := p.store.SumUsage(ctx, orgID, q.Filter)
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
		r.Records, r.Next, err = p.store.ListUsage(ctx, orgID, q.Filter, q.PageSize, q.After)
		if err != nil {
			return UsageReport{}, fmt.Errorf("listing usage: %w", err)
		}
	}
	return r, nil
}
