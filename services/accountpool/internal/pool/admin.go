package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/validate"
	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// NewAccount is what RegisterAccount needs.
type NewAccount struct {
	OrgID  string
	Name   string
	APIKey secret.String
	// Tier defaults to DefaultTier.
	Tier string
	// Weight defaults to 1.
	Weight     int32
	Priority   int32
	QuotaGroup string
	Labels     map[string]string
}

// AccountInfo is an account with its live state. Account.KeyCiphertext is
// always nil: nothing derived from the key leaves the pool except through
// Select.
type AccountInfo struct {
	Account        store.Account
	Breaker        BreakerInfo
	CooldownUntil  time.Time // zero unless cooling down
	CooldownReason CooldownReason
	Capacity       []Capacity // one per family, in Families() order
}

// BreakerInfo is the live breaker state of one account.
type BreakerInfo struct {
	State               BreakerState
	ConsecutiveFailures int32
	// OpenUntil is when an open breaker half-opens; zero when closed.
	OpenUntil time.Time
}

// Capacity is the live state of one account's buckets for one family.
type Capacity struct {
	Family                             Family
	RequestsLimit, RequestsRemaining   int64
	InputTokensLimit, InputRemaining   int64
	OutputTokensLimit, OutputRemaining int64
}

func (p *Pool) unknownTier(tier string) error {
	return &FieldError{Field: "tier", Problem: fmt.Sprintf("unknown tier %s; use one of %v", validate.Quote(tier), p.tiers.Names())}
}

