// Package pgtest gives tests a fresh, migrated PostgreSQL schema.
//
// Tests find the server through SWITCHYARD_TEST_DATABASE_URL, a connection
// string for a role that may create schemas and roles (the owner). Without
// it PostgreSQL tests skip, unless SWITCHYARD_REQUIRE_POSTGRES is set (CI
// sets it), in which case they fail: a PostgreSQL test never passes
// silently by not running.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose

	"github.com/switchyard-dev/switchyard/migrations"
)

// EnvURL and EnvRequire name the environment variables this package reads.
const (
	EnvURL     = "SWITCHYARD_TEST_DATABASE_URL"
	EnvRequire = "SWITCHYARD_REQUIRE_POSTGRES"
)

// AdminURL returns the test database URL, or skips (fails under
// SWITCHYARD_REQUIRE_POSTGRES) when none is configured.
func AdminURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s is set but %s is not: PostgreSQL tests must run", EnvRequire, EnvURL)
		}
		t.Skipf("%s is not set; skipping PostgreSQL test", EnvURL)
	}
	return u
}

// Schema is a fresh schema with the given migration sets applied.
type Schema struct {
	// Name of the schema.
	Name string
	// AppURL connects as migrations.AppRole with the schema on the
	// search path: what a service uses.
	AppURL string
	// OwnerURL connects as the owner with the schema on the search path:
	// for test setup and catalog checks only.
	OwnerURL string
}

// NewSchema creates a schema, applies the sets to it and drops it when the
// test ends.
func NewSchema(t testing.TB, sets ...migrations.Set) Schema {
	t.Helper()
	s := NewEmptySchema(t)
	Migrate(t, s.OwnerURL, sets...)
	return s
}

// NewEmptySchema creates a schema with nothing in it and drops it when the
// test ends.
func NewEmptySchema(t testing.TB) Schema {
	t.Helper()
	admin := AdminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connecting to %s: %v", EnvURL, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("creating schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
		}
	})

	return Schema{Name: name, OwnerURL: withParams(t, admin, "", name), AppURL: withParams(t, admin, migrations.AppRole, name)}
}

// Migrate applies the sets through ownerURL.
func Migrate(t testing.TB, ownerURL string, sets ...migrations.Set) {
	t.Helper()
	db, err := sql.Open("pgx", ownerURL)
	if err != nil {
		t.Fatalf("opening the database for migrations: %v", err)
	}
	defer db.Close()
	for _, set := range sets {
		p, err := set.Provider(db, nil)
		if err != nil {
			t.Fatalf("migrations for %s: %v", set.Name, err)
		}
		if _, err := p.Up(context.Background()); err != nil {
			t.Fatalf("applying %s migrations: %v", set.Name, err)
		}
	}
}

// withParams returns base with the user replaced (when user is set) and
// the schema as the search path.
func withParams(t testing.TB, base, user, schema string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s must be a URL (postgres://...): %v", EnvURL, err)
	}
	if user != "" {
		u.User = url.User(user)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Down rolls the sets back to version 0, in reverse order.
func Down(t testing.TB, ownerURL string, sets ...migrations.Set) {
	t.Helper()
	db, err := sql.Open("pgx", ownerURL)
	if err != nil {
		t.Fatalf("opening the database for migrations: %v", err)
	}
	defer db.Close()
	for i := len(sets) - 1; i >= 0; i-- {
		p, err := sets[i].Provider(db, nil)
		if err != nil {
			t.Fatalf("migrations for %s: %v", sets[i].Name, err)
		}
		if _, err := p.DownTo(context.Background(), 0); err != nil {
			t.Fatalf("rolling back %s migrations: %v", sets[i].Name, err)
		}
	}
}

// HostPort is the host:port a database URL connects to, for a proxy in
// front of it.
func HostPort(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("not a URL: %v", err)
	}
	if u.Port() == "" {
		return u.Hostname() + ":5432"
	}
	return u.Host
}

// WithHostPort returns dbURL connecting to hostPort instead (a proxy).
func WithHostPort(t testing.TB, dbURL, hostPort string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("not a URL: %v", err)
	}
	u.Host = hostPort
	return u.String()
}
