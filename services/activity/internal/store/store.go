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
// (idempotent create, lifecycle transitions, sequence numbers, the progress
// event limit).
//
// An activity is identified by the pair (organization id, activity id).
// Every method takes the organization id and never reads, changes or
// returns another organization's rows: an activity of another organization
// behaves exactly as if it did not exist.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns. Each method documents which of them it returns;
// any other error is an infrastructure failure (the database is down, the
// context ended), which a backend wraps with ErrUnavailable when a retry
// may succeed. Backends may wrap these, so callers test with errors.Is.
var (
	// ErrNotFound: no activity with that id exists in the organization.
	ErrNotFound = errors.New("activity not found")
	// ErrAlreadyEnded: the activity is COMPLETED or FAILED, and the
	// operation is allowed only while it is RUNNING.
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
)

// MaxProgressEvents bounds the progress events of one activity, so that an
// activity and all its events fit in one GetActivity response. It lives in
// the store because only the store can count and append atomically.
const MaxProgressEvents = 128

// Status is where an activity is in its lifecycle. The values are also the
// stored text, so they must never change.
type Status string

// The lifecycle: RUNNING, then exactly one of COMPLETED or FAILED. The zero
// Status means "any" in a ListFilter and is never stored.
const (
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
)

// Ended reports whether s is a final status.
func (s Status) Ended() bool { return s == StatusCompleted || s == StatusFailed }

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

// Completion ends a running activity.
type Completion struct {
	// Status is StatusCompleted or StatusFailed.
	Status       Status
	Output       map[string]any
	ErrorMessage string
	// Metadata is merged into the stored metadata at the top level; its
	// keys win (PostgreSQL's jsonb || operator).
	Metadata     map[string]any
	CompleteTime time.Time
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

	// CompleteActivity moves a RUNNING activity to c.Status, stores c's
	// output and error message, merges c.Metadata into its metadata, and
	// returns the result. A CompleteTime before the activity's StartTime
	// (clock skew between replicas) is stored as the StartTime, so
	// durations are never negative.
	// ErrNotFound if the activity does not exist in orgID. ErrAlreadyEnded
	// if it has ended, in which case nothing changes and the activity is
	// returned as stored alongside the error, so that the caller can tell
	// a repeat of the winning completion from a conflicting one without
	// another read: of concurrent completions exactly one succeeds, and
	// every other one gets the winner's result.
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
}
