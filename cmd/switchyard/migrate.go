package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for goose

	"github.com/switchyard-dev/switchyard/migrations"
)

const envMigrateDatabaseURL = "SWITCHYARD_MIGRATE_DATABASE_URL"

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", `Applies the embedded PostgreSQL schema. Subcommands:
  up       apply every pending migration (accountpool, then activity)
  status   list each migration and whether it is applied
  down     roll back the newest migration of one service (-service is required; it drops data)

Connect as the schema owner (a role that may create tables and roles), not as the
switchyard_app role the services use; the migrations create switchyard_app.`, stderr)
	var dbURL, service string
	// The URL may hold the owner's password: the flag does not default to
	// the variable, so -h never prints it.
	fs.StringVar(&dbURL, "database-url", "", "owner connection string (default "+envMigrateDatabaseURL+")")
	fs.StringVar(&service, "service", "", "only this service's migrations: accountpool or activity (default: both)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("migrate needs exactly one of: up, status, down")
	}
	dbURL = cmp.Or(dbURL, env(envMigrateDatabaseURL, ""))
	if dbURL == "" {
		return fmt.Errorf("set %s or -database-url to the schema owner's connection string", envMigrateDatabaseURL)
	}
	sets := migrations.All()
	if service != "" {
		set, err := migrations.ByName(service)
		if err != nil {
			return err
		}
		sets = []migrations.Set{set}
	}
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return errors.New("the database URL is not a valid PostgreSQL connection string")
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}

	switch cmd := fs.Arg(0); cmd {
	case "up":
		for _, set := range sets {
			p, err := set.Provider(db, nil)
			if err != nil {
				return err
			}
			results, err := p.Up(ctx)
			if err != nil {
				return fmt.Errorf("migrating %s: %w", set.Name, err)
			}
			for _, r := range results {
				fmt.Fprintf(stdout, "%s: applied %s (%s)\n", set.Name, r.Source.Path, r.Duration.Round(time.Millisecond))
			}
			current, _, err := p.GetVersions(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: at version %d\n", set.Name, current)
		}
		return nil
	case "status":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tMIGRATION\tSTATE\tAPPLIED AT")
		for _, set := range sets {
			p, err := set.Provider(db, nil)
			if err != nil {
				return err
			}
			statuses, err := p.Status(ctx)
			if err != nil {
				return fmt.Errorf("reading %s status: %w", set.Name, err)
			}
			for _, st := range statuses {
				applied := ""
				if !st.AppliedAt.IsZero() {
					applied = st.AppliedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", set.Name, st.Source.Path, st.State, applied)
			}
		}
		return tw.Flush()
	case "down":
		if service == "" {
			return errors.New("down drops data: name the service with -service accountpool or -service activity")
		}
		p, err := sets[0].Provider(db, nil)
		if err != nil {
			return err
		}
		r, err := p.Down(ctx)
		if err != nil {
			return fmt.Errorf("rolling back %s: %w", service, err)
		}
		fmt.Fprintf(stdout, "%s: rolled back %s\n", service, r.Source.Path)
		return nil
	default:
		return fmt.Errorf("unknown migrate subcommand %q: use up, status or down", cmd)
	}
}
