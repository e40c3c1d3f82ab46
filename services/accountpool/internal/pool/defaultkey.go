package pool

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// An organization's default key is the API key legacy mode runs on while
// the organization has no account in service (none registered, or all
// disabled or deleted), before the operator's environment key. The pool
// keeps it, as ciphertext, in the organization's in-memory view next to
// the accounts: loaded with them, replaced by the admin writes below and
// reloaded on the store's change notifications, so Select reads no
// database for it. Its plaintext exists only between DecryptDefaultKey in
// selectDefaultKey and the returned Selection, as a secret.String.

// ErrDefaultKeyInvalid is the ErrNoAccounts (errors.Is holds) that Select
// returns when the organization has no account in service and its default
// key was rejected by the upstream: the orchestrator must not run the
// organization on it, and the organization's admin must set it again.
var ErrDefaultKeyInvalid = fmt.Errorf("%w, and the upstream rejected its default key (401/402/403); set the default key again to use it", ErrNoAccounts)

// Usage rows of legacy-mode calls are recorded under these account names
// (with no account id).
const (
	// DefaultKeyAccountName names calls that ran on the organization's
	// default key.
	DefaultKeyAccountName = "default"
	// EnvironmentKeyAccountName names calls that ran on the operator's
	// environment key (ANTHROPIC_API_KEY).
	EnvironmentKeyAccountName = "environment"
)

// LegacyKey is the key a legacy-mode call ran on.
type LegacyKey int

// Legacy keys.
const (
	// LegacyKeyEnvironment is the operator's environment key; the zero
	// value, as before default keys existed.
	LegacyKeyEnvironment LegacyKey = iota
	// LegacyKeyOrganizationDefault is the organization's default key.
	LegacyKeyOrganizationDefault
)

// DefaultKey is an organization's decrypted default key, handed out by
// Select for one legacy-mode call.
type DefaultKey struct {
	APIKey secret.String
	// KeyVersion is the key-encryption key version it is stored under.
	KeyVersion int32
	// Generation identifies this setting of the key (see
	// defaultKeyGeneration); a rejection reported with it marks the key
	// invalid only while the organization still has this one.
	Generation string
}

// defaultKeyGeneration names one stored default key without revealing
// anything of it: a digest of its ciphertext, which a new SetDefaultKey
// always changes (a fresh nonce). A rewrap changes it too, so a rejection
// reported across a rewrap marks nothing, and the key's next rejection
// does: the safe side, since marking a working key invalid would stop the
// organization's tasks.
func defaultKeyGeneration(ciphertext []byte) string {
	sum := sha256.Sum256(ciphertext)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// DefaultKeyInfo describes an organization's default key without the key.
type DefaultKeyInfo struct {
	Configured bool
	// KeyVersion is zero when not configured.
	KeyVersion int32
	// Invalid is set once the upstream rejected the key.
	Invalid bool
	// UpdateTime is zero when not configured.
	UpdateTime time.Time
}

func defaultKeyInfo(k *store.DefaultKey) DefaultKeyInfo {
	if k == nil {
		return DefaultKeyInfo{}
	}
	return DefaultKeyInfo{Configured: true, KeyVersion: k.KeyVersion, Invalid: k.Invalid, UpdateTime: k.UpdateTime}
}

// loadDefaultKey reads the organization's default key for its view: nil
// when it has none.
func (p *Pool) loadDefaultKey(ctx context.Context, orgID string) (*store.DefaultKey, error) {
	k, err := p.store.GetDefaultKey(ctx, orgID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("loading the default key of organization %s: %w", orgID, err)
	}
	return &k, nil
}

// DefaultKeyInfo describes the organization's default key, from its view.
func (p *Pool) DefaultKeyInfo(ctx context.Context, orgID string) (DefaultKeyInfo, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return DefaultKeyInfo{}, err
	}
	return defaultKeyInfo(v.defaultKey), nil
}

// SetDefaultKey sets or replaces the organization's default key with key,
// encrypted under the keyring's current version and bound to the
// organization and the default-key purpose. A replaced key is valid again
// whatever the old one was. The key appears in no error and no log line.
func (p *Pool) SetDefaultKey(ctx context.Context, orgID string, key secret.String) (DefaultKeyInfo, error) {
	ct, ver, err := p.keys.EncryptDefaultKey(key, orgID)
	if err != nil {
		return DefaultKeyInfo{}, fmt.Errorf("encrypting the default key: %w", err)
	}
	k := &store.DefaultKey{OrganizationID: orgID, Ciphertext: ct, KeyVersion: ver, UpdateTime: store.Normalize(p.now())}
	v, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		if err := p.store.PutDefaultKey(ctx, *k); err != nil {
			return nil, err
		}
		n := v.clone()
		n.defaultKey = k
		return n, nil
	})
	if err != nil {
		return DefaultKeyInfo{}, err
	}
	p.logger.InfoContext(ctx, "organization default key set", "organization_id", orgID, "key_version", ver)
	return defaultKeyInfo(v.defaultKey), nil
}

