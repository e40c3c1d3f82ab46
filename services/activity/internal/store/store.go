// Package store defines what the Activity service keeps and the one Store
// interface every backend implements: memstore (embedded, for development)
// and pgstore (PostgreSQL, for production). Both must pass the conformance
// suite in storetest; a behaviour that differs between them is a bug in one
// of them.
//
// Stores trust their caller (the tracker) to have validated input: ids are
// canonical lowercase UUIDs, times carry microsecond precision (what
// PostgreSQL keeps), strings are valid UTF-8 without NUL, and JSON objects
// hold only what encoding/json produces when decoding into map[string]any.
// Stores do not re-validate; they only keep the rules that need atomicity
// (idempotent create, lifecycle transitions, sequence numbers, the change
// feed's numbering and its order, the progress event limit). Which
// statuses a completion may end is the caller's rule, passed as
// Completion.From; the store applies it atomically.
//
// An activity is identified by the pair (organization id, activity id).
// Every method takes the organization id and never reads, changes or
// returns another organization's rows: an activity of another organization
// behaves exactly as if it did not exist. The one exception is
// AbandonExpired, the reaper's sweep, which spans every organization and
// returns nothing of them but a count.
package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors a Store returns. Each method documents which of them it returns;
// any other error is an infrastructure failure (the database is down, the
// context ended), which a backend wraps with ErrUnavailable when a retry
// may succeed. Backends may wrap these, so callers test with errors.Is.
var (
	// ErrNotFound: no activity with that id exists in the organization.
	ErrNotFound = errors.New("activity not found")
	// ErrAlreadyEnded: the activity is no longer RUNNING (for
	// CompleteActivity: not in one of Completion.From), and the operation
	// is allowed only while it is.
	ErrAlreadyEnded = errors.New("activity has already ended")
	// ErrProgressLimit: the activity already holds MaxProgressEvents
	// progress events.
	ErrProgressLimit = errors.New("activity has reached its progress event limit")
	// ErrUnavailable may be wrapped by any method of a backend that
	// cannot reach its database, or whose database refused the work for a
	// reason a retry may fix (restarting, overloaded, a lost serialization
	// race). A write that fails this way may or may not have taken
	// effect: CreateActivity and CompleteActivity are safe to retry,
	// AppendProgress may then append the event twice.
	ErrUnavailable = errors.New("activity store unavailable")
	// ErrOutcomeUnknown, which wraps ErrUnavailable, is wrapped instead of
	// it when a write failed after it may have reached the database: the
	// connection broke or a timeout fired before the answer came, so the
	// write may have been applied. The caller must not report it as
	// failed; retrying is safe or not as ErrUnavailable says. Methods that
	// only read never return it.
	ErrOutcomeUnknown = fmt.Errorf("%w: outcome unknown", ErrUnavailable)
)

// MaxProgressEvents bounds the progress events of one activity, so that an
// activity and all its events fit in one GetActivity response. It lives in
// the store because only the store can count and append atomically.
const MaxProgressEvents = 128

// Status is where an activity is in its lifecycle. The values are also the
// stored text, so they must never change.
type Status string

// The lifecycle: RUNNING, then COMPLETED or FAILED, or ABANDONED by
// AbandonExpired and possibly completed from there (the tracker says when).
// The zero Status means "any" in a ListFilter and is never stored.
const (
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusAbandoned Status = "abandoned"
)

// Ended reports whether s is a status an activity has left RUNNING for:
// it takes no more progress events.
func (s Status) Ended() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusAbandoned
}

// Valid reports whether s is one of the stored statuses.
func (s Status) Valid() bool { return s == StatusRunning || s.Ended() }

// Activity is one unit of agent work as stored.
//
// JSON objects (Input, Output, Metadata) are returned as fresh maps the
// caller owns. An empty object and no object are the same thing: stores
// return nil for both.
type Activity struct {
	ID             string
	OrganizationID string
	SessionID      string
	UserID         string
	AgentType      string
	AgentName      string
	Category       string
	Status         Status
	Input          map[string]any
	Output         map[string]any
	ErrorMessage   string
	Metadata       map[string]any
	// StartTime and CompleteTime are in UTC; CompleteTime is zero while
	// the activity is running.
	StartTime    time.Time
	CompleteTime time.Time
	// Deadline is when the activity's task will have finished or given
	// up, in UTC; zero for none.
	Deadline time.Time
}

