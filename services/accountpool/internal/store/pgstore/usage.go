package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// DefaultUsageTimeout is Config.UsageTimeout's default.
const DefaultUsageTimeout = 5 * time.Second

// Usage reads. They are the store's only reads whose cost grows with the
// data (the ledger), so three things bound them:
//
//   - SumUsage reads the hourly rollups (migration 5, maintained by a
//     trigger in the ledger's own INSERT statement) for the whole hours of
//     its range, and the ledger only for the partial hours at its edges: at
//     most two hours of rows, found through the (organization_id,
//     create_time) index. Its cost follows the range and the number of
//     (account, model) pairs active in it, not the size of the ledger.
//   - Every read runs under a statement timeout (Config.UsageTimeout), set
//     transaction-locally in the read's own batch; a read it stops fails
//     with store.ErrQueryTimeout. The setting covers the execution of the
//     read, not the preparation pgx sends before it for a statement it has
//     not cached yet; a dedicated UsageDB should also set the timeout on
//     its connections (the service does: pgxutil.WithStatementTimeout).
//   - They run on Config.UsageDB, a pool apart from the hot path's, so a
//     caller looping them waits for that pool's connections (within its
//     own deadline) instead of taking the ones selection and the ledger's
//     group commit need.
//
// The range callers may ask for is bounded above the store (pool.Usage).

