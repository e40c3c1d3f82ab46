package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// GetDefaultKey implements store.Store.
func (s *Store) GetDefaultKey(ctx context.Context, orgID string) (store.DefaultKey, error) {
	k := store.DefaultKey{OrganizationID: orgID}
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`SELECT key_ciphertext, key_version, invalid, update_time FROM default_keys WHERE organization_id = $1`, orgID).
			QueryRow(func(row pgx.Row) error {
				return row.Scan(&k.Ciphertext, &k.KeyVersion, &k.Invalid, &k.UpdateTime)
			})
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.DefaultKey{}, fmt.Errorf("getting the default key: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.DefaultKey{}, wrapRead(ctx, "getting the default key", err)
	}
	k.UpdateTime = store.Normalize(k.UpdateTime)
	return k, nil
}

// PutDefaultKey implements store.Store. The insert fires the default_keys
// triggers: the change notification and the organizations registry.
func (s *Store) PutDefaultKey(ctx context.Context, k store.DefaultKey) error {
	err := s.tenant(ctx, k.OrganizationID, func(b *pgx.Batch) {
		b.Queue(`INSERT INTO default_keys (organization_id, key_ciphertext, key_version, invalid, update_time)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (organization_id) DO UPDATE
			SET key_ciphertext = EXCLUDED.key_ciphertext, key_version = EXCLUDED.key_version,
				invalid = EXCLUDED.invalid, update_time = EXCLUDED.update_time`,
			k.OrganizationID, nonNil(k.Ciphertext), k.KeyVersion, k.Invalid, store.Normalize(k.UpdateTime))
	})
	return wrap(ctx, "saving the default key", err)
}

// DeleteDefaultKey implements store.Store.
func (s *Store) DeleteDefaultKey(ctx context.Context, orgID string) error {
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(`DELETE FROM default_keys WHERE organization_id = $1`, orgID)
	})
	return wrap(ctx, "deleting the default key", err)
}

// InvalidateDefaultKey implements store.Store: a compare-and-swap like
// ReplaceKey, one round trip.
func (s *Store) InvalidateDefaultKey(ctx context.Context, orgID string, ciphertext []byte, now time.Time) error {
	return s.swapDefaultKey(ctx, orgID, "invalidating the default key",
		`UPDATE default_keys SET invalid = true, update_time = $3
			WHERE organization_id = $1 AND key_ciphertext = $2`,
		orgID, nonNil(ciphertext), store.Normalize(now))
}

// ReplaceDefaultKey implements store.Store: a compare-and-swap like
// ReplaceKey, one round trip; the invalid flag stays.
func (s *Store) ReplaceDefaultKey(ctx context.Context, orgID string, old []byte, key store.EncryptedKey, now time.Time) error {
	return s.swapDefaultKey(ctx, orgID, "replacing the default key",
		`UPDATE default_keys SET key_ciphertext = $3, key_version = $4, update_time = $5
			WHERE organization_id = $1 AND key_ciphertext = $2`,
		orgID, nonNil(old), nonNil(key.Ciphertext), key.Version, store.Normalize(now))
}

// swapDefaultKey runs a conditional UPDATE of the organization's default
// key (its first two parameters are the organization and the expected
// ciphertext), then, in the same implicit transaction, whether a key
// exists at all, which tells ErrConflict from ErrNotFound.
func (s *Store) swapDefaultKey(ctx context.Context, orgID, doing, update string, args ...any) error {
	var (
		updated int64
		exists  bool
	)
	err := s.tenant(ctx, orgID, func(b *pgx.Batch) {
		b.Queue(update, args...).Exec(func(tag pgconn.CommandTag) error {
			updated = tag.RowsAffected()
			return nil
		})
		b.Queue(`SELECT EXISTS (SELECT 1 FROM default_keys WHERE organization_id = $1)`, orgID).
			QueryRow(func(row pgx.Row) error { return row.Scan(&exists) })
	})
	switch {
	case err != nil:
		return wrap(ctx, doing, err)
	case updated > 0:
		return nil
	case exists:
		return fmt.Errorf("%s: the stored key changed since it was read: %w", doing, store.ErrConflict)
	default:
		return fmt.Errorf("%s: %w", doing, store.ErrNotFound)
	}
}