// Duration is how long the activity ran: zero while running, never
// negative.
func (a Activity) Duration() time.Duration {
	if a.CompleteTime.IsZero() {
		return 0
	}
	return a.CompleteTime.Sub(a.StartTime)
}

// NewActivity is what CreateActivity stores: a RUNNING activity.
type NewActivity struct {
	ID        string
	SessionID string
	UserID    string
	AgentType string
	AgentName string
	Category  string
	Input     map[string]any
	Metadata  map[string]any
	StartTime time.Time
	// Deadline is optional; zero means the activity is never abandoned.
	Deadline time.Time
}

// ProgressEvent is one step reported by a running activity.
type ProgressEvent struct {
	ActivityID string
	// Sequence is 1 for an activity's first event and grows by exactly one
	// per appended event, with no gaps, even under concurrent appends.
	Sequence   int64
	Message    string
	Data       map[string]any
	CreateTime time.Time
}

// NewProgressEvent is what AppendProgress appends.
type NewProgressEvent struct {
	Message    string
	Data       map[string]any
	CreateTime time.Time
}

// Completion ends an activity.
type Completion struct {
	// From lists the statuses the activity may be in for the completion to
	// apply; empty means StatusRunning only.
	From []Status
	// Status is StatusCompleted or StatusFailed.
	Status       Status
	Output       map[string]any
	ErrorMessage string
	// Metadata is merged into the stored metadata at the top level; its
	// keys win (PostgreSQL's jsonb || operator).
	Metadata     map[string]any
	CompleteTime time.Time
}

// FromStatuses is c.From, or StatusRunning alone when c.From is empty.
func (c Completion) FromStatuses() []Status {
	if len(c.From) == 0 {
		return []Status{StatusRunning}
	}
	return c.From
}

// ListFilter selects activities; zero fields match everything.
type ListFilter struct {
	SessionID string
	Status    Status
	// StartFrom is an inclusive lower bound on StartTime.
	StartFrom time.Time
	// StartTo is an exclusive upper bound on StartTime.
	StartTo time.Time
}

// Cursor is a position in the list order (StartTime descending, then ID
// descending). IDs compare as their canonical lowercase text, which is
// also the byte order of the UUIDs, so a uuid column sorts the same way.
type Cursor struct {
	StartTime time.Time
	ID        string
}

// CursorOf is the position of a in the list order.
func CursorOf(a Activity) Cursor { return Cursor{StartTime: a.StartTime, ID: a.ID} }

// ListQuery is one page request.
type ListQuery struct {
	Filter ListFilter
	// After, when set, skips every activity up to and including this
	// position, so pages neither repeat nor skip rows even when several
	// activities share a start time.
	After *Cursor
	// Limit is the most activities to return; it is always positive.
	Limit int
	// MaxBytes, when positive, bounds what one call loads: the result
	// stops before the activity that would take the total size of the
	// returned activities past MaxBytes, but always holds the first one,
	// so a list makes progress whatever the sizes. An activity's size is
	// the bytes of its encoded JSON objects (Input, Output, Metadata) and
	// of its error message: the fields that can be large. A backend may
	// measure JSON in its own encoding (jsonb's text form puts a space
	// after ':' and ','), so sizes are approximate and may differ between
	// backends by a few bytes per value.
	MaxBytes int
}

