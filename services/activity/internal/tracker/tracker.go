package tracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/switchyard-dev/switchyard/pkg/wakeup"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// ErrCompletionConflict is returned by Complete when the activity has
// already ended with a different completion. The stored activity is left
// as it was.
var ErrCompletionConflict = errors.New("activity already ended with a different completion")

// Tracker applies the activity rules on top of a store.
type Tracker struct {
	store     store.Store
	now       func() time.Time
	watchPoll time.Duration
	// hub wakes this tracker's watches after its own writes (watch.go).
	hub wakeup.Hub
}

// DefaultWatchPoll is how often a watch reads the store unprompted.
const DefaultWatchPoll = time.Second

// Config tunes a Tracker; the zero value of every field is its default.
type Config struct {
	// Now is the clock for start, progress and completion times;
	// time.Now when nil. Tests inject one to pin times and durations.
	Now func() time.Time
	// WatchPoll is how often a watch reads the store without having been
	// woken, so that it sees writes this tracker did not make: another
	// replica's on the same database. Zero means DefaultWatchPoll.
	WatchPoll time.Duration
}

// New returns a Tracker over s.
func New(s store.Store, cfg Config) *Tracker {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WatchPoll <= 0 {
		cfg.WatchPoll = DefaultWatchPoll
	}
	return &Tracker{store: s, now: cfg.Now, watchPoll: cfg.WatchPoll}
}

// clock is now in UTC with the microsecond precision stores keep, so a
// time returned by a call equals the time later read back.
func (t *Tracker) clock() time.Time {
	return t.now().UTC().Truncate(time.Microsecond)
}

// StartInput is a request to start an activity.
type StartInput struct {
	OrganizationID string
	// ActivityID is optional; giving one makes Start idempotent.
	ActivityID string
	SessionID  string
	UserID     string
	AgentType  string
	AgentName  string
	Category   string
	Input      map[string]any
	Metadata   map[string]any
	// Deadline is optional: when the task will have finished or given
	// up. Zero means none, and the activity is never abandoned.
	Deadline time.Time
}

// Start creates a RUNNING activity, or returns the existing one with
// created = false when in.ActivityID already exists in the organization.
// Errors: *ValidationError, or a store failure.
func (t *Tracker) Start(ctx context.Context, in StartInput) (a store.Activity, created bool, err error) {
	if err := checkOrganization(in.OrganizationID); err != nil {
		return store.Activity{}, false, err
	}
	var id string
	if in.ActivityID == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return store.Activity{}, false, fmt.Errorf("generating activity id: %w", err)
		}
		id = u.String()
	} else if id, err = parseActivityID(in.ActivityID); err != nil {
		return store.Activity{}, false, err
	}
	for _, f := range []struct{ name, v string }{
		{"session_id", in.SessionID},
		{"user_id", in.UserID},
		{"agent_type", in.AgentType},
		{"agent_name", in.AgentName},
		{"category", in.Category},
	} {
		if err := checkIdentifier(f.name, f.v); err != nil {
			return store.Activity{}, false, err
		}
	}
	if err := checkObject("input_data", in.Input, MaxObjectBytes); err != nil {
		return store.Activity{}, false, err
	}
	if err := checkObject("metadata", in.Metadata, MaxMetadataBytes); err != nil {
		return store.Activity{}, false, err
	}

	a, created, err = t.store.CreateActivity(ctx, in.OrganizationID, store.NewActivity{
		ID:        id,
		SessionID: in.SessionID,
		UserID:    in.UserID,
		AgentType: in.AgentType,
		AgentName: in.AgentName,
		Category:  in.Category,
		Input:     in.Input,
		Metadata:  in.Metadata,
		StartTime: t.clock(),
		Deadline:  microUTC(in.Deadline),
	})
	if err != nil {
		return store.Activity{}, false, fmt.Errorf("creating activity %s: %w", id, err)
	}
	if created {
		t.hub.Notify(in.OrganizationID)
	}
	return a, created, nil
}

// ProgressInput is one progress report.
type ProgressInput struct {
	OrganizationID string
	ActivityID     string
	// Message is required: it is what a person reads in the timeline.
	Message string
	Data    map[string]any
}

// Progress appends an event to a RUNNING activity.
// Errors: *ValidationError, store.ErrNotFound, store.ErrAlreadyEnded,
// store.ErrProgressLimit, or a store failure.
func (t *Tracker) Progress(ctx context.Context, in ProgressInput) (store.ProgressEvent, error) {
	if err := checkOrganization(in.OrganizationID); err != nil {
		return store.ProgressEvent{}, err
	}
	id, err := parseActivityID(in.ActivityID)
	if err != nil {
		return store.ProgressEvent{}, err
	}
	if in.Message == "" {
		return store.ProgressEvent{}, invalid("message", "is required: say what happened, e.g. \"attempt 2 of 3 after 429 on account X\"")
	}
	if err := checkText("message", in.Message, MaxProgressMessageBytes); err != nil {
		return store.ProgressEvent{}, err
	}
	if err := checkObject("data", in.Data, MaxProgressDataBytes); err != nil {
		return store.ProgressEvent{}, err
	}
	ev, err := t.store.AppendProgress(ctx, in.OrganizationID, id, store.NewProgressEvent{
		Message:    in.Message,
		Data:       in.Data,
		CreateTime: t.clock(),
	})
	if err != nil {
		return store.ProgressEvent{}, fmt.Errorf("appending progress to activity %s: %w", id, err)
	}
	t.hub.Notify(in.OrganizationID)
	return ev, nil
}

