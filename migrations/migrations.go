// Package migrations holds each service's PostgreSQL schema as SQL files,
// embedded in the binary and applied with goose by `switchyard migrate`.
//
// Each service has its own migration sequence and version table, so the
// services can live in one database or in separate ones. A service never
// migrates as a side effect of serving: at start-up it compares the
// database's version with the newest embedded one and reports NOT_SERVING
// (and logs what to run) while the schema is behind.
//
// The migrations create the role the services connect as, AppRole: it owns
// nothing, cannot bypass row-level security, and is granted only what the
// services use. Every table holding an organization's rows has row-level
// security enabled and forced, keyed by the transaction-local setting
// TenantSetting.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// AppRole is the role the services connect as.
const AppRole = "switchyard_app"

// TenantSetting is the transaction-local setting the row-level security
// policies compare organization_id with.
const TenantSetting = "switchyard.organization_id"

//go:embed accountpool/*.sql activity/*.sql
var files embed.FS

// Set is one service's migration sequence.
type Set struct {
	// Name is the service: "accountpool" or "activity".
	Name string
	// Table is goose's version table for this set.
	Table string
}

// AccountPool and Activity are the two sets; All lists them in the order
// `migrate up` applies them.
var (
	AccountPool = Set{Name: "accountpool", Table: "goose_accountpool_version"}
	Activity    = Set{Name: "activity", Table: "goose_activity_version"}
)

// All returns every set.
func All() []Set { return []Set{AccountPool, Activity} }

// ByName returns the named set.
func ByName(name string) (Set, error) {
	for _, s := range All() {
		if s.Name == name {
			return s, nil
		}
	}
	return Set{}, fmt.Errorf("no migrations named %q; known: accountpool, activity", name)
}

// Provider returns a goose provider for the set on db. db must connect as a
// role that may create tables and roles (the schema owner), not as AppRole.
func (s Set) Provider(db *sql.DB, logger *slog.Logger) (*goose.Provider, error) {
	sub, err := fs.Sub(files, s.Name)
	if err != nil {
		return nil, err
	}
	store, err := database.NewStore(database.DialectPostgres, s.Table)
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithStore(store), goose.WithDisableGlobalRegistry(true)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	return goose.NewProvider("", db, sub, opts...)
}

// Latest is the newest version embedded for the set.
func (s Set) Latest() (int64, error) {
	sub, err := fs.Sub(files, s.Name)
	if err != nil {
		return 0, err
	}
	entries, err := fs.Glob(sub, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, name := range entries {
		var v int64
		if _, err := fmt.Sscanf(name, "%d_", &v); err != nil {
			return 0, fmt.Errorf("migration file %s/%s does not start with a version number", s.Name, name)
		}
		latest = max(latest, v)
	}
	return latest, nil
}

// ErrNotMigrated means the set's version table does not exist yet.
var ErrNotMigrated = errors.New("the database has not been migrated")

// undefinedTable is PostgreSQL's SQLSTATE for a missing table.
const undefinedTable = "42P01"

// CheckVersion compares the database's version of the set, read with
// query (as AppRole, which may read the version table), with the newest
// embedded one. It returns a nil error only when they match.
func (s Set) CheckVersion(ctx context.Context, query func(ctx context.Context, sql string) (int64, error)) error {
	latest, err := s.Latest()
	if err != nil {
		return err
	}
	current, err := query(ctx, "SELECT COALESCE(max(version_id), 0) FROM "+s.Table+" WHERE is_applied")
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == undefinedTable:
		return fmt.Errorf("%w: the %s schema has no version table %s; run 'switchyard migrate up'", ErrNotMigrated, s.Name, s.Table)
	case err != nil:
		return fmt.Errorf("reading the %s schema version: %w", s.Name, err)
	}
	switch {
	case current < latest:
		return fmt.Errorf("%w: the %s schema is at version %d, this binary needs %d; run 'switchyard migrate up'", ErrNotMigrated, s.Name, current, latest)
	case current > latest:
		return fmt.Errorf("the %s schema is at version %d, newer than this binary's %d; deploy the newer binary", s.Name, current, latest)
	}
	return nil
}
