// Package pgstore is the PostgreSQL store.Store, for production. It runs on
// a pgx connection pool that connects as migrations.AppRole, against the
// schema in migrations/activity. It passes the whole storetest suite, like
// every backend; a difference from memstore is a bug in one of them.
//
// # Tenancy
//
// Every statement but the sweep's (see below) runs for one organization:
// queued in a batch after pgxutil.QueueTenant, so row-level security shows
// it that organization's rows only and rejects writes of any other. The
// setting is transaction-local (set_config's is_local), so in a group
// commit, which holds several organizations' writes in one transaction,
// each organization's writes follow their own QueueTenant, which replaces
// the previous one's setting, and none outlives the transaction. The
// queries also name the organization in their WHERE clauses, which is what
// lets them use the primary key and the (organization_id, ...) indexes;
// row-level security is the guarantee behind them.
//
// # Group commit, one round trip per call
//
// Each method for one organization sends one pgx batch: the tenant setting
// and one to three statements, pipelined, and a write's batch ends with
// the change feed's stamping (AbandonExpired, for none, sends one
// statement). A batch sent outside a transaction runs as one implicit
// transaction, committed when the server reaches its end, and a method
// returns only after reading that outcome, so an acknowledged write is a
// committed one. (The first time a connection sees a statement, pgx
// spends one extra round trip preparing it; after that the statement is
// cached.)
//
// The three writes, CreateActivity, AppendProgress and CompleteActivity,
// are group-committed (groupcommit.go): a writer goroutine (two by
// default, each with its own share of the organizations) sends the writes
// of every caller queued while its previous batch ran in one batch, so
// concurrent writes share one transaction, one round trip and one WAL
// flush, and each caller is answered after that transaction committed.
// Each write's statements are the same as alone, after the tenant setting
// of its organization; writes are ordered by (organization, activity id),
// keeping queue order within an activity, so batches lock rows in one
// order and do not deadlock each other. A batch the database rejects is
// retried one write at a time, so that each gets its own result. The reads
// (GetActivity, ListActivities, ChangesSince, RecentChangesStart) and
// AbandonExpired are sent by their callers, as before. Call Close before
// closing the pool.
//
// The statements rely on READ COMMITTED, PostgreSQL's default, in which
// every statement of the batch takes a fresh snapshot, which also shows
// what the batch's earlier statements wrote. That is how a write that lost
// a race learns what won it in the same round trip: the statement after
// the write sees whatever the write waited for, whether another
// transaction or an earlier write of the same batch.
//
//   - CreateActivity: INSERT ... ON CONFLICT DO NOTHING, then a SELECT of
//     the row. Of concurrent creates one inserts; the others wait for it
//     to commit (or follow it in the batch), insert nothing and read the
//     winner's row.
//   - AppendProgress: one statement increments activities.progress_count
//     with an UPDATE whose WHERE clause requires RUNNING and fewer than
//     store.MaxProgressEvents events, and inserts the event numbered by
//     the new count. The row lock serializes concurrent appends, and a
//     failed insert rolls the increment back, so numbers have no gaps. When
//     the UPDATE matches nothing, the next statement reads the status and
//     count to say why.
//   - CompleteActivity: an UPDATE ... WHERE status = ANY(the statuses
//     the completion may end), so exactly one of concurrent completions
//     matches, then a SELECT of the row: the result when the UPDATE
//     matched, the stored activity returned with store.ErrAlreadyEnded
//     when it did not.
//
// # Abandoning, across organizations
//
// AbandonExpired is the one call that acts for no organization: it calls
// the SQL function abandon_expired (migrations/activity/00002), which the
// service role may execute but not change. The function runs as the schema
// owner (SECURITY DEFINER, on a fixed search_path) and does one bounded
// UPDATE ... RETURNING over the partial index of running activities by
// deadline, skipping rows that other transactions hold. Row-level security
// stays forced on the tables; the migration explains how the function
// passes it. The service role itself gains no way to read another
// organization's rows: the function returns a count.
//
// # Change feed
//
// Every change numbers its activity from the sequence activity_change_seq
// (activities.change_seq, migrations/activity/00003); ChangesSince is
// keyset pagination on (organization_id, change_seq) and RecentChangesStart
// walks that index backwards (changes.go). For a cursor to be exact, an
// organization's numbers must become visible in order, which concurrent
// transactions drawing nextval() would not give: so no write draws its
// number as it writes. Each group commit ends with one statement,
// stamp_activity_changes (stamp.go), which takes the change lock (a
// transaction-level advisory lock) of every organization in the batch and
// then numbers the activities the batch changed; the locks are released
// by the commit. The reaper's abandon_expired takes the same locks, in the
// same order, before it numbers what it abandons. An organization's
// writers therefore commit their changes one after another, which is why
// the writers are chosen by organization.
//
// # Errors
//
// pgxutil.Classify sorts the failures. Those a retry may fix (no
// connection, the server shutting down or out of connections, a
// serialization failure) wrap store.ErrUnavailable; a write whose
// connection broke or timed out after it may have reached the server wraps
// store.ErrOutcomeUnknown instead, since it may have been applied. The api
// layer answers both with Unavailable. A call whose context ended reports
// the context's error instead; for a write already on its way in a group
// commit the error also wraps store.ErrOutcomeUnknown, since that write
// may still commit. A group commit that gets no answer within its flush
// timeout fails its writes with store.ErrOutcomeUnknown. Writes after
// Close fail with store.ErrUnavailable.
//
// # Listing
//
// ListActivities is keyset pagination on (start_time DESC, id DESC), the
// order of the three activities indexes, with the cursor as a row
// comparison. It ranks at most Limit+1 candidates on the server, measures
// their payload there, and sends back only those within the page and its
// byte budget, plus whether more exist: the look-ahead row that tells the
// caller another page follows never crosses the wire.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// Store is a PostgreSQL store.Store. The zero value is not usable; call New.
type Store struct {
	pool   *pgxpool.Pool
	writes *committer
}