// usageRead sends one tenant-scoped batch on the usage pool: the tenant,
// the statement timeout, then the query.
func (s *Store) usageRead(ctx context.Context, org, doing, query string, args []any, scan func(pgx.Rows) error) error {
	if org == "" {
		return errors.New("empty organization id")
	}
	b := &pgx.Batch{}
	// "0" would turn the timeout off: at least 1 ms, as pgxutil sets it.
	b.Queue(setTenantAndTimeoutSQL, org, strconv.FormatInt(max(s.usageTimeout.Milliseconds(), 1), 10))
	b.Queue(query, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	err := s.usageDB.SendBatch(ctx, b).Close()
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == pgerrcode.QueryCanceled && ctx.Err() == nil {
		return fmt.Errorf("the query ran longer than the %s a usage query may take: %w", s.usageTimeout, store.ErrQueryTimeout)
	}
	return wrapRead(ctx, doing, err)
}

// setTenantAndTimeoutSQL is pgxutil.QueueTenant's setting plus the
// statement timeout (milliseconds), both local to the batch's implicit
// transaction.
const setTenantAndTimeoutSQL = `SELECT set_config('` + migrations.TenantSetting + `', $1, true), set_config('statement_timeout', $2, true)`

// usageWhere builds the WHERE clause of a ledger or rollup query: only
// the filters that are set, each as a parameter, so the planner sees plain
// predicates it can match to the indexes.
type usageWhere struct {
	sql  strings.Builder
	args *[]any
}

func newUsageWhere(args *[]any) *usageWhere { return &usageWhere{args: args} }

func (w *usageWhere) param(v any) string {
	*w.args = append(*w.args, v)
	return "$" + strconv.Itoa(len(*w.args))
}

func (w *usageWhere) add(cond string, v any) {
	if w.sql.Len() == 0 {
		w.sql.WriteString(" WHERE ")
	} else {
		w.sql.WriteString(" AND ")
	}
	w.sql.WriteString(cond + w.param(v))
}

// ledgerWhere filters the ledger by organization, [start, end) (a zero
// bound is none) and account.
func ledgerWhere(args *[]any, orgID string, start, end time.Time, accountID string) string {
	w := newUsageWhere(args)
	w.add("organization_id = ", orgID)
	if !start.IsZero() {
		w.add("create_time >= ", start)
	}
	if !end.IsZero() {
		w.add("create_time < ", end)
	}
	if accountID != "" {
		w.add("account_id = ", accountID)
	}
	return w.sql.String()
}

// canonicalAccount returns the account filter as the rollups spell it
// (canonical lower-case UUID) and false when it names no account.
func canonicalAccount(id string) (string, bool) {
	if id == "" {
		return "", true
	}
	if !isUUID(id) {
		return "", false
	}
	return uuid.MustParse(id).String(), true
}

// hourSpan splits [start, end) into the whole hours [lo, hi) the rollups
// answer and the partial edges the ledger does. A zero start or end is
// unbounded, and so is the matching lo or hi. whole is false when the
// range holds no whole hour; then the ledger answers all of it, which is
// less than two hours of rows.
func hourSpan(start, end time.Time) (lo, hi time.Time, whole bool) {
	if !start.IsZero() {
		lo = start.Truncate(time.Hour)
		if lo.Before(start) {
			lo = lo.Add(time.Hour)
		}
	}
	if !end.IsZero() {
		hi = end.Truncate(time.Hour)
	}
	return lo, hi, lo.IsZero() || hi.IsZero() || lo.Before(hi)
}

// rollupColumns and ledgerColumns are the two halves of SumUsage's UNION:
// a rollup row, or a ledger row made to look like one.
const (
	rollupColumns = `account_id, legacy_name, last_time, last_id, last_name, requests, failed_requests,
		input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd`
	ledgerColumns = `COALESCE(account_id::text, ''), CASE WHEN account_id IS NULL THEN account_name ELSE '' END,
		create_time, id, account_name, 1::bigint, CASE WHEN outcome <> 'success' THEN 1 ELSE 0 END::bigint,
		input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd`
)

// SumUsage implements store.Store from the hourly rollups plus the ledger
// rows of the range's partial edge hours. It groups exactly as the ledger
// would (per account; legacy rows per account name), the account name is
// the one on the newest row summed (each rollup row keeps its newest), and
// the order (name, then id) uses the "C" collation so it matches
// memstore's byte order. Totals are exact: the rollups hold precisely the
// rows the ledger holds (see migration 5). Costs are float sums, added in
// another order than a scan of the ledger would.
func (s *Store) SumUsage(ctx context.Context, orgID string, f store.UsageFilter) ([]store.UsageTotals, error) {
	account, ok := canonicalAccount(f.AccountID)
	if !ok {
		return nil, nil
	}
	query, args := sumUsageQuery(orgID, store.Normalize(f.Start), store.Normalize(f.End), account)
	var out []store.UsageTotals
	err := s.usageRead(ctx, orgID, "summing usage", query, args, func(rows pgx.Rows) error {
		var t store.UsageTotals
		if err := rows.Scan(&t.AccountID, &t.AccountName, &t.Requests, &t.FailedRequests, &t.InputTokens,
			&t.OutputTokens, &t.CacheReadTokens, &t.CacheCreationTokens, &t.CostUSD); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListUsage implements store.Store with keyset pagination on
// (create_time, id) descending: the order of usage_records_org_time, and,
// with an account filter, of usage_records_org_account_time_id, so a page
// is one index range scan and no sort. It reads one row more than asked
// to learn whether another page exists.
func (s *Store) ListUsage(ctx context.Context, orgID string, f store.UsageFilter, limit int, after *store.UsageCursor) ([]store.UsageRecord, *store.UsageCursor, error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("listing usage: limit must be positive, got %d", limit)
	}
	account, ok := canonicalAccount(f.AccountID)
	if !ok {
		return nil, nil, nil
	}
	if after != nil && !isUUID(after.ID) {
		return nil, nil, fmt.Errorf("listing usage: the cursor's row id is not a UUID")
	}
	query, args := listUsageQuery(orgID, f, account, limit, after)
	var rows []store.UsageRecord
	err := s.usageRead(ctx, orgID, "listing usage", query, args, func(rs pgx.Rows) error {
		r, err := scanUsage(rs)
		if err != nil {
			return err
		}
		rows = append(rows, r)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(rows) <= limit {
		return rows, nil, nil
	}
	rows = rows[:limit]
	last := rows[limit-1]
	return rows, &store.UsageCursor{CreateTime: last.CreateTime, ID: last.ID}, nil
}

// listUsageQuery is ListUsage's statement: f's rows after the cursor,
// newest first, one more than limit.
func listUsageQuery(orgID string, f store.UsageFilter, account string, limit int, after *store.UsageCursor) (string, []any) {
	var args []any
	where := ledgerWhere(&args, orgID, store.Normalize(f.Start), store.Normalize(f.End), account)
	w := newUsageWhere(&args)
	if after != nil {
		where += " AND (create_time, id) < (" + w.param(store.Normalize(after.CreateTime)) + ", " + w.param(after.ID) + "::uuid)"
	}
	// Qualified: a bare "id" would name the output column id::text, and
	// ordering by that text (same order, another type) cannot follow the
	// index, so every page would sort the whole range.
	return `SELECT ` + usageColumns + ` FROM usage_records` + where +
		` ORDER BY usage_records.create_time DESC, usage_records.id DESC LIMIT ` + w.param(limit+1), args
}

// sumUsageQuery is SumUsage's statement over [start, end): the rollups of
// the whole hours, UNION ALL the ledger rows of the partial ones.
func sumUsageQuery(orgID string, start, end time.Time, account string) (string, []any) {
	lo, hi, whole := hourSpan(start, end)
	var (
		args  []any
		parts []string
	)
	if !whole {
		parts = append(parts, `SELECT `+ledgerColumns+` FROM usage_records`+ledgerWhere(&args, orgID, start, end, account))
	} else {
		w := newUsageWhere(&args)
		w.add("organization_id = ", orgID)
		if !lo.IsZero() {
			w.add("bucket >= ", lo)
		}
		if !hi.IsZero() {
			w.add("bucket < ", hi)
		}
		if account != "" {
			w.add("account_id = ", account)
		}
		parts = append(parts, `SELECT `+rollupColumns+` FROM usage_rollups`+w.sql.String())
		if !start.IsZero() && start.Before(lo) {
			parts = append(parts, `SELECT `+ledgerColumns+` FROM usage_records`+ledgerWhere(&args, orgID, start, lo, account))
		}
		if !end.IsZero() && hi.Before(end) {
			parts = append(parts, `SELECT `+ledgerColumns+` FROM usage_records`+ledgerWhere(&args, orgID, hi, end, account))
		}
	}
	query := `SELECT * FROM (
		SELECT p.account_id,
			(array_agg(p.last_name ORDER BY p.last_time DESC, p.last_id DESC))[1] AS account_name,
			sum(p.requests)::bigint, sum(p.failed_requests)::bigint,
			sum(p.input_tokens)::bigint, sum(p.output_tokens)::bigint,
			sum(p.cache_read_tokens)::bigint, sum(p.cache_creation_tokens)::bigint, sum(p.cost_usd)
		FROM (` + strings.Join(parts, " UNION ALL ") + `) AS p (` + rollupColumns + `)
		GROUP BY p.account_id, p.legacy_name
	) t ORDER BY t.account_name COLLATE "C", t.account_id COLLATE "C"`
	return query, args
}
