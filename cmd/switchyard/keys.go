package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/switchyard-dev/switchyard/services/accountpool"
)

// runKeys maintains the API keys stored in PostgreSQL: `keys status` counts
// them per key-encryption key version, `keys rewrap` re-encrypts them under
// the current one (docs/security.md, "Rotating").
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys", `Maintains the API keys the AccountPool stores in PostgreSQL. Subcommands:
  status   count the stored keys per key-encryption key version
  rewrap   re-encrypt every stored key under the keyring's current (highest) version

Both connect as the switchyard_app role through `+envDatabaseURL+` (or DATABASE_URL) and
read the keyring from `+envKeyring+` or `+envKeyringFile+`: give them the keyring the
AccountPool processes run with. Rewrap is safe while the services serve and may be run again at
any time; restart every AccountPool process with the new keyring before running it. When status
shows nothing under an older version, remove that version from the keyring and restart.

Exit status 1 when rewrap could not re-encrypt a key or leaves one under an older version, and
when status finds keys under a version the keyring lacks.`, stderr)
	var keyringFile string
	fs.StringVar(&keyringFile, "keyring-file", env(envKeyringFile, ""), "file holding the key-encryption keyring ("+envKeyringFile+"; or the keyring itself in "+envKeyring+")")
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("keys needs exactly one of: status, rewrap")
	}
	cmd := fs.Arg(0)
	if cmd != "status" && cmd != "rewrap" {
		return fmt.Errorf("unknown keys subcommand %q: use status or rewrap", cmd)
	}
	// The inline keyring and the database URL come from the environment
	// only: flags would show them in the process list.
	keyring, err := readKeyring(env(envKeyring, ""), keyringFile)
	if err != nil {
		return err
	}
	if keyring == "" {
		return fmt.Errorf("set %s or %s to the keyring the AccountPool runs with", envKeyring, envKeyringFile)
	}
	dbURL := env(envDatabaseURL, env("DATABASE_URL", ""))
	if dbURL == "" {
		return fmt.Errorf("set %s (or DATABASE_URL) to a connection string for the switchyard_app role", envDatabaseURL)
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg := accountpool.RewrapConfig{DatabaseURL: dbURL, Keyring: keyring, Logger: logger}

	if cmd == "status" {
		st, err := accountpool.KeyStatus(ctx, cfg)
		if err != nil {
			return err
		}
		if err := printKeyStatus(stdout, st); err != nil {
			return err
		}
		if n := st.Undecryptable(); n > 0 {
			return fmt.Errorf("%d stored keys use a key-encryption key version this keyring lacks", n)
		}
		return nil
	}

	r, err := accountpool.Rewrap(ctx, cfg)
	if err != nil && r.CurrentVersion == 0 {
		return err // the run never started: nothing to report
	}
	fmt.Fprintf(stdout, "rewrap under version %d: %d rewrapped, %d already current, %d skipped (changed while rewrapping), %d failed, in %d organizations\n",
		r.CurrentVersion, r.Rewrapped, r.AlreadyCurrent, r.Skipped, len(r.Failed), r.Organizations)
	for _, f := range r.Failed {
		if f.DefaultKey {
			fmt.Fprintf(stdout, "failed: organization %s, default key, key version %d: %s\n", f.OrganizationID, f.KeyVersion, f.Reason)
			continue
		}
		fmt.Fprintf(stdout, "failed: organization %s, account %s, key version %d: %s\n", f.OrganizationID, f.AccountID, f.KeyVersion, f.Reason)
	}
	if err != nil {
		return fmt.Errorf("%w (the run stopped; running it again continues where it stopped)", err)
	}
	if err := printKeyStatus(stdout, r.Status); err != nil {
		return err
	}
	switch {
	case len(r.Failed) > 0:
		return fmt.Errorf("%d stored keys could not be rewrapped; they are listed above", len(r.Failed))
	case r.Status.Outdated() > 0:
		return fmt.Errorf("%d stored keys are still not under version %d (changed while the run went on, or written by a process on an older keyring); run it again", r.Status.Outdated(), r.Status.CurrentVersion)
	}
	return nil
}

// printKeyStatus writes a table of the key versions (accounts' keys and
// organizations' default keys counted apart), then what it means for
// retiring old versions.
func printKeyStatus(w io.Writer, st accountpool.KeyStatusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tACCOUNTS\tDEFAULT KEYS\tKEYRING")
	for _, v := range st.AllVersions() {
		role := "decrypts"
		switch {
		case v == st.CurrentVersion:
			role = "encrypts (current)"
		case !slices.Contains(st.KeyringVersions, v):
			role = "MISSING: these keys cannot be decrypted"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\n", v, st.Versions[v], st.DefaultKeyVersions[v], role)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := st.Outdated(); n > 0 {
		_, err := fmt.Fprintf(w, "%d accounts and %d default keys in %d organizations; %d not under version %d: run 'switchyard keys rewrap'\n", st.Accounts, st.DefaultKeys, st.Organizations, n, st.CurrentVersion)
		return err
	}
	_, err := fmt.Fprintf(w, "%d accounts and %d default keys in %d organizations, all under version %d: older versions can be removed from the keyring\n", st.Accounts, st.DefaultKeys, st.Organizations, st.CurrentVersion)
	return err
}