// ClearDefaultKey removes the organization's default key; clearing a key
// that is not set is not an error.
func (p *Pool) ClearDefaultKey(ctx context.Context, orgID string) (DefaultKeyInfo, error) {
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		// Deleted even when this view has none: another process may have
		// set one that this view has not seen yet.
		if err := p.store.DeleteDefaultKey(ctx, orgID); err != nil {
			return nil, err
		}
		if v.defaultKey == nil {
			return v, nil
		}
		n := v.clone()
		n.defaultKey = nil
		return n, nil
	})
	if err != nil {
		return DefaultKeyInfo{}, err
	}
	p.logger.InfoContext(ctx, "organization default key cleared", "organization_id", orgID)
	return DefaultKeyInfo{}, nil
}

// selectDefaultKey answers Select for an organization with no account in
// service (v is its view): its default key when it has a valid one and the
// request accepts it, else ErrDefaultKeyInvalid when it has an invalid
// one, else ErrNoAccounts. A key that cannot be decrypted (a version
// missing from the keyring) is an error of its own rather than a silent
// fall back to the operator's environment key.
func (p *Pool) selectDefaultKey(v *orgView, r *SelectRequest) (Selection, error) {
	k := v.defaultKey
	switch {
	case k == nil:
		return Selection{}, ErrNoAccounts
	case k.Invalid:
		return Selection{}, ErrDefaultKeyInvalid
	case !r.AcceptDefaultKey:
		return Selection{}, ErrNoAccounts
	}
	key, err := p.keys.DecryptDefaultKey(k.Ciphertext, k.OrganizationID)
	if err != nil {
		return Selection{}, fmt.Errorf("decrypting the default key of organization %s (key version %d): %w", k.OrganizationID, k.KeyVersion, err)
	}
	return Selection{DefaultKey: &DefaultKey{APIKey: key, KeyVersion: k.KeyVersion, Generation: defaultKeyGeneration(k.Ciphertext)}}, nil
}

// recordLegacy records a legacy-mode call: its ledger row under the name
// of the key it ran on and, for an AUTH_FAILED outcome on the
// organization's default key, that key marked invalid. A duplicate (the
// call was recorded before) changes nothing, so a retried RecordRequest
// cannot mark a key that replaced the rejected one meanwhile.
func (p *Pool) recordLegacy(ctx context.Context, r RecordRequest, now time.Time) (RecordResult, error) {
	name := EnvironmentKeyAccountName
	if r.LegacyKey == LegacyKeyOrganizationDefault {
		name = DefaultKeyAccountName
	}
	res, err := p.insertUsage(ctx, r, "", name, now)
	if err != nil || res.Duplicate || r.LegacyKey != LegacyKeyOrganizationDefault || r.Outcome != store.OutcomeAuthFailed {
		return res, err
	}
	if err := p.invalidateDefaultKey(ctx, r.OrgID, r.DefaultKeyGeneration, r.HTTPStatus); err != nil {
		return RecordResult{}, err
	}
	return res, nil
}

// invalidateDefaultKey marks the organization's default key, as its view
// holds it, invalid — when it is the key the call ran on: generation (when
// the caller sent one) must name the view's key, so a rejection of a key
// replaced since, however late it arrives (the orchestrator's outbox may
// deliver it long after), marks nothing. The store's compare-and-swap on
// the ciphertext covers a view behind the store (another process replaced
// the key): nothing is marked, and the view is marked stale and reloads on
// its next use.
func (p *Pool) invalidateDefaultKey(ctx context.Context, orgID, generation string, httpStatus int32) error {
	now := store.Normalize(p.now())
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		k := v.defaultKey
		if k == nil || k.Invalid {
			return v, nil
		}
		if generation != "" && generation != defaultKeyGeneration(k.Ciphertext) {
			return v, nil // the rejected key was replaced since
		}
		err := p.store.InvalidateDefaultKey(ctx, orgID, k.Ciphertext, now)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			n := v.clone()
			n.stale = true
			return n, nil
		}
		if err != nil {
			return nil, fmt.Errorf("marking the default key invalid: %w", err)
		}
		marked := *k
		marked.Invalid, marked.UpdateTime = true, now
		n := v.clone()
		n.defaultKey = &marked
		p.logger.WarnContext(ctx, "organization default key rejected by the upstream; marked invalid until it is set again",
			"organization_id", orgID, "http_status", httpStatus, "key_version", k.KeyVersion)
		return n, nil
	})
	return err
}
