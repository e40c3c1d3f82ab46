package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// ledger writes usage rows by group commit. RecordRequest is on every
// model call's path, and a transaction per row would cost a round trip and
// a WAL flush each; instead one goroutine takes every row queued while its
// previous write ran (up to maxBatch), writes them in one transaction, and
// answers each caller only after that transaction committed. Under load the
// batches grow by themselves; with one caller at a time a row waits for
// nothing but its own write.
//
// A write is one pgx.Batch sent outside a transaction, hence one implicit
// transaction and one round trip: for each organization in the batch, the
// tenant setting and a multi-row INSERT ... ON CONFLICT DO NOTHING
// RETURNING the ids it inserted. Only when the INSERT skipped keys (a
// retried RecordRequest) does a second round trip read the rows that hold
// them. That read may follow the commit because the ledger is insert-only
// (the service role has no UPDATE or DELETE on it): a row that held a key
// at the INSERT holds it, unchanged, forever. It cannot be a later
// statement of the same batch without running on every write, and it
// cannot be part of the INSERT statement, whose snapshot would not see a
// conflicting row committed while the INSERT waited for it.
//
// Each INSERT also maintains the hourly usage_rollups SumUsage reads: a
// statement-level trigger (migration 5) adds the per-hour sums of the rows
// the statement inserted, in one INSERT ... ON CONFLICT DO UPDATE, in the
// same transaction. A row refused as a duplicate is not among them, so the
// rollups never count it; a write that fails rolls both back.
type ledger struct {
	db           *pgxpool.Pool
	maxBatch     int
	flushTimeout time.Duration

	// mu guards closed and the send on queue, so close can close queue
	// knowing no sender is inside enqueue.
	mu     sync.RWMutex
	closed bool
	queue  chan *pendingRow
	done   chan struct{}

	// metrics are the group commit's instruments.
	metrics pgxutil.FlushMetrics
	// flushes and rows count committed writes, for tests and benchmarks.
	flushes, rows atomic.Int64
}

type pendingRow struct {
	ctx    context.Context
	row    store.UsageRecord
	result chan rowResult // buffered: the writer never waits for a caller
}

type rowResult struct {
	row store.UsageRecord
	err error
}

// usageKey identifies one upstream call: its request id and attempt, and
// the upstream's own request id (a retried RecordRequest repeats it; a
// second real call under the same attempt has a new one).
type usageKey struct {
	org, requestID, upstreamID string
	attempt                    int32
}

func keyOf(r store.UsageRecord) usageKey {
	return usageKey{r.OrganizationID, r.RequestID, r.UpstreamRequestID, r.Attempt}
}

func newLedger(db *pgxpool.Pool, maxBatch int, flushTimeout time.Duration, mp metric.MeterProvider) *ledger {
	l := &ledger{
		db:           db,
		maxBatch:     maxBatch,
		flushTimeout: flushTimeout,
		queue:        make(chan *pendingRow, maxBatch),
		done:         make(chan struct{}),
	}
	l.metrics = pgxutil.NewFlushMetrics(mp, pgxutil.FlushMetricNames{
		Scope:  "github.com/switchyard-dev/switchyard/services/accountpool/internal/store/pgstore",
		Prefix: "switchyard.ledger.flush", What: "one usage-ledger group commit",
		Items: "rows", Unit: "{row}", ItemsDescription: "Usage rows per group commit, by outcome.",
	})
	go l.run()
	return l
}

func duplicate(r store.UsageRecord) error {
	return fmt.Errorf("inserting usage for request %q attempt %d: %w", r.RequestID, r.Attempt, store.ErrDuplicate)
}

