// Package memstore is the embedded [store.Store]: maps behind one mutex.
//
// It is for development and tests only: it keeps nothing across restarts.
// It passes the storetest conformance suite in full, and any behaviour that
// differs from pgstore is a bug in one of them. Values are copied in and out,
// so callers can never alias stored state.
package memstore

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	accounts map[string]store.Account // by account id
	// names maps each organization's account names to their ids: name
	// checks and account counts by index, not by scanning every account.
	names    map[string]map[string]string
	settings map[string]store.Settings
	defaults map[string]store.DefaultKey    // by organization
	usage    map[string][]store.UsageRecord // by organization, in insert order
	usageKey map[usageKey]int               // index into usage[org]
}

// usageKey identifies one upstream call (see store.Store.InsertUsage).
type usageKey struct {
	org, requestID, upstreamID string
	attempt                    int32
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		accounts: map[string]store.Account{},
		names:    map[string]map[string]string{},
		settings: map[string]store.Settings{},
		defaults: map[string]store.DefaultKey{},
		usage:    map[string][]store.UsageRecord{},
		usageKey: map[usageKey]int{},
	}
}

// CreateAccount implements store.Store. Under the store's one mutex the
// count and the insert are atomic.
func (s *Store) CreateAccount(_ context.Context, a store.Account, maxAccounts int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.accounts[a.ID]; ok {
		return fmt.Errorf("creating account %s: id taken: %w", a.ID, store.ErrAlreadyExists)
	}
	if s.nameTaken(a.OrganizationID, a.Name, "") {
		return fmt.Errorf("creating account %q: an account with this name exists: %w", a.Name, store.ErrAlreadyExists)
	}
	if n := len(s.names[a.OrganizationID]); maxAccounts > 0 && n >= maxAccounts {
		return fmt.Errorf("creating account %q: the organization has %d accounts, its limit is %d: %w", a.Name, n, maxAccounts, store.ErrLimitReached)
	}
	s.accounts[a.ID] = copyAccount(normalizeAccount(a))
	s.setName(a.OrganizationID, a.Name, a.ID)
	return nil
}

func (s *Store) nameTaken(org, name, exceptID string) bool {
	id, ok := s.names[org][name]
	return ok && id != exceptID
}

func (s *Store) setName(org, name, id string) {
	m := s.names[org]
	if m == nil {
		m = map[string]string{}
		s.names[org] = m
	}
	m[name] = id
}

func (s *Store) dropName(org, name string) {
	delete(s.names[org], name)
	if len(s.names[org]) == 0 {
		delete(s.names, org)
	}
}

// GetAccount implements store.Store.
func (s *Store) GetAccount(_ context.Context, orgID, id string) (store.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok || a.OrganizationID != orgID {
		return store.Account{}, fmt.Errorf("getting account %s: %w", id, store.ErrNotFound)
	}
	return copyAccount(a), nil
}

