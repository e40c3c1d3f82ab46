package accountpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/switchyard-dev/switchyard/migrations"
	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/crypto"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store/pgstore"
)

// RewrapConfig configures Rewrap and KeyStatus, the maintenance of the API
// keys stored in PostgreSQL (`switchyard keys rewrap|status`).
type RewrapConfig struct {
	// DatabaseURL connects to the schema the services use, as the
	// switchyard_app role (migrations.AppRole), like Config.DatabaseURL.
	// The schema must be at this binary's version. Required.
	DatabaseURL string
	// Keyring is the key-encryption keyring, in Config.Keyring's format:
	// the one the AccountPool processes run with, new version included.
	// Its highest version is the one keys are re-encrypted under. Required.
	Keyring string
	// Logger; default slog.Default(). It never receives a key.
	Logger *slog.Logger
}

// KeyStatusReport counts the stored API keys, accounts' and organizations'
// default keys, by the version of the key-encryption key that encrypts
// them.
type KeyStatusReport struct {
	// CurrentVersion is the keyring's highest version, the one new keys
	// are encrypted under.
	CurrentVersion int32
	// KeyringVersions are every version the keyring holds, ascending.
	KeyringVersions []int32
	// Organizations is how many organizations were visited.
	Organizations int
	// Accounts is how many accounts they have.
	Accounts int
	// Versions maps each key version in use to its number of accounts;
	// versions no account uses are absent.
	Versions map[int32]int
	// DefaultKeys is how many of the organizations have a default key.
	DefaultKeys int
	// DefaultKeyVersions maps each key version in use to its number of
	// default keys; versions no default key uses are absent.
	DefaultKeyVersions map[int32]int
}

// Outdated is the number of stored keys (accounts' and default keys) not
// under the current version: zero means every older version can be
// removed from the keyring.
func (r KeyStatusReport) Outdated() int {
	return r.Accounts - r.Versions[r.CurrentVersion] + r.DefaultKeys - r.DefaultKeyVersions[r.CurrentVersion]
}

// Undecryptable is the number of stored keys (accounts' and default keys)
// whose key version the keyring does not hold: with this keyring they
// cannot be used.
func (r KeyStatusReport) Undecryptable() int {
	n := 0
	for _, m := range []map[int32]int{r.Versions, r.DefaultKeyVersions} {
		for v, count := range m {
			if !slices.Contains(r.KeyringVersions, v) {
				n += count
			}
		}
	}
	return n
}

// RewrapReport is what Rewrap did. Every key visited, an account's or an
// organization's default key, is counted in exactly one of Rewrapped,
// AlreadyCurrent, Skipped and Failed.
type RewrapReport struct {
	// CurrentVersion is the version keys were re-encrypted under.
	CurrentVersion int32
	// Organizations is how many organizations were visited.
	Organizations int
	// Rewrapped accounts had their key re-encrypted by this run.
	Rewrapped int
	// AlreadyCurrent accounts were under the current version when read.
	AlreadyCurrent int
	// Skipped accounts changed under the run: another writer (a key
	// rotation, a concurrent Rewrap) replaced the key between the read and
	// the write, and it was either current by then, changed again on the
	// one retry, or the account was deleted. Nothing of theirs was
	// overwritten; any that are still outdated show in Status, and a rerun
	// takes them.
	Skipped int
	// Failed accounts could not be re-encrypted, typically because their
	// key version is missing from the keyring. They are left as they are.
	Failed []RewrapFailure
	// Status is a fresh count after the run, so it also reflects accounts
	// registered or rotated while it ran (by a process still on an older
	// keyring, say). Zero when the run stopped on an error.
	Status KeyStatusReport
}

// RewrapFailure names an account, or an organization's default key, whose
// key could not be re-encrypted.
type RewrapFailure struct {
	OrganizationID string
	// AccountID is empty for the organization's default key.
	AccountID string
	// DefaultKey is set for the organization's default key.
	DefaultKey bool
	// KeyVersion is the version the account's key is stored under.
	KeyVersion int32
	// Reason says why; it never holds key material.
	Reason string
}

// Rewrap re-encrypts every stored API key that is not under the keyring's
// current version, so older versions can be retired from the keyring. It
// is safe while the services serve, which is its purpose:
//
//   - each key is decrypted (associated data: its organization and account),
//     encrypted under the current version and written back with a
//     compare-and-swap on the ciphertext it read, so a key rotated in the
//     meantime is never overwritten by the re-encryption of its
//     predecessor; on a conflict the account is re-read once and skipped
//     when it is current by then;
//   - every write fires the schema's change notification, so running
//     AccountPool processes reload the organization's view with the new
//     ciphertext. They must already run with a keyring holding the current
//     version (restart them with the new keyring first): a process without
//     it cannot decrypt the re-encrypted keys and skips those accounts.
//
// It is idempotent and resumable: accounts already current are left alone,
// so an interrupted run is simply run again. A key that cannot be
// decrypted (a version missing from the keyring, a damaged ciphertext) is
// reported in Failed and the run continues. A failure of the database or
// ctx stops the run: the report returned with the error counts what was
// done until then. Neither the report, the error nor the log holds a key.
func Rewrap(ctx context.Context, cfg RewrapConfig) (RewrapReport, error) {
	m, err := openMaintenance(ctx, cfg)
	if err != nil {
		return RewrapReport{}, fmt.Errorf("rewrapping keys: %w", err)
	}
	defer m.close()
	r, err := rewrap(ctx, m.store, m.keys, m.logger, time.Now)
	if err != nil {
		return r, fmt.Errorf("rewrapping keys: %w", err)
	}
	return r, nil
}