// RegisterAccount encrypts the key and stores a new ACTIVE account. Its
// cost does not grow with the organization: the store checks the name and
// the account cap by index, and the new view shares all but O(log n) of
// the old one (tree.go).
//
// FieldError for an unknown tier or more labels than MaxLabelsPerAccount;
// *LimitError when the organization already has MaxAccountsPerOrganization
// accounts (checked by the store, atomically with the insert, so replicas
// sharing it cannot overshoot together); store.ErrAlreadyExists for a name
// the organization already uses.
func (p *Pool) RegisterAccount(ctx context.Context, n NewAccount) (AccountInfo, error) {
	if n.Tier == "" {
		n.Tier = DefaultTier
	}
	if !p.tiers.Has(n.Tier) {
		return AccountInfo{}, p.unknownTier(n.Tier)
	}
	if len(n.Labels) > p.maxLabels {
		return AccountInfo{}, &FieldError{Field: "labels", Problem: fmt.Sprintf("at most %d labels per account, got %d; drop some (the operator sets the limit with -max-labels-per-account)", p.maxLabels, len(n.Labels))}
	}
	if n.Weight == 0 {
		n.Weight = 1
	}
	id := uuid.NewString()
	ct, ver, err := p.keys.Encrypt(n.APIKey, n.OrgID, id)
	if err != nil {
		return AccountInfo{}, fmt.Errorf("encrypting api key: %w", err)
	}
	now := store.Normalize(p.now())
	a := store.Account{
		ID:             id,
		OrganizationID: n.OrgID,
		Name:           n.Name,
		Tier:           n.Tier,
		Status:         store.StatusActive,
		Weight:         n.Weight,
		Priority:       n.Priority,
		QuotaGroup:     n.QuotaGroup,
		Labels:         maps.Clone(n.Labels),
		KeyCiphertext:  ct,
		KeyVersion:     ver,
		CreateTime:     now,
		UpdateTime:     now,
	}
	v, err := p.modify(ctx, n.OrgID, func(v *orgView) (*orgView, error) {
		err := p.store.CreateAccount(ctx, a, p.maxAccounts)
		if errors.Is(err, store.ErrLimitReached) {
			return nil, &LimitError{Limit: LimitAccountsPerOrganization, Max: p.maxAccounts, cause: err}
		}
		if err != nil {
			return nil, err
		}
		return v.with(a), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	created, _ := v.account(id)
	infos, err := p.infos(ctx, v, []*account{created})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// GetAccount returns one account of the organization with its live state.
// store.ErrNotFound when the organization has no such account.
func (p *Pool) GetAccount(ctx context.Context, orgID, id string) (AccountInfo, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return AccountInfo{}, err
	}
	a, ok := v.account(id)
	if !ok {
		return AccountInfo{}, fmt.Errorf("account %s: %w", id, store.ErrNotFound)
	}
	if err := p.expireLeases(ctx); err != nil {
		return AccountInfo{}, err
	}
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// ListAccounts returns every account of the organization, ordered by name,
// with live state. It is O(accounts): for the pool's own tests and tools;
// the API pages (AccountsPage).
func (p *Pool) ListAccounts(ctx context.Context, orgID string) ([]AccountInfo, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return nil, err
	}
	if err := p.expireLeases(ctx); err != nil {
		return nil, err
	}
	return p.infos(ctx, v, v.accounts())
}

// AccountCursor is a position in the order AccountsPage lists accounts
// in: create time, then id. Neither ever changes, so pages walked while
// accounts are added, renamed or deleted never repeat or skip an account
// that exists throughout.
type AccountCursor struct {
	CreateTime time.Time
	ID         string
}

// AccountQuery asks for one page of accounts.
type AccountQuery struct {
	// PageSize is the most accounts returned, at least 1.
	PageSize int
	// After, when set, starts the page strictly after it.
	After *AccountCursor
}

// AccountPage is one page of accounts, oldest first.
type AccountPage struct {
	Accounts []AccountInfo
	// Next is the cursor of the last account returned when more may
	// follow, nil on the last page.
	Next *AccountCursor
}

// AccountsPage returns up to q.PageSize accounts of the organization with
// their live state, in create-time order (then id), after q.After. Its
// cost is O(log n + page): the view keeps the accounts in that order.
func (p *Pool) AccountsPage(ctx context.Context, orgID string, q AccountQuery) (AccountPage, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return AccountPage{}, err
	}
	if err := p.expireLeases(ctx); err != nil {
		return AccountPage{}, err
	}
	size := max(q.PageSize, 1)
	var probe *account
	if q.After != nil {
		probe = &account{Account: store.Account{CreateTime: q.After.CreateTime, ID: q.After.ID}}
	}
	page := make([]*account, 0, min(size, v.created.Len()))
	more := false
	for a := range v.created.After(probe) {
		if len(page) == size {
			more = true
			break
		}
		page = append(page, a)
	}
	infos, err := p.infos(ctx, v, page)
	if err != nil {
		return AccountPage{}, err
	}
	out := AccountPage{Accounts: infos}
	if more {
		last := page[len(page)-1]
		out.Next = &AccountCursor{CreateTime: last.CreateTime, ID: last.ID}
	}
	return out, nil
}

// ObserveAccounts returns the organization's first limit accounts in name
// order (all of them when limit <= 0) with their live state, how many it
// has, and the time the live state was read at, which is the time
// cool-downs and breakers were judged by and capacity refilled to. Only
// the accounts returned are read from the live state.
func (p *Pool) ObserveAccounts(ctx context.Context, orgID string, limit int) ([]AccountInfo, int, time.Time, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	if err := p.expireLeases(ctx); err != nil {
		return nil, 0, time.Time{}, err
	}
	total := v.names.Len()
	if limit <= 0 || limit > total {
		limit = total
	}
	accounts := make([]*account, 0, limit)
	for a := range v.names.All() {
		if len(accounts) == limit {
			break
		}
		accounts = append(accounts, a)
	}
	now := p.now()
	infos, err := p.infosAt(ctx, v, accounts, now)
	return infos, total, now, err
}

// AccountChanges lists the fields UpdateAccount changes; nil fields stay.
type AccountChanges struct {
	Name       *string
	Tier       *string
	Weight     *int32
	Priority   *int32
	Status     *store.Status
	QuotaGroup *string
}

// UpdateAccount applies the changes. Setting the status to ACTIVE (whatever
// it was) also closes the account's breaker: it is the admin's "this key is
// good now" and the only way back for an INVALID account. FieldError for an
// unknown tier; store.ErrNotFound; store.ErrAlreadyExists for a taken name.
func (p *Pool) UpdateAccount(ctx context.Context, orgID, id string, c AccountChanges) (AccountInfo, error) {
	if c.Tier != nil && !p.tiers.Has(*c.Tier) {
		return AccountInfo{}, p.unknownTier(*c.Tier)
	}
	var updated store.Account
	v, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		var err error
		updated, err = p.store.UpdateAccount(ctx, orgID, id, store.AccountUpdate{
			Name: c.Name, Tier: c.Tier, Weight: c.Weight, Priority: c.Priority,
			Status: c.Status, QuotaGroup: c.QuotaGroup, UpdateTime: store.Normalize(p.now()),
		})
		if err != nil {
			return nil, err
		}
		return v.with(updated), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	a, _ := v.account(id)
	if c.Status != nil && *c.Status == store.StatusActive {
		if err := p.closeBreaker(ctx, a); err != nil {
			return AccountInfo{}, err
		}
	}
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// RotateKey replaces an account's API key with key, encrypted under the
// keyring's current version and bound to (organization, account). An
// INVALID account becomes ACTIVE (the rejected key is gone); a DISABLED one
// stays DISABLED, which is an admin's decision rather than the key's. The
// breaker closes whatever the status: its failures were the old key's. Leases
// already handed out carry the old key and settle as usual; selections after
// the rotation decrypt the new one. Capacity and cool-downs stay: they
// belong to the Anthropic organization, not to the key.
//
// The key appears in no error and no log line. store.ErrNotFound when the
// organization has no such account.
func (p *Pool) RotateKey(ctx context.Context, orgID, id string, key secret.String) (AccountInfo, error) {
	ct, ver, err := p.keys.Encrypt(key, orgID, id)
	if err != nil {
		return AccountInfo{}, fmt.Errorf("encrypting api key: %w", err)
	}
	var updated store.Account
	v, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		u := store.AccountUpdate{Key: &store.EncryptedKey{Ciphertext: ct, Version: ver}, UpdateTime: store.Normalize(p.now())}
		if a, ok := v.account(id); ok && a.Status == store.StatusInvalid {
			active := store.StatusActive
			u.Status = &active
		}
		var err error
		if updated, err = p.store.UpdateAccount(ctx, orgID, id, u); err != nil {
			return nil, err
		}
		if updated.Status == store.StatusInvalid {
			// This view was behind the store (another process marked the
			// account invalid after our last reload): the rule still holds.
			active := store.StatusActive
			if updated, err = p.store.UpdateAccount(ctx, orgID, id, store.AccountUpdate{Status: &active, UpdateTime: u.UpdateTime}); err != nil {
				return nil, err
			}
		}
		return v.with(updated), nil
	})
	if err != nil {
		return AccountInfo{}, err
	}
	a, _ := v.account(id)
	if err := p.closeBreaker(ctx, a); err != nil {
		return AccountInfo{}, err
	}
	p.logger.InfoContext(ctx, "account key rotated", "organization_id", orgID, "account_id", id, "key_version", ver, "status", string(updated.Status))
	infos, err := p.infos(ctx, v, []*account{a})
	if err != nil {
		return AccountInfo{}, err
	}
	return infos[0], nil
}