// Store keeps activities and their progress events. Implementations are
// safe for concurrent use. Besides the errors each method names, any method
// may fail with an infrastructure error, possibly wrapping ErrUnavailable.
type Store interface {
	// CreateActivity stores a RUNNING activity under orgID and returns it
	// with created = true. If an activity with a.ID already exists in
	// orgID, nothing is written and the stored activity is returned
	// unchanged with created = false, whatever its status and fields; of
	// concurrent creates of one id exactly one reports created = true.
	// An activity with the same id in another organization is a different
	// activity and does not affect the call.
	CreateActivity(ctx context.Context, orgID string, a NewActivity) (stored Activity, created bool, err error)

	// AppendProgress appends an event to a RUNNING activity and returns it
	// with its sequence number.
	// ErrNotFound if the activity does not exist in orgID; ErrAlreadyEnded
	// if it has ended; ErrProgressLimit if it already has
	// MaxProgressEvents events.
	AppendProgress(ctx context.Context, orgID, activityID string, ev NewProgressEvent) (ProgressEvent, error)

	// CompleteActivity moves an activity whose status is one of c.From
	// (RUNNING when c.From is empty) to c.Status, stores c's output and
	// error message (replacing any), merges c.Metadata into its metadata,
	// and returns the result. A CompleteTime before the activity's
	// StartTime (clock skew between replicas) is stored as the StartTime,
	// so durations are never negative.
	// ErrNotFound if the activity does not exist in orgID. ErrAlreadyEnded
	// if its status is not in c.From, in which case nothing changes and
	// the activity is returned as stored alongside the error, so that the
	// caller can tell a repeat of the winning completion from a
	// conflicting one without another read: of concurrent completions
	// exactly one succeeds, and every other one gets the winner's result.
	CompleteActivity(ctx context.Context, orgID, activityID string, c Completion) (Activity, error)

	// GetActivity returns an activity and its progress events in sequence
	// order. ErrNotFound if the activity does not exist in orgID.
	GetActivity(ctx context.Context, orgID, activityID string) (Activity, []ProgressEvent, error)

	// ListActivities returns at most q.Limit activities of orgID that match
	// q.Filter and come after q.After, newest first: StartTime descending,
	// then ID descending, stopping early when q.MaxBytes says so. more
	// reports whether further matching activities follow the last one
	// returned, so the caller knows whether to ask for another page
	// without loading it. No match is an empty result, not an error.
	ListActivities(ctx context.Context, orgID string, q ListQuery) (as []Activity, more bool, err error)

	// AbandonExpired marks RUNNING activities of every organization whose
	// Deadline plus grace is before now as StatusAbandoned, at most limit
	// of them, earliest deadline first, and returns how many it marked. An
	// abandoned activity gets CompleteTime now (or its StartTime, if now
	// is earlier) and ErrorMessage AbandonReason(Deadline, grace); its
	// output, metadata and events are unchanged. Activities without a
	// Deadline are never abandoned. Each activity is abandoned at most
	// once, however many sweeps run at the same time; a sweep may skip an
	// activity that a concurrent call is changing, which then either ends
	// it or leaves it to the next sweep. now has microsecond precision,
	// grace is a non-negative whole number of microseconds, and limit is
	// positive.
	AbandonExpired(ctx context.Context, now time.Time, grace time.Duration, limit int) (n int, err error)

	// ChangesSince returns at most q.Limit activities of orgID whose
	// latest change has a sequence number after q.After, in ascending
	// order of it, stopping early when q.MaxBytes says so, each with its
	// latest progress event (see changes.go for the guarantees). more
	// reports whether further changes follow the last one returned, as
	// of the read. q.After is never negative.
	ChangesSince(ctx context.Context, orgID string, q ChangeQuery) (changes []Change, more bool, err error)

	// RecentChangesStart returns the sequence number after which
	// ChangesSince finds orgID's n most recently changed activities (and
	// whatever changes after the call): the Seq of its (n+1)-th most
	// recent change, or 0 when it has no more than n activities. With
	// n = 0 it is the organization's high-water mark, the Seq of its
	// latest change (0 for none), from which ChangesSince returns only
	// changes made after the call. n is never negative.
	RecentChangesStart(ctx context.Context, orgID string, n int) (after int64, err error)
}

// AbandonReason is the error message of an activity abandoned for want of
// a completion by deadline plus grace, as every backend writes it: the
// deadline in RFC 3339 with microseconds, the grace in seconds.
func AbandonReason(deadline time.Time, grace time.Duration) string {
	return fmt.Sprintf("abandoned: no completion by the deadline %s plus grace %s",
		deadline.UTC().Format("2006-01-02T15:04:05.000000Z"), seconds(grace))
}

// seconds writes d, a whole number of microseconds, as decimal seconds
// without trailing zeros ("30s", "1.5s"), exactly as PostgreSQL's
// trim_scale(extract(epoch from interval)) does.
func seconds(d time.Duration) string {
	us := d.Microseconds()
	s := strconv.FormatInt(us/1e6, 10)
	if frac := us % 1e6; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	return s + "s"
}