// KeyStatus counts the stored API keys per key-encryption key version,
// reading every organization's accounts. cfg is as for Rewrap; the keyring
// says which version is current and which are missing.
func KeyStatus(ctx context.Context, cfg RewrapConfig) (KeyStatusReport, error) {
	m, err := openMaintenance(ctx, cfg)
	if err != nil {
		return KeyStatusReport{}, fmt.Errorf("reading key status: %w", err)
	}
	defer m.close()
	r, err := keyStatus(ctx, m.store, m.keys)
	if err != nil {
		return KeyStatusReport{}, fmt.Errorf("reading key status: %w", err)
	}
	return r, nil
}

// maintenance is an open store for Rewrap and KeyStatus.
type maintenance struct {
	store  store.Store
	keys   *crypto.Keyring
	logger *slog.Logger
	close  func()
}

func openMaintenance(ctx context.Context, cfg RewrapConfig) (maintenance, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Keyring == "" {
		return maintenance{}, errors.New("a keyring is required (\"1:<base64>,2:<base64>\"): the one the services run with")
	}
	keys, err := crypto.ParseKeyring(cfg.Keyring)
	if err != nil {
		return maintenance{}, err
	}
	if cfg.DatabaseURL == "" {
		return maintenance{}, errors.New("a database URL is required: set SWITCHYARD_DATABASE_URL (or DATABASE_URL) to a connection string for the switchyard_app role")
	}
	db, err := pgxutil.Connect(ctx, cfg.DatabaseURL, "switchyard-keys")
	if err != nil {
		return maintenance{}, err
	}
	pgxutil.LogConnection(ctx, cfg.Logger, db, "switchyard keys")
	if err := migrations.AccountPool.CheckVersion(ctx, pgxutil.SchemaVersionQuery(db)); err != nil {
		db.Close()
		return maintenance{}, err
	}
	st := pgstore.New(db, pgstore.Config{Logger: cfg.Logger})
	return maintenance{store: st, keys: keys, logger: cfg.Logger, close: func() {
		st.Close()
		db.Close()
	}}, nil
}

// keyStatus counts st's accounts per key version.
func keyStatus(ctx context.Context, st store.Store, keys *crypto.Keyring) (KeyStatusReport, error) {
	r := KeyStatusReport{CurrentVersion: keys.CurrentVersion(), KeyringVersions: keys.Versions(), Versions: map[int32]int{}, DefaultKeyVersions: map[int32]int{}}
	orgs, err := st.ListOrganizations(ctx)
	if err != nil {
		return KeyStatusReport{}, err
	}
	for _, org := range orgs {
		accounts, err := st.ListAccounts(ctx, org)
		if err != nil {
			return KeyStatusReport{}, err
		}
		r.Organizations++
		r.Accounts += len(accounts)
		for _, a := range accounts {
			r.Versions[a.KeyVersion]++
		}
		k, err := st.GetDefaultKey(ctx, org)
		switch {
		case err == nil:
			r.DefaultKeys++
			r.DefaultKeyVersions[k.KeyVersion]++
		case !errors.Is(err, store.ErrNotFound):
			return KeyStatusReport{}, err
		}
	}
	return r, nil
}

// rewrapper is one run of Rewrap over any store.
type rewrapper struct {
	store  store.Store
	keys   *crypto.Keyring
	logger *slog.Logger
	now    func() time.Time
	report RewrapReport
}

// outcome is what became of one account.
type outcome int

const (
	rewrapped outcome = iota
	alreadyCurrent
	skipped
	failed
	// absent: the organization has no default key; nothing is counted.
	absent
)