// insert hands r to the writer and waits for its transaction, or for ctx.
func (l *ledger) insert(ctx context.Context, r store.UsageRecord) (store.UsageRecord, error) {
	switch {
	case r.OrganizationID == "":
		return store.UsageRecord{}, errors.New("inserting usage: empty organization id")
	case !isUUID(r.ID):
		return store.UsageRecord{}, fmt.Errorf("inserting usage for request %q attempt %d: the row id is not a UUID", r.RequestID, r.Attempt)
	case r.AccountID != "" && !isUUID(r.AccountID):
		return store.UsageRecord{}, fmt.Errorf("inserting usage for request %q attempt %d: the account id is not a UUID", r.RequestID, r.Attempt)
	}
	p := &pendingRow{ctx: ctx, row: r, result: make(chan rowResult, 1)}
	if err := l.enqueue(ctx, p); err != nil {
		return store.UsageRecord{}, err
	}
	select {
	case res := <-p.result:
		return res.row, res.err
	case <-ctx.Done():
		return store.UsageRecord{}, fmt.Errorf("inserting usage for request %q attempt %d: waiting for the ledger's commit: %w", r.RequestID, r.Attempt, ctx.Err())
	}
}

func (l *ledger) enqueue(ctx context.Context, p *pendingRow) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return fmt.Errorf("inserting usage: the store is closed: %w", store.ErrUnavailable)
	}
	select {
	case l.queue <- p:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("inserting usage for request %q attempt %d: queueing for the ledger: %w", p.row.RequestID, p.row.Attempt, ctx.Err())
	}
}

// close stops taking rows, lets the writer finish every queued one, and
// waits for it.
func (l *ledger) close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.queue)
	}
	l.mu.Unlock()
	<-l.done
}

func (l *ledger) run() {
	defer close(l.done)
	pgxutil.RunBatches(l.queue, l.maxBatch, l.flush)
}

// flush writes one batch and answers every caller in it.
func (l *ledger) flush(batch []*pendingRow) {
	// One leader per key; rows with the same key in the same batch follow
	// their leader's outcome, so the INSERT never meets itself.
	var leaders []*pendingRow
	followers := map[usageKey][]*pendingRow{}
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			// The caller gave up and was told the outcome is unknown; its
			// retry will write the row.
			p.result <- rowResult{err: err}
			continue
		}
		k := keyOf(p.row)
		if _, seen := followers[k]; seen {
			followers[k] = append(followers[k], p)
			continue
		}
		followers[k] = nil
		leaders = append(leaders, p)
	}
	if len(leaders) == 0 {
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), l.flushTimeout)
	defer cancel()
	start := time.Now()
	results, err := l.write(ctx, leaders)
	l.metrics.Observe(ctx, start, len(leaders), err)
	if err != nil && len(leaders) > 1 && !errors.Is(err, store.ErrUnavailable) {
		// The database rejected the batch, not the connection: one row it
		// will never take must not fail the rows batched with it by chance
		// (and again on every retry), so each is written alone.
		for i := range leaders {
			res, err := l.write(ctx, leaders[i:i+1])
			if err != nil {
				results[i] = rowResult{err: err}
			} else {
				results[i] = res[0]
			}
		}
	} else if err != nil {
		for i := range results {
			results[i] = rowResult{err: err}
		}
	}
	for i, p := range leaders {
		res := results[i]
		p.result <- res
		for _, f := range followers[keyOf(p.row)] {
			if res.err != nil && !errors.Is(res.err, store.ErrDuplicate) {
				f.result <- res
			} else {
				f.result <- rowResult{row: res.row, err: duplicate(f.row)}
			}
		}
	}
}