var _ store.Store = (*Store)(nil)

// Option tunes a Store; every one has a default.
type Option func(*config)

type config struct {
	maxBatch     int
	writers      int
	flushTimeout time.Duration
	meter        metric.MeterProvider
}

// WithMaxBatch bounds how many writes one group commit carries; default
// 256. 1 turns group commit off: each write is its own transaction, sent
// from its caller's goroutine under its caller's context.
func WithMaxBatch(n int) Option { return func(c *config) { c.maxBatch = n } }

// WithFlushTimeout bounds each group commit, so that a hung database
// fails its writes instead of holding them forever (with
// store.ErrOutcomeUnknown, since they may commit later); default 10s.
func WithFlushTimeout(d time.Duration) Option { return func(c *config) { c.flushTimeout = d } }

// WithMeter records the group commit's metrics through mp:
// switchyard.activity.flush.duration and switchyard.activity.flush.writes,
// by outcome. Without it there are none.
func WithMeter(mp metric.MeterProvider) Option { return func(c *config) { c.meter = mp } }

// WithWriters sets how many group commits may run at once, each on its own
// connection with its own queue; default 2. An organization's writes always
// go to the same writer, so they keep their order and writers never wait
// for each other's row locks or change locks. Each writer's batch runs on
// one database backend, so one writer is bound by one database core; more
// writers use more, at the price of smaller batches (more WAL flushes).
func WithWriters(n int) Option { return func(c *config) { c.writers = n } }

// New returns a store on pool, which must connect as migrations.AppRole to
// a database migrated with migrations.Activity, and starts its group-commit
// writers. The caller keeps owning the pool: it calls Close, then closes the
// pool.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	cfg := config{maxBatch: 256, writers: 2, flushTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&cfg)
	}
	if cfg.maxBatch <= 0 {
		cfg.maxBatch = 256
	}
	if cfg.writers <= 0 {
		cfg.writers = 2
	}
	if cfg.flushTimeout <= 0 {
		cfg.flushTimeout = 10 * time.Second
	}
	return &Store{pool: pool, writes: newCommitter(pool, cfg)}
}

// Close stops the group commit after writing every write already handed
// to it and answering its caller; CreateActivity, AppendProgress and
// CompleteActivity calls after Close fail with store.ErrUnavailable (reads
// go on until the pool closes). It does not close the pool. Close is
// idempotent.
func (s *Store) Close() { s.writes.close() }