// ListAccounts implements store.Store.
func (s *Store) ListAccounts(_ context.Context, orgID string) ([]store.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Account
	for _, id := range s.names[orgID] {
		out = append(out, copyAccount(s.accounts[id]))
	}
	slices.SortFunc(out, func(a, b store.Account) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// UpdateAccount implements store.Store.
func (s *Store) UpdateAccount(_ context.Context, orgID, id string, u store.AccountUpdate) (store.Account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok || a.OrganizationID != orgID {
		return store.Account{}, fmt.Errorf("updating account %s: %w", id, store.ErrNotFound)
	}
	if u.Name != nil {
		if s.nameTaken(orgID, *u.Name, id) {
			return store.Account{}, fmt.Errorf("renaming account %s to %q: an account with this name exists: %w", id, *u.Name, store.ErrAlreadyExists)
		}
		s.dropName(orgID, a.Name)
		s.setName(orgID, *u.Name, id)
		a.Name = *u.Name
	}
	if u.Tier != nil {
		a.Tier = *u.Tier
	}
	if u.Weight != nil {
		a.Weight = *u.Weight
	}
	if u.Priority != nil {
		a.Priority = *u.Priority
	}
	if u.Status != nil {
		a.Status = *u.Status
	}
	if u.QuotaGroup != nil {
		a.QuotaGroup = *u.QuotaGroup
	}
	if u.Key != nil {
		a.KeyCiphertext = bytes.Clone(u.Key.Ciphertext)
		a.KeyVersion = u.Key.Version
	}
	a.UpdateTime = store.Normalize(u.UpdateTime)
	s.accounts[id] = a
	return copyAccount(a), nil
}

// DeleteAccount implements store.Store.
func (s *Store) DeleteAccount(_ context.Context, orgID, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok || a.OrganizationID != orgID {
		return fmt.Errorf("deleting account %s: %w", id, store.ErrNotFound)
	}
	delete(s.accounts, id)
	s.dropName(orgID, a.Name)
	return nil
}

// ReplaceKey implements store.Store.
func (s *Store) ReplaceKey(_ context.Context, orgID, id string, old []byte, key store.EncryptedKey, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[id]
	if !ok || a.OrganizationID != orgID {
		return fmt.Errorf("replacing the key of account %s: %w", id, store.ErrNotFound)
	}
	if !bytes.Equal(a.KeyCiphertext, old) {
		return fmt.Errorf("replacing the key of account %s: the stored key changed since it was read: %w", id, store.ErrConflict)
	}
	a.KeyCiphertext = bytes.Clone(key.Ciphertext)
	a.KeyVersion = key.Version
	a.UpdateTime = store.Normalize(now)
	s.accounts[id] = a
	return nil
}

// ListOrganizations implements store.Store: the organizations that have
// accounts or a default key now (a process-local store has no registry to
// outlive them).
func (s *Store) ListOrganizations(context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range s.accounts {
		seen[a.OrganizationID] = true
	}
	for org := range s.defaults {
		seen[org] = true
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// GetSettings implements store.Store.
func (s *Store) GetSettings(_ context.Context, orgID string) (store.Settings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.settings[orgID]; ok {
		return st, nil
	}
	return store.DefaultSettings(orgID), nil
}

// PutSettings implements store.Store.
func (s *Store) PutSettings(_ context.Context, st store.Settings) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.UpdateTime = store.Normalize(st.UpdateTime)
	s.settings[st.OrganizationID] = st
	return nil
}

// InsertUsage implements store.Store.
func (s *Store) InsertUsage(_ context.Context, r store.UsageRecord) (store.UsageRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := usageKey{r.OrganizationID, r.RequestID, r.UpstreamRequestID, r.Attempt}
	if i, ok := s.usageKey[k]; ok {
		return s.usage[r.OrganizationID][i], fmt.Errorf("inserting usage for request %q attempt %d: %w", r.RequestID, r.Attempt, store.ErrDuplicate)
	}
	r.CreateTime = store.Normalize(r.CreateTime)
	s.usage[r.OrganizationID] = append(s.usage[r.OrganizationID], r)
	s.usageKey[k] = len(s.usage[r.OrganizationID]) - 1
	return r, nil
}

// SumUsage implements store.Store.
func (s *Store) SumUsage(_ context.Context, orgID string, f store.UsageFilter) ([]store.UsageTotals, error) {
	f = normalizeFilter(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	byAccount := map[string]*store.UsageTotals{}
	newest := map[string]store.UsageRecord{}
	for _, r := range s.usage[orgID] {
		if !matches(r, f) {
			continue
		}
		// Legacy rows have no account: each key name is a total of its
		// own. The NUL keeps them apart from any account id.
		key := r.AccountID
		if key == "" {
			key = "\x00" + r.AccountName
		}
		t := byAccount[key]
		if t == nil {
			t = &store.UsageTotals{AccountID: r.AccountID}
			byAccount[key] = t
		}
		if n, ok := newest[key]; !ok || newerFirst(r, n) < 0 {
			newest[key] = r
			t.AccountName = r.AccountName
		}
		t.Requests++
		if r.Outcome != store.OutcomeSuccess {
			t.FailedRequests++
		}
		t.InputTokens += r.InputTokens
		t.OutputTokens += r.OutputTokens
		t.CacheReadTokens += r.CacheReadTokens
		t.CacheCreationTokens += r.CacheCreationTokens
		t.CostUSD += r.CostUSD
	}
	out := make([]store.UsageTotals, 0, len(byAccount))
	for _, t := range byAccount {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b store.UsageTotals) int {
		return cmp.Or(cmp.Compare(a.AccountName, b.AccountName), cmp.Compare(a.AccountID, b.AccountID))
	})
	return out, nil
}

// ListUsage implements store.Store.
func (s *Store) ListUsage(_ context.Context, orgID string, f store.UsageFilter, limit int, after *store.UsageCursor) ([]store.UsageRecord, *store.UsageCursor, error) {
	if limit <= 0 {
		return nil, nil, fmt.Errorf("listing usage: limit must be positive, got %d", limit)
	}
	f = normalizeFilter(f)
	if after != nil {
		after = &store.UsageCursor{CreateTime: store.Normalize(after.CreateTime), ID: after.ID}
	}
	s.mu.Lock()
	var rows []store.UsageRecord
	for _, r := range s.usage[orgID] {
		if matches(r, f) && (after == nil || afterCursor(r, *after)) {
			rows = append(rows, r)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(rows, newerFirst)
	if len(rows) <= limit {
		return rows, nil, nil
	}
	rows = rows[:limit]
	last := rows[limit-1]
	return rows, &store.UsageCursor{CreateTime: last.CreateTime, ID: last.ID}, nil
}

func matches(r store.UsageRecord, f store.UsageFilter) bool {
	if f.AccountID != "" && r.AccountID != f.AccountID {
		return false
	}
	if !f.Start.IsZero() && r.CreateTime.Before(f.Start) {
		return false
	}
	if !f.End.IsZero() && !r.CreateTime.Before(f.End) {
		return false
	}
	return true
}

// newerFirst orders rows newest first: CreateTime descending, then ID
// descending.
func newerFirst(a, b store.UsageRecord) int {
	return cmp.Or(b.CreateTime.Compare(a.CreateTime), cmp.Compare(b.ID, a.ID))
}

// afterCursor reports whether r comes strictly after c in newest-first
// order.
func afterCursor(r store.UsageRecord, c store.UsageCursor) bool {
	if d := r.CreateTime.Compare(c.CreateTime); d != 0 {
		return d < 0
	}
	return r.ID < c.ID
}

func normalizeFilter(f store.UsageFilter) store.UsageFilter {
	f.Start = store.Normalize(f.Start)
	f.End = store.Normalize(f.End)
	return f
}

func normalizeAccount(a store.Account) store.Account {
	a.CreateTime = store.Normalize(a.CreateTime)
	a.UpdateTime = store.Normalize(a.UpdateTime)
	return a
}

func copyAccount(a store.Account) store.Account {
	a.Labels = maps.Clone(a.Labels)
	a.KeyCiphertext = bytes.Clone(a.KeyCiphertext)
	return a
}
