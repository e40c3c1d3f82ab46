// Package pgstore is the PostgreSQL [store.Store], for production, on a
// pgxpool.Pool connected as the switchyard_app role (see migrations).
//
// Every statement is tenant-scoped: it is sent in a pgx.Batch that starts
// with pgxutil.QueueTenant, so row-level security shows it only the
// organization's rows, and the setting plus the statement cost one round
// trip (a batch sent outside a transaction is one implicit transaction).
// The one exception is ListOrganizations, which reads the organizations
// registry: ids only, no tenant's rows.
// Statements also name organization_id in their WHERE clauses: row-level
// security is the guarantee, the predicate is what the indexes serve.
// Values only ever travel as parameters.
//
// The usage ledger is written by group commit (ledger.go): concurrent
// InsertUsage calls share one transaction, and each is answered only after
// that transaction committed. Store also implements store.ChangeWatcher
// (watch.go) with LISTEN on the channel the schema's triggers notify.
// Usage reads (usage.go) sum hourly rollups instead of the ledger, under
// a statement timeout, on a pool of their own (Config.UsageDB).
//
// Errors: unique violations become store.ErrAlreadyExists (accounts) or
// store.ErrDuplicate (usage), missing rows store.ErrNotFound. Failures a
// retry may fix (pgxutil.Classify decides) wrap store.ErrUnavailable next
// to the driver's error, and a write that may have been applied although
// it failed (the connection broke or timed out after sending it) wraps
// store.ErrOutcomeUnknown instead. Error texts never include statement
// parameters.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Config tunes a Store. Every zero field takes the default its comment
// names.
type Config struct {
	// MaxBatch bounds how many usage rows one group commit writes; default
	// 256. 1 turns group commit off (one transaction per row).
	MaxBatch int
	// FlushTimeout bounds one group commit, so a hung database fails its
	// callers instead of holding them forever; default 10s.
	FlushTimeout time.Duration
	// WatchPing is how long the change feed may be silent before its
	// connection is pinged, which bounds how long a dead connection goes
	// unnoticed; default 30s.
	WatchPing time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Meter receives the ledger's flush metrics; nil for none.
	Meter metric.MeterProvider
	// UsageDB, when set, is the pool the usage reads (SumUsage, ListUsage)
	// run on, so that however many of them run, and however long, they
	// never hold a connection the hot path (selection, the ledger's group
	// commit) needs: size it small. Default: the store's own pool.
	UsageDB *pgxpool.Pool
	// UsageTimeout is the statement timeout of a usage read; a read
	// stopped by it fails with store.ErrQueryTimeout. Default 5s.
	UsageTimeout time.Duration
}

// Store is a store.Store on PostgreSQL. Create it with New and Close it
// before closing its pool.
type Store struct {
	db        *pgxpool.Pool
	logger    *slog.Logger
	watchPing time.Duration
	ledger    *ledger
	// usageDB and usageTimeout run the usage reads (usage.go).
	usageDB      *pgxpool.Pool
	usageTimeout time.Duration
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.ChangeWatcher = (*Store)(nil)
)

// New returns a store on db and starts its ledger's group-commit
// goroutine. db must connect as the application role to a schema migrated
// to migrations.AccountPool's latest version; New does not check (the
// service's readiness gate does).
func New(db *pgxpool.Pool, cfg Config) *Store {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 10 * time.Second
	}
	if cfg.WatchPing <= 0 {
		cfg.WatchPing = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UsageDB == nil {
		cfg.UsageDB = db
	}
	if cfg.UsageTimeout <= 0 {
		cfg.UsageTimeout = DefaultUsageTimeout
	}
	return &Store{
		db:           db,
		logger:       cfg.Logger,
		watchPing:    cfg.WatchPing,
		ledger:       newLedger(db, cfg.MaxBatch, cfg.FlushTimeout, cfg.Meter),
		usageDB:      cfg.UsageDB,
		usageTimeout: cfg.UsageTimeout,
	}
}

// Close stops the ledger after writing every usage row already handed to
// it and answering its caller; InsertUsage calls after Close fail with
// store.ErrUnavailable. It does not close the pool, which the caller owns.
// Close is idempotent.
func (s *Store) Close() { s.ledger.close() }

// tenant sends one batch scoped to org: the tenant setting, then whatever
// queue adds. Result callbacks registered by queue run inside, and the
// first error, theirs or the database's, is returned.
func (s *Store) tenant(ctx context.Context, org string, queue func(b *pgx.Batch)) error {
	if org == "" {
		return errors.New("empty organization id")
	}
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, org)
	queue(b)
	return s.db.SendBatch(ctx, b).Close()
}

