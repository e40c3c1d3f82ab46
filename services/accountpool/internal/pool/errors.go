package pool

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/validate"
)

// ErrNoAccounts is returned by Select when the organization has no account
// in service: none is ACTIVE or INVALID (all were deleted or disabled by an
// admin, or none was ever registered). The orchestrator then runs in legacy
// mode with the organization's default key or the operator's key.
//
// INVALID accounts count as in service on purpose: an organization that
// registered its own keys expects to be billed on them, and a rejected key
// is an incident for that organization to fix, not a reason to silently
// move its traffic onto the operator's fallback key. Such an organization
// gets ExhaustedError instead, naming the invalid accounts.
var ErrNoAccounts = errors.New("the organization has no accounts in service")

// ExhaustedError is returned by Select when the organization has accounts in
// service but none can take the request now.
type ExhaustedError struct {
	// RetryAfter is how long until the first skipped account frees up (its
	// cool-down ends, or its buckets refill enough for the estimate, or the
	// calls in flight that hold its capacity settle, at the latest when
	// their leases expire). Zero when no account frees up by itself: every
	// candidate is excluded, not allowed, disabled, invalid, or behind an
	// open breaker (a breaker exists to fail fast, so it is never waited
	// for).
	RetryAfter time.Duration
	// Candidates explains the accounts that free up first, at most
	// MaxAlternatives of them (see Selection.Candidates).
	Candidates []Candidate
	// Omitted and OmittedReasons count the accounts Candidates leaves out
	// (see Selection).
	Omitted        int
	OmittedReasons map[string]int
	// settleMayFree is set when an account worth waiting for lacks only
	// capacity: a call settling may give it back before RetryAfter.
	settleMayFree bool
}

// maxExplained bounds how many accounts the message names: it travels in a
// gRPC trailer.
const maxExplained = 20

// Error names the explained accounts, at most maxExplained, and counts the
// others by reason.
func (e *ExhaustedError) Error() string {
	var b strings.Builder
	b.WriteString("no account can take the request")
	for i, c := range e.Candidates {
		if i == maxExplained {
			fmt.Fprintf(&b, "; and %d more", len(e.Candidates)-maxExplained)
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s): %s", c.AccountName, c.AccountID, c.SkipReason)
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "; and %d others (%s)", e.Omitted, formatReasons(e.OmittedReasons))
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; the first account frees up in %s", e.RetryAfter.Round(time.Millisecond))
	} else {
		b.WriteString("; no account frees up by itself")
	}
	return b.String()
}

// FieldError is a request field that is wrong, and how to fix it.
type FieldError = validate.FieldError

// errNotAdmitted aborts a reservation whose account stopped being eligible
// between the snapshot and the atomic update.
var errNotAdmitted = errors.New("account no longer eligible")

// ErrStateUnavailable wraps a State's failure to reach where it keeps the
// live state (Redis down, say): the request may succeed on a retry.
var ErrStateUnavailable = errors.New("the pool's live state is unavailable")

// ErrStateContended wraps a State's failure to apply a change because other
// writers kept changing the same records first: the state is reachable, the
// request may succeed on a retry.
var ErrStateContended = errors.New("the pool's live state is too contended")