const insertUsageSQL = `INSERT INTO usage_records (id, organization_id, account_id, account_name, request_id, attempt,
		outcome, model, category, session_id, user_id, input_tokens, output_tokens, cache_read_tokens,
		cache_creation_tokens, cost_usd, http_status, error_type, upstream_request_id, duration_ms, create_time)
	SELECT u.id::uuid, $1, NULLIF(u.account_id, '')::uuid, u.account_name, u.request_id, u.attempt,
		u.outcome, u.model, u.category, u.session_id, u.user_id, u.input_tokens, u.output_tokens, u.cache_read_tokens,
		u.cache_creation_tokens, u.cost_usd, u.http_status, u.error_type, u.upstream_request_id, u.duration_ms, u.create_time
	FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::text[], $8::text[], $9::text[],
		$10::text[], $11::text[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::float8[], $17::int4[],
		$18::text[], $19::text[], $20::int8[], $21::timestamptz[])
		AS u(id, account_id, account_name, request_id, attempt, outcome, model, category, session_id, user_id,
			input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, http_status,
			error_type, upstream_request_id, duration_ms, create_time)
	ON CONFLICT (organization_id, request_id, attempt, upstream_request_id) DO NOTHING
	RETURNING id::text`

// existingUsageSQL reads the rows holding the given keys. The LATERAL
// subquery with LIMIT 1 (the key is unique) is not pulled up into a join,
// so each key is one probe of the unique index whatever the statistics
// say; as a plain join, a table without fresh statistics was planned as a
// hash join over every ledger row of the organization.
const existingUsageSQL = `SELECT u.* FROM unnest($2::text[], $3::int4[], $4::text[]) AS k(request_id, attempt, upstream_request_id)
	CROSS JOIN LATERAL (
		SELECT ` + usageColumns + ` FROM usage_records
		WHERE organization_id = $1 AND request_id = k.request_id AND attempt = k.attempt
			AND upstream_request_id = k.upstream_request_id
		LIMIT 1
	) u`

// write commits rows (whose keys are distinct) in one implicit transaction
// and returns each row's outcome in order: the row as stored, or the
// existing row with ErrDuplicate, or the error of reading that existing
// row. An error means the transaction did not commit, or, wrapping
// ErrUnavailable, that whether it did is unknown.
func (l *ledger) write(ctx context.Context, rows []*pendingRow) ([]rowResult, error) {
	// Rows go in (organization, request id, attempt, upstream id) order, so two
	// processes writing overlapping keys lock them in the same order and
	// cannot deadlock.
	byOrg := groupByOrg(rows)
	orgs := slices.Sorted(maps.Keys(byOrg))
	for _, rs := range byOrg {
		slices.SortFunc(rs, func(a, b store.UsageRecord) int {
			return cmp.Or(cmp.Compare(a.RequestID, b.RequestID), cmp.Compare(a.Attempt, b.Attempt),
				cmp.Compare(a.UpstreamRequestID, b.UpstreamRequestID))
		})
	}
	inserted := map[uuid.UUID]bool{}
	b := &pgx.Batch{}
	for _, org := range orgs {
		pgxutil.QueueTenant(b, org)
		b.Queue(insertUsageSQL, insertArgs(org, byOrg[org])...).Query(func(res pgx.Rows) error {
			for res.Next() {
				var id string
				if err := res.Scan(&id); err != nil {
					return err
				}
				inserted[uuid.MustParse(id)] = true
			}
			return res.Err()
		})
	}
	if err := l.db.SendBatch(ctx, b).Close(); err != nil {
		if ctx.Err() != nil {
			return make([]rowResult, len(rows)), fmt.Errorf("writing %d usage rows: the database did not answer within %s: %w: %w", len(rows), l.flushTimeout, store.ErrOutcomeUnknown, err)
		}
		return make([]rowResult, len(rows)), wrap(ctx, fmt.Sprintf("writing %d usage rows", len(rows)), err)
	}
	l.flushes.Add(1)
	l.rows.Add(int64(len(rows)))

	out := make([]rowResult, len(rows))
	var skipped []*pendingRow
	for i, p := range rows {
		id, _ := uuid.Parse(p.row.ID) // validated by insert
		if inserted[id] {
			out[i] = rowResult{row: p.row}
		} else {
			skipped = append(skipped, p)
		}
	}
	if len(skipped) == 0 {
		return out, nil
	}
	existing, err := l.readExisting(ctx, skipped)
	for i, p := range rows {
		id, _ := uuid.Parse(p.row.ID)
		if inserted[id] {
			continue
		}
		r, ok := existing[keyOf(p.row)]
		switch {
		case err != nil:
			out[i] = rowResult{err: err}
		case !ok:
			// Impossible while the ledger stays insert-only.
			out[i] = rowResult{err: fmt.Errorf("inserting usage for request %q attempt %d: the row holding the key is gone", p.row.RequestID, p.row.Attempt)}
		default:
			out[i] = rowResult{row: r, err: duplicate(p.row)}
		}
	}
	return out, nil
}