// DeleteAccount removes an account; its usage rows stay. Its live records
// are dropped, except capacity shared with its quota group.
// store.ErrNotFound when the organization has no such account.
func (p *Pool) DeleteAccount(ctx context.Context, orgID, id string) error {
	var deleted *account
	_, err := p.modify(ctx, orgID, func(v *orgView) (*orgView, error) {
		if err := p.store.DeleteAccount(ctx, orgID, id); err != nil {
			return nil, err
		}
		deleted, _ = v.account(id)
		now := p.now()
		return v.without(id, now, now.Add(2*p.leaseTimeout)), nil
	})
	if err != nil || deleted == nil {
		return err
	}
	return p.dropLive(ctx, deleted)
}

// dropLive drops a deleted account's live records, except capacity and
// cool-downs its quota group shares with other accounts.
func (p *Pool) dropLive(ctx context.Context, a *account) error {
	for _, f := range Families() {
		err := p.state.Update(ctx, ref(a, f), func(l *Live) error {
			l.Breaker = Breaker{}
			if a.QuotaGroup == "" {
				l.Cooldown, l.Buckets = Cooldown{}, Buckets{}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dropping live state of account %s: %w", a.ID, err)
		}
	}
	p.changes.Notify(a.OrganizationID)
	return nil
}

// closeBreaker closes an account's breaker: an admin vouched for its key.
func (p *Pool) closeBreaker(ctx context.Context, a *account) error {
	err := p.state.Update(ctx, ref(a, FamilyDefault), func(l *Live) error {
		l.Breaker = Breaker{}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resetting breaker of account %s: %w", a.ID, err)
	}
	p.changes.Notify(a.OrganizationID)
	return nil
}

// infos attaches live state to accounts of the view v.
func (p *Pool) infos(ctx context.Context, v *orgView, accounts []*account) ([]AccountInfo, error) {
	return p.infosAt(ctx, v, accounts, p.now())
}

// infosAt attaches live state to accounts of the view v, as of now.
func (p *Pool) infosAt(ctx context.Context, v *orgView, accounts []*account, now time.Time) ([]AccountInfo, error) {
	fams := Families()
	refs := make([]Ref, 0, len(accounts)*len(fams))
	for _, a := range accounts {
		for _, f := range fams {
			refs = append(refs, ref(a, f))
		}
	}
	out := make([]AccountInfo, len(accounts))
	for i, a := range accounts {
		out[i].Account = a.Account
		out[i].Account.KeyCiphertext = nil
		out[i].Account.Labels = maps.Clone(a.Labels)
		out[i].Capacity = make([]Capacity, len(fams))
	}
	err := p.state.Read(ctx, Refs(refs), func(k int, l Records) {
		i, j := k/len(fams), k%len(fams)
		a, info := accounts[i], &out[i]
		if j == 0 {
			b := *l.Breaker
			info.Breaker = BreakerInfo{State: p.breaker.state(b, now), ConsecutiveFailures: b.Failures}
			if b.Open {
				info.Breaker.OpenUntil = b.OpenUntil
			}
			if l.Cooldown.Until.After(now) {
				info.CooldownUntil, info.CooldownReason = l.Cooldown.Until, l.Cooldown.Reason
			}
		}
		f := fams[j]
		lim, _ := v.meteredLimits(a, f, p.tiers)
		bs := *l.Buckets
		info.Capacity[j] = Capacity{
			Family:            f,
			RequestsLimit:     int64(bs.Requests.limit(lim.RPM)),
			RequestsRemaining: remaining(bs.Requests, lim.RPM, now),
			InputTokensLimit:  int64(bs.Input.limit(lim.InputTPM)),
			InputRemaining:    remaining(bs.Input, lim.InputTPM, now),
			OutputTokensLimit: int64(bs.Output.limit(lim.OutputTPM)),
			OutputRemaining:   remaining(bs.Output, lim.OutputTPM, now),
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading live state: %w", err)
	}
	return out, nil
}

// remaining is what a new call could take: the level less the calls in
// flight.
func remaining(b Bucket, table int64, now time.Time) int64 {
	return int64(math.Floor(max(0, b.available(table, now))))
}

// Settings returns the organization's settings, the defaults when it never
// saved any.
func (p *Pool) Settings(ctx context.Context, orgID string) (store.Settings, error) {
	v, err := p.view(ctx, orgID)
	if err != nil {
		return store.Settings{}, err
	}
	return v.settings, nil
}

// UpdateSettings sets the organization's selection strategy; an empty
// strategy leaves it unchanged. FieldError for an unknown strategy. It is
// ChangeSettings with the strategy alone.
func (p *Pool) UpdateSettings(ctx context.Context, orgID string, strategy store.Strategy) (store.Settings, error) {
	return p.ChangeSettings(ctx, orgID, SettingsChange{Strategy: strategy})
}

func validStrategy(s store.Strategy) bool { return slices.Contains(store.Strategies(), s) }

func unknownStrategy(field string, s store.Strategy) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf("unknown strategy %s; use one of %q", validate.Quote(string(s)), store.Strategies())}
}
