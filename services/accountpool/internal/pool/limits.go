package pool

import (
	"fmt"
)

// Organization limits (issue 15): an organization is bounded, so that
// what one answer, one view and one selection cost is bounded too.
const (
	// DefaultMaxAccountsPerOrganization is Config.MaxAccountsPerOrganization's
	// default: thousands, far more than one Anthropic organization's keys,
	// few enough that an organization's view, a selection's scan and a
	// WatchAccounts message stay small.
	DefaultMaxAccountsPerOrganization = 2000
	// DefaultMaxLabelsPerAccount is Config.MaxLabelsPerAccount's default.
	DefaultMaxLabelsPerAccount = 32
	// MaxLabelsPerAccountCeiling bounds Config.MaxLabelsPerAccount: the
	// API refuses more labels than this whatever the configuration, and
	// bounds each key (63 bytes) and value (256 bytes).
	MaxLabelsPerAccountCeiling = 64
)

// Limit names a configured organization limit, as LimitError reports it.
type Limit string

// The limits LimitError can name.
const (
	LimitAccountsPerOrganization Limit = "accounts per organization"
)

// LimitError is a write refused because it would take the organization
// past a configured limit. Retrying does not help: the organization must
// first make room (delete accounts) or the operator raise the limit.
type LimitError struct {
	Limit Limit
	Max   int
	cause error
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case LimitAccountsPerOrganization:
		return fmt.Sprintf("the organization has reached its limit of %d accounts; delete accounts it no longer uses, or ask the operator to raise -max-accounts-per-organization", e.Max)
	}
	return fmt.Sprintf("limit of %d %s reached", e.Max, e.Limit)
}

func (e *LimitError) Unwrap() error { return e.cause }