// completableFrom is what Complete may end: a RUNNING activity, or an
// ABANDONED one, whose late completion records the real outcome. That is
// the one way out of a status other than RUNNING: the abandonment was the
// service's guess that the task was gone, and the task's own word is
// better; a COMPLETED or FAILED activity is the task's word already.
var completableFrom = []store.Status{store.StatusRunning, store.StatusAbandoned}

// CompleteInput ends an activity.
type CompleteInput struct {
	OrganizationID string
	ActivityID     string
	// Status is store.StatusCompleted or store.StatusFailed.
	Status       store.Status
	Output       map[string]any
	ErrorMessage string
	// Metadata is merged into the activity's metadata; its keys win.
	Metadata map[string]any
}

// Complete ends a RUNNING or ABANDONED activity, or returns the stored
// activity when it already ended with this very completion (see the
// package comment).
// Errors: *ValidationError, store.ErrNotFound, ErrCompletionConflict, or a
// store failure.
func (t *Tracker) Complete(ctx context.Context, in CompleteInput) (store.Activity, error) {
	if err := checkOrganization(in.OrganizationID); err != nil {
		return store.Activity{}, err
	}
	id, err := parseActivityID(in.ActivityID)
	if err != nil {
		return store.Activity{}, err
	}
	if in.Status != store.StatusCompleted && in.Status != store.StatusFailed {
		return store.Activity{}, invalid("status", "must be COMPLETED or FAILED")
	}
	if err := checkObject("output_data", in.Output, MaxObjectBytes); err != nil {
		return store.Activity{}, err
	}
	if err := checkText("error_message", in.ErrorMessage, MaxErrorMessageBytes); err != nil {
		return store.Activity{}, err
	}
	if in.Status == store.StatusCompleted && in.ErrorMessage != "" {
		return store.Activity{}, invalid("error_message", "is set but status is COMPLETED; use status FAILED, or leave error_message empty")
	}
	if err := checkObject("metadata", in.Metadata, MaxMetadataBytes); err != nil {
		return store.Activity{}, err
	}

	stored, err := t.store.CompleteActivity(ctx, in.OrganizationID, id, store.Completion{
		From:         completableFrom,
		Status:       in.Status,
		Output:       in.Output,
		ErrorMessage: in.ErrorMessage,
		Metadata:     in.Metadata,
		CompleteTime: t.clock(),
	})
	if err == nil {
		t.hub.Notify(in.OrganizationID)
		return stored, nil
	}
	if !errors.Is(err, store.ErrAlreadyEnded) {
		return store.Activity{}, fmt.Errorf("completing activity %s: %w", id, err)
	}
	// The store returned the COMPLETED or FAILED activity as it is stored;
	// it never changes again, so it is what the repeat must be judged
	// against.
	if !isRepeat(stored, in) {
		return store.Activity{}, fmt.Errorf("completing activity %s (ended as %s): %w", id, stored.Status, ErrCompletionConflict)
	}
	return stored, nil
}

// isRepeat reports whether applying in to the ended activity a would
// change nothing. Values compare as JSON, so 1 and 1.0 are equal, as they
// are once stored.
func isRepeat(a store.Activity, in CompleteInput) bool {
	if a.Status != in.Status || a.ErrorMessage != in.ErrorMessage || !jsonEqual(a.Output, in.Output) {
		return false
	}
	for k, v := range in.Metadata {
		stored, ok := a.Metadata[k]
		if !ok || !jsonEqual(stored, v) {
			return false
		}
	}
	return true
}

func jsonEqual(x, y any) bool {
	norm := func(v any) any {
		if m, ok := v.(map[string]any); ok && len(m) == 0 {
			return nil
		}
		return v
	}
	bx, errx := json.Marshal(norm(x))
	by, erry := json.Marshal(norm(y))
	return errx == nil && erry == nil && bytes.Equal(bx, by)
}

// Get returns an activity and its progress events in order.
// Errors: *ValidationError, store.ErrNotFound, or a store failure.
func (t *Tracker) Get(ctx context.Context, orgID, activityID string) (store.Activity, []store.ProgressEvent, error) {
	if err := checkOrganization(orgID); err != nil {
		return store.Activity{}, nil, err
	}
	id, err := parseActivityID(activityID)
	if err != nil {
		return store.Activity{}, nil, err
	}
	a, evs, err := t.store.GetActivity(ctx, orgID, id)
	if err != nil {
		return store.Activity{}, nil, fmt.Errorf("getting activity %s: %w", id, err)
	}
	return a, evs, nil
}