// readExisting reads the stored rows holding the keys of rows, in one
// round trip.
func (l *ledger) readExisting(ctx context.Context, rows []*pendingRow) (map[usageKey]store.UsageRecord, error) {
	byOrg := groupByOrg(rows)
	existing := map[usageKey]store.UsageRecord{}
	b := &pgx.Batch{}
	for org, rs := range byOrg {
		requestIDs, attempts, upstreamIDs := make([]string, len(rs)), make([]int32, len(rs)), make([]string, len(rs))
		for i, r := range rs {
			requestIDs[i], attempts[i], upstreamIDs[i] = r.RequestID, r.Attempt, r.UpstreamRequestID
		}
		pgxutil.QueueTenant(b, org)
		b.Queue(existingUsageSQL, org, requestIDs, attempts, upstreamIDs).Query(func(res pgx.Rows) error {
			for res.Next() {
				r, err := scanUsage(res)
				if err != nil {
					return err
				}
				existing[keyOf(r)] = r
			}
			return res.Err()
		})
	}
	if err := l.db.SendBatch(ctx, b).Close(); err != nil {
		return nil, wrap(ctx, fmt.Sprintf("reading %d existing usage rows", len(rows)), err)
	}
	return existing, nil
}

func groupByOrg(rows []*pendingRow) map[string][]store.UsageRecord {
	byOrg := map[string][]store.UsageRecord{}
	for _, p := range rows {
		byOrg[p.row.OrganizationID] = append(byOrg[p.row.OrganizationID], p.row)
	}
	return byOrg
}

// insertArgs turns rows into insertUsageSQL's parameters: the organization
// and one array per column.
func insertArgs(org string, rs []store.UsageRecord) []any {
	n := len(rs)
	var (
		ids, accountIDs, accountNames, requestIDs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		outcomes, models, categories, sessions    = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		users, errorTypes, upstreamIDs            = make([]string, n), make([]string, n), make([]string, n)
		attempts, httpStatuses                    = make([]int32, n), make([]int32, n)
		input, output, cacheRead, cacheCreation   = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		durations                                 = make([]int64, n)
		costs                                     = make([]float64, n)
		times                                     = make([]time.Time, n)
	)
	for i, r := range rs {
		ids[i], accountIDs[i], accountNames[i], requestIDs[i] = r.ID, r.AccountID, r.AccountName, r.RequestID
		outcomes[i], models[i], categories[i], sessions[i] = string(r.Outcome), r.Model, r.Category, r.SessionID
		users[i], errorTypes[i], upstreamIDs[i] = r.UserID, r.ErrorType, r.UpstreamRequestID
		attempts[i], httpStatuses[i] = r.Attempt, r.HTTPStatus
		input[i], output[i], cacheRead[i], cacheCreation[i] = r.InputTokens, r.OutputTokens, r.CacheReadTokens, r.CacheCreationTokens
		durations[i], costs[i], times[i] = r.DurationMS, r.CostUSD, r.CreateTime
	}
	return []any{org, ids, accountIDs, accountNames, requestIDs, attempts, outcomes, models, categories, sessions,
		users, input, output, cacheRead, cacheCreation, costs, httpStatuses, errorTypes, upstreamIDs, durations, times}
}
