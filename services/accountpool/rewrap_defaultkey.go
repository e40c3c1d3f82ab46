package accountpool

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// defaultKey re-encrypts the organization's default key unless it has
// none or it is current, exactly as account does for an account's key:
// decrypted with its own associated data (organization, default-key
// purpose), encrypted under the current version and written back with a
// compare-and-swap on the ciphertext read (ReplaceDefaultKey, which keeps
// its invalid flag), re-read once on a conflict. Problems of the key itself
// are failures reported and counted; anything else stops the run.
func (w *rewrapper) defaultKey(ctx context.Context, org string) (outcome, error) {
	k, err := w.store.GetDefaultKey(ctx, org)
	if errors.Is(err, store.ErrNotFound) {
		return absent, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the default key: %w", err)
	}
	current := w.keys.CurrentVersion()
	for retry := false; ; retry = true {
		if k.KeyVersion == current {
			if retry {
				return skipped, nil // set again or rewrapped by someone else meanwhile
			}
			return alreadyCurrent, nil
		}
		key, err := w.keys.DecryptDefaultKey(k.Ciphertext, org)
		if err != nil {
			w.report.Failed = append(w.report.Failed, RewrapFailure{
				OrganizationID: org, DefaultKey: true, KeyVersion: k.KeyVersion, Reason: err.Error(),
			})
			w.logger.WarnContext(ctx, "default key cannot be decrypted; left as it is", "organization_id", org,
				"key_version", k.KeyVersion, "error", err)
			return failed, nil
		}
		ct, ver, err := w.keys.EncryptDefaultKey(key, org)
		if err != nil {
			return 0, fmt.Errorf("encrypting the default key: %w", err)
		}
		err = w.store.ReplaceDefaultKey(ctx, org, k.Ciphertext, store.EncryptedKey{Ciphertext: ct, Version: ver}, w.now())
		switch {
		case err == nil:
			return rewrapped, nil
		case errors.Is(err, store.ErrNotFound):
			return skipped, nil // cleared meanwhile
		case errors.Is(err, store.ErrConflict) && !retry:
			w.logger.InfoContext(ctx, "default key changed while being rewrapped; reading it again", "organization_id", org)
			k, err = w.store.GetDefaultKey(ctx, org)
			if errors.Is(err, store.ErrNotFound) {
				return skipped, nil
			}
			if err != nil {
				return 0, fmt.Errorf("reading the default key again after a conflict: %w", err)
			}
		case errors.Is(err, store.ErrConflict):
			w.logger.WarnContext(ctx, "default key changed twice while being rewrapped; skipped, run again to take it", "organization_id", org)
			return skipped, nil
		default:
			return 0, err
		}
	}
}
