package memstore

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// GetDefaultKey implements store.Store.
func (s *Store) GetDefaultKey(_ context.Context, orgID string) (store.DefaultKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.defaults[orgID]
	if !ok {
		return store.DefaultKey{}, fmt.Errorf("getting the default key: %w", store.ErrNotFound)
	}
	k.Ciphertext = bytes.Clone(k.Ciphertext)
	return k, nil
}

// PutDefaultKey implements store.Store.
func (s *Store) PutDefaultKey(_ context.Context, k store.DefaultKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k.Ciphertext = bytes.Clone(k.Ciphertext)
	k.UpdateTime = store.Normalize(k.UpdateTime)
	s.defaults[k.OrganizationID] = k
	return nil
}

// DeleteDefaultKey implements store.Store.
func (s *Store) DeleteDefaultKey(_ context.Context, orgID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.defaults, orgID)
	return nil
}

// InvalidateDefaultKey implements store.Store.
func (s *Store) InvalidateDefaultKey(_ context.Context, orgID string, ciphertext []byte, now time.Time) error {
	return s.swapDefaultKey(orgID, ciphertext, "invalidating the default key", func(k *store.DefaultKey) {
		k.Invalid = true
		k.UpdateTime = store.Normalize(now)
	})
}

// ReplaceDefaultKey implements store.Store.
func (s *Store) ReplaceDefaultKey(_ context.Context, orgID string, old []byte, key store.EncryptedKey, now time.Time) error {
	return s.swapDefaultKey(orgID, old, "replacing the default key", func(k *store.DefaultKey) {
		k.Ciphertext = bytes.Clone(key.Ciphertext)
		k.KeyVersion = key.Version
		k.UpdateTime = store.Normalize(now)
	})
}

// swapDefaultKey applies fn to the organization's default key if its
// ciphertext is still old.
func (s *Store) swapDefaultKey(orgID string, old []byte, doing string, fn func(k *store.DefaultKey)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.defaults[orgID]
	if !ok {
		return fmt.Errorf("%s: %w", doing, store.ErrNotFound)
	}
	if !bytes.Equal(k.Ciphertext, old) {
		return fmt.Errorf("%s: the stored key changed since it was read: %w", doing, store.ErrConflict)
	}
	fn(&k)
	s.defaults[orgID] = k
	return nil
}