// ListInput is one page request; zero filter fields match everything.
type ListInput struct {
	OrganizationID string
	SessionID      string
	// Status is empty for any status.
	Status store.Status
	// StartFrom is inclusive, StartTo exclusive; zero means unbounded.
	StartFrom time.Time
	StartTo   time.Time
	// PageSize is 0 for DefaultPageSize, at most MaxPageSize.
	PageSize int
	// PageToken is empty for the first page.
	PageToken string
}

// ListResult is one page.
type ListResult struct {
	Activities []store.Activity
	// NextPageToken is empty on the last page.
	NextPageToken string
}

// List returns one page of the organization's activities, newest first.
// Errors: *ValidationError, or a store failure.
func (t *Tracker) List(ctx context.Context, in ListInput) (ListResult, error) {
	if err := checkOrganization(in.OrganizationID); err != nil {
		return ListResult{}, err
	}
	if err := checkIdentifier("session_id", in.SessionID); err != nil {
		return ListResult{}, err
	}
	if in.Status != "" && !in.Status.Valid() {
		return ListResult{}, invalid("status", "must be RUNNING, COMPLETED, FAILED, ABANDONED, or unspecified for any")
	}
	filter := store.ListFilter{
		SessionID: in.SessionID,
		Status:    in.Status,
		StartFrom: ceilMicro(in.StartFrom),
		StartTo:   ceilMicro(in.StartTo),
	}
	if !filter.StartFrom.IsZero() && !filter.StartTo.IsZero() && !filter.StartFrom.Before(filter.StartTo) {
		return ListResult{}, invalid("start_time_to", "must be after start_time_from; the window [from, to) is empty")
	}
	size := in.PageSize
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		return ListResult{}, invalid("page_size", "must be between 1 and %d, or 0 for the default of %d; got %d", MaxPageSize, DefaultPageSize, in.PageSize)
	}
	fp := fingerprint(in.OrganizationID, filter)
	// MaxBytes keeps the store from loading far more than a response can
	// carry; the cut below, which also counts the small fields, is what
	// keeps the response itself in bounds.
	q := store.ListQuery{Filter: filter, Limit: size, MaxBytes: maxPageBytes}
	if in.PageToken != "" {
		c, err := decodePageToken(in.PageToken, fp)
		if err != nil {
			return ListResult{}, err
		}
		q.After = &c
	}

	as, more, err := t.store.ListActivities(ctx, in.OrganizationID, q)
	if err != nil {
		return ListResult{}, fmt.Errorf("listing activities: %w", err)
	}
	n, budget := 0, maxPageBytes
	for n < len(as) {
		budget -= approxSize(as[n])
		if budget < 0 && n > 0 {
			break
		}
		n++
	}
	res := ListResult{Activities: as[:n]}
	if n > 0 && (n < len(as) || more) {
		res.NextPageToken = encodePageToken(store.CursorOf(as[n-1]), fp)
	}
	return res, nil
}

// AbandonBatch is the most activities one AbandonExpired call marks: it
// bounds the statement's work and the row locks it holds at once.
const AbandonBatch = 1000

// AbandonExpired marks RUNNING activities of every organization whose
// deadline plus grace has passed as ABANDONED, at most limit of them
// (AbandonBatch when limit is 0), and returns how many. The reason, in the
// error message, names the deadline and the grace. A full batch means more
// may be waiting: the caller calls again.
// Errors: *ValidationError for a negative grace or limit, or a store
// failure.
func (t *Tracker) AbandonExpired(ctx context.Context, grace time.Duration, limit int) (int, error) {
	if grace < 0 {
		return 0, invalid("grace", "must not be negative; got %s", grace)
	}
	switch {
	case limit == 0:
		limit = AbandonBatch
	case limit < 0:
		return 0, invalid("limit", "must be positive, or 0 for %d; got %d", AbandonBatch, limit)
	}
	n, err := t.store.AbandonExpired(ctx, t.clock(), grace.Truncate(time.Microsecond), limit)
	if n > 0 {
		t.hub.NotifyAll()
	}
	if err != nil {
		return n, fmt.Errorf("abandoning expired activities: %w", err)
	}
	return n, nil
}

// approxSize estimates an activity's share of a response. Its JSON
// objects dominate; the rest is a small constant.
func approxSize(a store.Activity) int {
	n := 256 + len(a.ID) + len(a.OrganizationID) + len(a.SessionID) + len(a.UserID) +
		len(a.AgentType) + len(a.AgentName) + len(a.Category) + len(a.ErrorMessage)
	for _, m := range []map[string]any{a.Input, a.Output, a.Metadata} {
		if len(m) > 0 {
			b, _ := json.Marshal(m)
			n += len(b)
		}
	}
	return n
}