const accountColumns = `id::text, organization_id, name, tier, status, weight, priority, quota_group, labels,
	key_ciphertext, key_version, create_time, update_time`

func scanAccount(row pgx.Row) (store.Account, error) {
	var (
		a      store.Account
		status string
	)
	err := row.Scan(&a.ID, &a.OrganizationID, &a.Name, &a.Tier, &status, &a.Weight, &a.Priority, &a.QuotaGroup,
		&a.Labels, &a.KeyCiphertext, &a.KeyVersion, &a.CreateTime, &a.UpdateTime)
	a.Status = store.Status(status)
	a.CreateTime = store.Normalize(a.CreateTime)
	a.UpdateTime = store.Normalize(a.UpdateTime)
	return a, err
}

// isUUID reports whether id can name a row: the columns are uuid, and
// PostgreSQL rejects other text where memstore would simply find nothing.
// Only the 36-character form is taken: uuid.Parse also reads forms (urn:)
// that PostgreSQL does not.
func isUUID(id string) bool {
	_, err := uuid.Parse(id)
	return err == nil && len(id) == 36
}

// CreateAccount implements store.Store. The limit holds across every
// process sharing the database: one batch (one implicit transaction, one
// round trip) takes a transaction-scoped advisory lock on the
// organization's accounts, so concurrent registrations of one organization
// run one after the other, then inserts the row only while the count,
// read after the lock was granted and so seeing every registration that
// held it before, is under the limit. Other organizations never wait (but
// for a hash collision of their lock keys). An account whose name or id
// the organization already has is inserted even at the limit, so that the
// unique index answers ErrAlreadyExists: a retried registration that was
// applied reports what it always did.
func (s *Store) CreateAccount(ctx context.Context, a store.Account, maxAccounts int) error {
	if !isUUID(a.ID) {
		return fmt.Errorf("creating account %q: the id is not a UUID", a.Name)
	}
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	var inserted int64
	err := s.tenant(ctx, a.OrganizationID, func(b *pgx.Batch) {
		args := []any{a.ID, a.OrganizationID, a.Name, a.Tier, string(a.Status), a.Weight, a.Priority, a.QuotaGroup, labels,
			nonNil(a.KeyCiphertext), a.KeyVersion, store.Normalize(a.CreateTime), store.Normalize(a.UpdateTime)}
		if maxAccounts <= 0 {
			b.Queue(`INSERT INTO accounts (id, organization_id, name, tier, status, weight, priority, quota_group, labels,
					key_ciphertext, key_version, create_time, update_time)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, args...).
				Exec(func(tag pgconn.CommandTag) error {
					inserted = tag.RowsAffected()
					return nil
				})
			return
		}
		b.Queue(`SELECT pg_advisory_xact_lock(hashtextextended('switchyard.accountpool.accounts:' || $1, 0))`, a.OrganizationID)
		b.Queue(`INSERT INTO accounts (id, organization_id, name, tier, status, weight, priority, quota_group, labels,
				key_ciphertext, key_version, create_time, update_time)
			SELECT $1::uuid, $2::text, $3::text, $4::text, $5::text, $6::integer, $7::integer, $8::text, $9::jsonb,
				$10::bytea, $11::integer, $12::timestamptz, $13::timestamptz
			WHERE (SELECT count(*) FROM accounts WHERE organization_id = $2) < $14::bigint
				OR EXISTS (SELECT 1 FROM accounts WHERE organization_id = $2 AND (name = $3 OR id = $1::uuid))`,
			append(args, maxAccounts)...).
			Exec(func(tag pgconn.CommandTag) error {
				inserted = tag.RowsAffected()
				return nil
			})
	})
	if pgxutil.IsUniqueViolation(err) {
		return fmt.Errorf("creating account %q: an account with this name or id exists: %w", a.Name, store.ErrAlreadyExists)
	}
	if err != nil {
		return wrap(ctx, "creating account "+a.ID, err)
	}
	if inserted == 0 {
		return fmt.Errorf("creating account %q: the organization has %d accounts or more, its limit: %w", a.Name, maxAccounts, store.ErrLimitReached)
	}
	return nil
}

// GetAccount implements store.Store.
func (s *Store) GetAccount(ctx context.Context, orgID, id string) (store.Account, error) {
	if !isUUID(id) {
		return store.Account{}, fmt.Errorf("getting account %s: %w", id, store.ErrNotFound)
	}
	var a store.Account
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`SELECT `+accountColumns+` FROM accounts WHERE organization_id = $1 AND id = $2`, orgID, id).
			QueryRow(func(row pgx.Row) (err error) {
				a, err = scanAccount(row)
				return err
			})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Account{}, fmt.Errorf("getting account %s: %w", id, store.ErrNotFound)
	}
	return a, wrapRead(ctx, "getting account "+id, err)
}

// ListAccounts implements store.Store. Names compare in the "C" collation,
// byte for byte, as the contract and memstore do; the database's default
// collation would order by locale.
func (s *Store) ListAccounts(ctx context.Context, orgID string) ([]store.Account, error) {
	var out []store.Account
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`SELECT `+accountColumns+` FROM accounts WHERE organization_id = $1 ORDER BY name COLLATE "C", id`, orgID).
			Query(func(rows pgx.Rows) error {
				for rows.Next() {
					a, err := scanAccount(rows)
					if err != nil {
						return err
					}
					out = append(out, a)
				}
				return rows.Err()
			})
	})
	return out, wrapRead(ctx, "listing accounts", err)
}

// UpdateAccount implements store.Store. One statement sets every field:
// a NULL parameter (a nil field of u) keeps the column as it is.
func (s *Store) UpdateAccount(ctx context.Context, orgID, id string, u store.AccountUpdate) (store.Account, error) {
	if !isUUID(id) {
		return store.Account{}, fmt.Errorf("updating account %s: %w", id, store.ErrNotFound)
	}
	var (
		status     *string
		ciphertext []byte
		version    *int32
	)
	if u.Status != nil {
		st := string(*u.Status)
		status = &st
	}
	if u.Key != nil {
		ciphertext, version = nonNil(u.Key.Ciphertext), &u.Key.Version
	}
	var a store.Account
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`UPDATE accounts SET
				name = COALESCE($3, name),
				tier = COALESCE($4, tier),
				weight = COALESCE($5, weight),
				priority = COALESCE($6, priority),
				status = COALESCE($7, status),
				quota_group = COALESCE($8, quota_group),
				key_ciphertext = COALESCE($9, key_ciphertext),
				key_version = COALESCE($10, key_version),
				update_time = $11
			WHERE organization_id = $1 AND id = $2
			RETURNING `+accountColumns,
			orgID, id, u.Name, u.Tier, u.Weight, u.Priority, status, u.QuotaGroup, ciphertext, version,
			store.Normalize(u.UpdateTime)).
			QueryRow(func(row pgx.Row) (err error) {
				a, err = scanAccount(row)
				return err
			})
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.Account{}, fmt.Errorf("updating account %s: %w", id, store.ErrNotFound)
	case pgxutil.IsUniqueViolation(err):
		return store.Account{}, fmt.Errorf("renaming account %s: an account with this name exists: %w", id, store.ErrAlreadyExists)
	}
	return a, wrap(ctx, "updating account "+id, err)
}

// DeleteAccount implements store.Store.
func (s *Store) DeleteAccount(ctx context.Context, orgID, id string) error {
	if !isUUID(id) {
		return fmt.Errorf("deleting account %s: %w", id, store.ErrNotFound)
	}
	var deleted int64
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`DELETE FROM accounts WHERE organization_id = $1 AND id = $2`, orgID, id).
			Exec(func(tag pgconn.CommandTag) error {
				deleted = tag.RowsAffected()
				return nil
			})
	})
	if err != nil {
		return wrap(ctx, "deleting account "+id, err)
	}
	if deleted == 0 {
		return fmt.Errorf("deleting account %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// ReplaceKey implements store.Store. One batch, one round trip: the
// compare-and-swap UPDATE (the comparison sits in its WHERE clause, so a
// concurrent writer's committed change makes it match nothing), then, in
// the same implicit transaction but a fresh snapshot, whether the account
// exists at all, which tells a conflict from a missing account. The UPDATE
// fires the accounts trigger, so every process reloads the organization's
// view; a conflict writes nothing and notifies no one.
func (s *Store) ReplaceKey(ctx context.Context, orgID, id string, old []byte, key store.EncryptedKey, now time.Time) error {
	if !isUUID(id) {
		return fmt.Errorf("replacing the key of account %s: %w", id, store.ErrNotFound)
	}
	var (
		replaced int64
		exists   bool
	)
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`UPDATE accounts SET key_ciphertext = $4, key_version = $5, update_time = $6
			WHERE organization_id = $1 AND id = $2 AND key_ciphertext = $3`,
			orgID, id, nonNil(old), nonNil(key.Ciphertext), key.Version, store.Normalize(now)).
			Exec(func(tag pgconn.CommandTag) error {
				replaced = tag.RowsAffected()
				return nil
			})
		b.Queue(`SELECT EXISTS (SELECT 1 FROM accounts WHERE organization_id = $1 AND id = $2)`, orgID, id).
			QueryRow(func(row pgx.Row) error { return row.Scan(&exists) })
	})
	switch {
	case err != nil:
		return wrap(ctx, "replacing the key of account "+id, err)
	case replaced > 0:
		return nil
	case exists:
		return fmt.Errorf("replacing the key of account %s: the stored key changed since it was read: %w", id, store.ErrConflict)
	default:
		return fmt.Errorf("replacing the key of account %s: %w", id, store.ErrNotFound)
	}
}

// ListOrganizations implements store.Store from the organizations
// registry (migration 2), which triggers fill on every account and
// default-key insert (migration 4) and nothing empties: it has no row-level security, since it holds ids
// only, so this is the one statement sent without a tenant.
func (s *Store) ListOrganizations(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT id FROM organizations ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, wrapRead(ctx, "listing organizations", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, wrapRead(ctx, "listing organizations", err)
}

// GetSettings implements store.Store.
func (s *Store) GetSettings(ctx context.Context, orgID string) (store.Settings, error) {
	st := store.DefaultSettings(orgID)
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`SELECT selection_strategy, max_concurrent_tasks, tasks_per_second, task_burst, update_time
			FROM organization_settings WHERE organization_id = $1`, orgID).
			QueryRow(func(row pgx.Row) error {
				var strategy string
				tl := &st.TaskLimits
				if err := row.Scan(&strategy, &tl.MaxConcurrentTasks, &tl.TasksPerSecond, &tl.Burst, &st.UpdateTime); err != nil {
					return err
				}
				st.SelectionStrategy = store.Strategy(strategy)
				st.UpdateTime = store.Normalize(st.UpdateTime)
				return nil
			})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.DefaultSettings(orgID), nil
	}
	return st, wrapRead(ctx, "getting settings", err)
}

// PutSettings implements store.Store.
func (s *Store) PutSettings(ctx context.Context, st store.Settings) error {
	err := s.tenant(ctx, st.OrganizationID, func(b *pgx.Batch) {
		tl := st.TaskLimits
		b.Queue(`INSERT INTO organization_settings
			(organization_id, selection_strategy, max_concurrent_tasks, tasks_per_second, task_burst, update_time)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (organization_id) DO UPDATE
			SET selection_strategy = EXCLUDED.selection_strategy, max_concurrent_tasks = EXCLUDED.max_concurrent_tasks,
				tasks_per_second = EXCLUDED.tasks_per_second, task_burst = EXCLUDED.task_burst,
				update_time = EXCLUDED.update_time`,
			st.OrganizationID, string(st.SelectionStrategy), tl.MaxConcurrentTasks, tl.TasksPerSecond, tl.Burst,
			store.Normalize(st.UpdateTime))
	})
	return wrap(ctx, "saving settings", err)
}

// InsertUsage implements store.Store through the ledger's group commit: it
// returns once the transaction holding the row committed (or found the
// existing row), or when ctx ends. After a ctx error or ErrUnavailable the
// row may or may not have been written; retrying is safe.
func (s *Store) InsertUsage(ctx context.Context, r store.UsageRecord) (store.UsageRecord, error) {
	r.CreateTime = store.Normalize(r.CreateTime)
	return s.ledger.insert(ctx, r)
}

const usageColumns = `id::text, organization_id, COALESCE(account_id::text, ''), account_name, request_id, attempt,
	outcome, model, category, session_id, user_id, input_tokens, output_tokens, cache_read_tokens,
	cache_creation_tokens, cost_usd, http_status, error_type, upstream_request_id, duration_ms, create_time`

func scanUsage(row pgx.Row) (store.UsageRecord, error) {
	var (
		r       store.UsageRecord
		outcome string
	)
	err := row.Scan(&r.ID, &r.OrganizationID, &r.AccountID, &r.AccountName, &r.RequestID, &r.Attempt,
		&outcome, &r.Model, &r.Category, &r.SessionID, &r.UserID, &r.InputTokens, &r.OutputTokens, &r.CacheReadTokens,
		&r.CacheCreationTokens, &r.CostUSD, &r.HTTPStatus, &r.ErrorType, &r.UpstreamRequestID, &r.DurationMS, &r.CreateTime)
	r.Outcome = store.Outcome(outcome)
	r.CreateTime = store.Normalize(r.CreateTime)
	return r, err
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
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