const activityColumns = `organization_id, id, session_id, user_id, agent_type, agent_name, category, status,
	input_data, output_data, error_message, metadata, start_time, complete_time, deadline`

const selectActivitySQL = `SELECT ` + activityColumns + `
	FROM activities WHERE organization_id = $1 AND id = $2`

const insertActivitySQL = `INSERT INTO activities
	(organization_id, id, session_id, user_id, agent_type, agent_name, category, status, input_data, metadata, start_time, deadline)
	VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10, $11)
	ON CONFLICT (organization_id, id) DO NOTHING`

// CreateActivity implements store.Store.
func (s *Store) CreateActivity(ctx context.Context, orgID string, na store.NewActivity) (store.Activity, bool, error) {
	input, err := encode(na.Input)
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("encoding input: %w", err)
	}
	metadata, err := encode(na.Metadata)
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("encoding metadata: %w", err)
	}
	w := &createWrite{org: orgID, na: na, input: input, metadata: metadata}
	if err := s.writes.do(ctx, orgID, na.ID, "creating activity", w); err != nil {
		return store.Activity{}, false, err
	}
	return w.stored, w.created, nil
}

type createWrite struct {
	org             string
	na              store.NewActivity
	input, metadata []byte

	created bool
	row     rawActivity
	err     error
	stored  store.Activity
}

func (w *createWrite) queue(b *pgx.Batch) {
	w.created, w.row, w.err = false, rawActivity{}, nil
	na := w.na
	b.Queue(insertActivitySQL, w.org, na.ID, na.SessionID, na.UserID, na.AgentType, na.AgentName, na.Category,
		w.input, w.metadata, na.StartTime, nullTime(na.Deadline),
	).Exec(func(tag pgconn.CommandTag) error {
		w.created = tag.RowsAffected() == 1
		return nil
	})
	// A fresh snapshot: it sees the row this batch inserted or, after a
	// lost race, the winner's, which the INSERT waited for.
	b.Queue(selectActivitySQL, w.org, na.ID).QueryRow(func(row pgx.Row) error {
		return keep(&w.err, row.Scan(w.row.dest()...))
	})
}

func (w *createWrite) settle() error {
	if w.err != nil {
		return fmt.Errorf("creating activity: %w", w.err)
	}
	var err error
	if w.stored, err = w.row.decode(); err != nil {
		return fmt.Errorf("creating activity: %w", err)
	}
	return nil
}

// appendProgressSQL counts and inserts in one statement, so an event is
// numbered exactly when it is stored. progress_count < $3 keeps the limit
// under concurrency: appends of one activity queue on its row lock, and
// each re-checks the WHERE clause against the row its predecessor left.
const appendProgressSQL = `WITH counted AS (
		UPDATE activities SET progress_count = progress_count + 1
		WHERE organization_id = $1 AND id = $2 AND status = 'running' AND progress_count < $3
		RETURNING organization_id, id, progress_count
	)
	INSERT INTO progress_events (organization_id, activity_id, sequence, message, data, create_time)
	SELECT organization_id, id, progress_count, $4, $5, $6 FROM counted
	RETURNING sequence, data, create_time`

const progressStateSQL = `SELECT status, progress_count FROM activities WHERE organization_id = $1 AND id = $2`

// AppendProgress implements store.Store.
func (s *Store) AppendProgress(ctx context.Context, orgID, activityID string, ev store.NewProgressEvent) (store.ProgressEvent, error) {
	data, err := encode(ev.Data)
	if err != nil {
		return store.ProgressEvent{}, fmt.Errorf("encoding progress data: %w", err)
	}
	w := &appendWrite{org: orgID, id: activityID, ev: ev, data: data}
	if err := s.writes.do(ctx, orgID, activityID, "appending progress", w); err != nil {
		return store.ProgressEvent{}, err
	}
	return w.event, nil
}

type appendWrite struct {
	org, id string
	ev      store.NewProgressEvent
	data    []byte

	appended, exists bool
	sequence         int64
	stored           []byte
	at               time.Time
	status           string
	count            int
	err              error
	event            store.ProgressEvent
}