// rewrap is Rewrap on an open store, organization by organization,
// account by account: one small write at a time, so the serving processes
// see a trickle of view reloads rather than one large transaction's locks.
func rewrap(ctx context.Context, st store.Store, keys *crypto.Keyring, logger *slog.Logger, now func() time.Time) (RewrapReport, error) {
	w := &rewrapper{store: st, keys: keys, logger: logger, now: now, report: RewrapReport{CurrentVersion: keys.CurrentVersion()}}
	orgs, err := st.ListOrganizations(ctx)
	if err != nil {
		return w.report, err
	}
	logger.InfoContext(ctx, "rewrapping api keys", "current_version", w.report.CurrentVersion, "organizations", len(orgs))
	for _, org := range orgs {
		if err := w.organization(ctx, org); err != nil {
			return w.report, err
		}
	}
	if w.report.Status, err = keyStatus(ctx, st, keys); err != nil {
		return w.report, fmt.Errorf("counting key versions after the run: %w", err)
	}
	logger.InfoContext(ctx, "rewrapped api keys", "current_version", w.report.CurrentVersion,
		"organizations", w.report.Organizations, "rewrapped", w.report.Rewrapped, "already_current", w.report.AlreadyCurrent,
		"skipped", w.report.Skipped, "failed", len(w.report.Failed), "outdated", w.report.Status.Outdated())
	return w.report, nil
}

func (w *rewrapper) organization(ctx context.Context, org string) error {
	accounts, err := w.store.ListAccounts(ctx, org)
	if err != nil {
		return fmt.Errorf("listing the accounts of organization %s: %w", org, err)
	}
	w.report.Organizations++
	before := w.report
	outcomes := make([]outcome, 0, len(accounts)+1)
	for _, a := range accounts {
		o, err := w.account(ctx, a)
		if err != nil {
			return fmt.Errorf("organization %s, account %s: %w", org, a.ID, err)
		}
		outcomes = append(outcomes, o)
	}
	o, err := w.defaultKey(ctx, org)
	if err != nil {
		return fmt.Errorf("organization %s, default key: %w", org, err)
	}
	outcomes = append(outcomes, o)
	for _, o := range outcomes {
		switch o {
		case rewrapped:
			w.report.Rewrapped++
		case alreadyCurrent:
			w.report.AlreadyCurrent++
		case skipped:
			w.report.Skipped++
		}
	}
	if w.report.Rewrapped > before.Rewrapped || w.report.Skipped > before.Skipped || len(w.report.Failed) > len(before.Failed) {
		w.logger.InfoContext(ctx, "rewrapped the api keys of an organization", "organization_id", org,
			"rewrapped", w.report.Rewrapped-before.Rewrapped, "skipped", w.report.Skipped-before.Skipped,
			"failed", len(w.report.Failed)-len(before.Failed))
	}
	return nil
}

// account re-encrypts one account's key unless it is current. Problems of
// the account's own key are failures reported and counted; anything else
// (the store, ctx, the random source) is returned and stops the run.
func (w *rewrapper) account(ctx context.Context, a store.Account) (outcome, error) {
	current := w.keys.CurrentVersion()
	for retry := false; ; retry = true {
		if a.KeyVersion == current {
			if retry {
				return skipped, nil // rotated or rewrapped by someone else meanwhile
			}
			return alreadyCurrent, nil
		}
		key, err := w.keys.Decrypt(a.KeyCiphertext, a.OrganizationID, a.ID)
		if err != nil {
			w.report.Failed = append(w.report.Failed, RewrapFailure{
				OrganizationID: a.OrganizationID, AccountID: a.ID, KeyVersion: a.KeyVersion, Reason: err.Error(),
			})
			w.logger.WarnContext(ctx, "api key cannot be decrypted; left as it is", "organization_id", a.OrganizationID,
				"account_id", a.ID, "key_version", a.KeyVersion, "error", err)
			return failed, nil
		}
		ct, ver, err := w.keys.Encrypt(key, a.OrganizationID, a.ID)
		if err != nil {
			return 0, fmt.Errorf("encrypting the api key: %w", err)
		}
		err = w.store.ReplaceKey(ctx, a.OrganizationID, a.ID, a.KeyCiphertext, store.EncryptedKey{Ciphertext: ct, Version: ver}, w.now())
		switch {
		case err == nil:
			return rewrapped, nil
		case errors.Is(err, store.ErrNotFound):
			return skipped, nil // deleted meanwhile
		case errors.Is(err, store.ErrConflict) && !retry:
			w.logger.InfoContext(ctx, "api key changed while being rewrapped; reading it again", "organization_id", a.OrganizationID, "account_id", a.ID)
			a, err = w.store.GetAccount(ctx, a.OrganizationID, a.ID)
			if errors.Is(err, store.ErrNotFound) {
				return skipped, nil
			}
			if err != nil {
				return 0, fmt.Errorf("reading the account again after a conflict: %w", err)
			}
		case errors.Is(err, store.ErrConflict):
			w.logger.WarnContext(ctx, "api key changed twice while being rewrapped; skipped, run again to take it", "organization_id", a.OrganizationID, "account_id", a.ID)
			return skipped, nil
		default:
			return 0, err
		}
	}
}

// AllVersions returns every version the keyring holds or a stored key
// uses, ascending: the rows of a status table.
func (r KeyStatusReport) AllVersions() []int32 {
	vs := slices.Concat(r.KeyringVersions, slices.Collect(maps.Keys(r.Versions)), slices.Collect(maps.Keys(r.DefaultKeyVersions)))
	slices.Sort(vs)
	return slices.Compact(vs)
}