func (w *appendWrite) queue(b *pgx.Batch) {
	w.appended, w.exists, w.sequence, w.stored, w.at, w.status, w.count, w.err = false, false, 0, nil, time.Time{}, "", 0, nil
	b.Queue(appendProgressSQL, w.org, w.id, store.MaxProgressEvents, w.ev.Message, w.data, w.ev.CreateTime).QueryRow(func(row pgx.Row) error {
		switch err := row.Scan(&w.sequence, &w.stored, &w.at); {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // the next statement says why
		case err != nil:
			return keep(&w.err, err)
		}
		w.appended = true
		return nil
	})
	// Read after the append, in a fresh snapshot: when the UPDATE found
	// the activity ended or full only after waiting for a concurrent
	// writer, this sees what that writer committed.
	b.Queue(progressStateSQL, w.org, w.id).QueryRow(func(row pgx.Row) error {
		switch err := row.Scan(&w.status, &w.count); {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return keep(&w.err, err)
		}
		w.exists = true
		return nil
	})
}

func (w *appendWrite) settle() error {
	switch {
	case w.err != nil:
		return fmt.Errorf("appending progress: %w", w.err)
	case w.appended:
		data, err := decode(w.stored)
		if err != nil {
			return fmt.Errorf("appending progress: %w", err)
		}
		w.event = store.ProgressEvent{ActivityID: w.id, Sequence: w.sequence, Message: w.ev.Message, Data: data, CreateTime: w.at.UTC()}
		return nil
	case w.exists && store.Status(w.status).Ended():
		return store.ErrAlreadyEnded
	case w.exists && w.count >= store.MaxProgressEvents:
		return store.ErrProgressLimit
	default:
		// Either there is no such activity, or it was created after the
		// UPDATE took its snapshot: the append came first.
		return store.ErrNotFound
	}
}

// completeSQL ends an activity in one of the statuses $8. The metadata
// merge is jsonb's || with NULL for an empty object on both sides, as
// memstore keeps it.
const completeSQL = `UPDATE activities SET
		status = $3,
		output_data = $4,
		error_message = $5,
		metadata = NULLIF(COALESCE(metadata, '{}') || COALESCE($6::jsonb, '{}'), '{}'),
		complete_time = GREATEST($7::timestamptz, start_time)
	WHERE organization_id = $1 AND id = $2 AND status = ANY($8::text[])`

// CompleteActivity implements store.Store.
func (s *Store) CompleteActivity(ctx context.Context, orgID, activityID string, c store.Completion) (store.Activity, error) {
	output, err := encode(c.Output)
	if err != nil {
		return store.Activity{}, fmt.Errorf("encoding output: %w", err)
	}
	metadata, err := encode(c.Metadata)
	if err != nil {
		return store.Activity{}, fmt.Errorf("encoding metadata: %w", err)
	}
	w := &completeWrite{org: orgID, id: activityID, c: c, from: c.FromStatuses(), output: output, metadata: metadata}
	switch err := s.writes.do(ctx, orgID, activityID, "completing activity", w); {
	case errors.Is(err, store.ErrAlreadyEnded):
		return w.stored, err
	case err != nil:
		return store.Activity{}, err
	}
	return w.stored, nil
}

type completeWrite struct {
	org, id          string
	c                store.Completion
	from             []store.Status
	output, metadata []byte

	completed, exists bool
	row               rawActivity
	err               error
	stored            store.Activity
}

func (w *completeWrite) queue(b *pgx.Batch) {
	w.completed, w.exists, w.row, w.err = false, false, rawActivity{}, nil
	fromText := make([]string, len(w.from))
	for i, st := range w.from {
		fromText[i] = string(st)
	}
	c := w.c
	b.Queue(completeSQL, w.org, w.id, string(c.Status), w.output, c.ErrorMessage, w.metadata, c.CompleteTime, fromText).Exec(func(tag pgconn.CommandTag) error {
		w.completed = tag.RowsAffected() == 1
		return nil
	})
	// The row as this batch left it, or, in a fresh snapshot, as the
	// completion that won a race left it.
	b.Queue(selectActivitySQL, w.org, w.id).QueryRow(func(row pgx.Row) error {
		switch err := row.Scan(w.row.dest()...); {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return keep(&w.err, err)
		}
		w.exists = true
		return nil
	})
}

func (w *completeWrite) settle() error {
	if w.err != nil {
		return fmt.Errorf("completing activity: %w", w.err)
	}
	if w.exists {
		var err error
		if w.stored, err = w.row.decode(); err != nil {
			return fmt.Errorf("completing activity: %w", err)
		}
	}
	switch {
	case w.completed:
		return nil
	case w.exists && !slices.Contains(w.from, w.stored.Status):
		return store.ErrAlreadyEnded
	default:
		// No such activity, or one created after the UPDATE's snapshot.
		w.stored = store.Activity{}
		return store.ErrNotFound
	}
}

// AbandonExpired implements store.Store: one statement, outside any
// tenant (see the package comment).
func (s *Store) AbandonExpired(ctx context.Context, now time.Time, grace time.Duration, limit int) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT abandon_expired($1, $2, $3)`, now, grace, limit).Scan(&n); err != nil {
		return 0, wrap(ctx, "abandoning expired activities", err)
	}
	return n, nil
}

// scanActivity reads a row of activityColumns, followed by extra columns
// into extra.
func scanActivity(row pgx.Row, extra ...any) (store.Activity, error) {
	var r rawActivity
	if err := row.Scan(r.dest(extra...)...); err != nil {
		return store.Activity{}, err
	}
	return r.decode()
}

// rawActivity is a row of activityColumns as scanned, its JSON not yet
// decoded: a write's callbacks only scan, and decode once the batch is
// done (see keep).
type rawActivity struct {
	a                       store.Activity
	status                  string
	input, output, metadata []byte
	complete, deadline      *time.Time
}

// dest is where a row of activityColumns, followed by extra columns, scans.
func (r *rawActivity) dest(extra ...any) []any {
	return append([]any{
		&r.a.OrganizationID, &r.a.ID, &r.a.SessionID, &r.a.UserID, &r.a.AgentType, &r.a.AgentName, &r.a.Category, &r.status,
		&r.input, &r.output, &r.a.ErrorMessage, &r.metadata, &r.a.StartTime, &r.complete, &r.deadline,
	}, extra...)
}

func (r *rawActivity) decode() (store.Activity, error) {
	a := r.a
	a.Status = store.Status(r.status)
	a.StartTime = a.StartTime.UTC()
	if r.complete != nil {
		a.CompleteTime = r.complete.UTC()
	}
	if r.deadline != nil {
		a.Deadline = r.deadline.UTC()
	}
	var err error
	if a.Input, err = decode(r.input); err != nil {
		return store.Activity{}, fmt.Errorf("decoding input of activity %s: %w", a.ID, err)
	}
	if a.Output, err = decode(r.output); err != nil {
		return store.Activity{}, fmt.Errorf("decoding output of activity %s: %w", a.ID, err)
	}
	if a.Metadata, err = decode(r.metadata); err != nil {
		return store.Activity{}, fmt.Errorf("decoding metadata of activity %s: %w", a.ID, err)
	}
	return a, nil
}

// nullTime sends the zero time as SQL NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// encode turns an empty object into SQL NULL: the store contract makes an
// empty object and no object the same, and memstore keeps both as nil. A
// nil []byte is sent as NULL, never as the JSON null.
func encode(m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

func decode(b []byte) (map[string]any, error) {
	if b == nil {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// storeErrors tags PostgreSQL errors with the store's sentinels.
var storeErrors = pgxutil.StoreErrors{Unavailable: store.ErrUnavailable, OutcomeUnknown: store.ErrOutcomeUnknown}

// wrap is the error of a call that may have written (see
// pgxutil.StoreErrors.Write).
func wrap(ctx context.Context, doing string, err error) error {
	return storeErrors.Write(ctx, doing, err)
}

// wrapRead is the error of a call that changes nothing.
func wrapRead(ctx context.Context, doing string, err error) error {
	return storeErrors.Read(ctx, doing, err)
}
