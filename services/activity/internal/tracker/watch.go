package tracker

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// MaxWatchBacklog is the most recently changed activities a watch without
// a cursor may ask for first.
const MaxWatchBacklog = 500

// watchPageSize bounds one read of the change feed; with maxPageBytes it
// bounds what a watch holds in memory, however far behind it starts.
const watchPageSize = 100

// WatchInput is a request to watch an organization's activities.
type WatchInput struct {
	OrganizationID string
	// Cursor, when set, resumes after the event that carried it: every
	// activity changed since comes first. Backlog is then ignored.
	Cursor string
	// Backlog is how many of the most recently changed activities come
	// first when there is no cursor: 0 to MaxWatchBacklog.
	Backlog int
}

// WatchEvent is one message of a watch.
type WatchEvent struct {
	// Change is the activity as its latest change left it; nil on the
	// caught-up event.
	Change *store.Change
	// Cursor resumes the watch after this event.
	Cursor string
	// CaughtUp is set on the one event, after the catch-up, that says
	// everything changed up to its cursor has been sent.
	CaughtUp bool
}

// Watch sends the organization's activities to send as they change, until
// ctx ends or send or the store fails. First the catch-up: the activities
// changed after in.Cursor, or without one the in.Backlog most recently
// changed ones, oldest change first; then one caught-up event; then every
// later change, as it happens.
//
// The store's change feed (store.Change) is the only source of events, for
// the catch-up and live alike: a watch reads the feed after the last
// change it sent, whenever this tracker has written to the organization
// (the hub wakes it) and every Config.WatchPoll besides, for the writes of
// other replicas. Each event's cursor is that position, so a client that
// resumes with the last cursor it processed misses no change; changes to
// one activity between two reads arrive as one event with its latest
// state. Reads go in pages, so a watch that is far behind holds one page
// at a time, and while send is blocked by a slow client the watch only
// collects one pending wake-up: writers never wait for it.
//
// Watch returns ctx's error once ctx ends, send's error when send fails,
// and otherwise a store failure; *ValidationError for a bad organization,
// cursor or backlog.
func (t *Tracker) Watch(ctx context.Context, in WatchInput, send func(WatchEvent) error) error {
	org := in.OrganizationID
	if err := checkOrganization(org); err != nil {
		return err
	}
	var after int64
	if in.Cursor != "" {
		var err error
		if after, err = decodeWatchCursor(in.Cursor, org); err != nil {
			return err
		}
	} else if in.Backlog < 0 || in.Backlog > MaxWatchBacklog {
		return invalid("backlog", "must be between 0 and %d, or 0 for none; got %d", MaxWatchBacklog, in.Backlog)
	}

	// Subscribed before the first read: a write that commits after a read
	// began wakes the watch for another one, so none falls in between.
	wake, unsubscribe := t.hub.Subscribe(org)
	defer unsubscribe()
	if in.Cursor == "" {
		var err error
		if after, err = t.store.RecentChangesStart(ctx, org, in.Backlog); err != nil {
			return fmt.Errorf("watching the activities of organization %s: %w", org, err)
		}
	} else {
		// A cursor this feed issued never passes its newest change. One
		// that does comes from a store that was since reset (an embedded
		// store restarted, a database restored): resuming from it would
		// skip every change until the feed caught up, so it is refused.
		newest, err := t.store.RecentChangesStart(ctx, org, 0)
		if err != nil {
			return fmt.Errorf("watching the activities of organization %s: %w", org, err)
		}
		if after > newest {
			return invalid("cursor", "is ahead of this service's change feed (its store was reset since the cursor was issued); omit the cursor to start again from the backlog")
		}
	}
	after, err := t.sendChanges(ctx, org, after, send)
	if err != nil {
		return err
	}
	if err := send(WatchEvent{Cursor: encodeWatchCursor(org, after), CaughtUp: true}); err != nil {
		return err
	}

	poll := time.NewTicker(t.watchPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-poll.C:
		}
		if after, err = t.sendChanges(ctx, org, after, send); err != nil {
			return err
		}
	}
}

// sendChanges sends every change of org after after, page by page, and
// returns the position of the last one sent.
func (t *Tracker) sendChanges(ctx context.Context, org string, after int64, send func(WatchEvent) error) (int64, error) {
	for {
		page, more, err := t.store.ChangesSince(ctx, org, store.ChangeQuery{After: after, Limit: watchPageSize, MaxBytes: maxPageBytes})
		if err != nil {
			return after, fmt.Errorf("reading the activity changes of organization %s: %w", org, err)
		}
		for i := range page {
			c := &page[i]
			if err := send(WatchEvent{Change: c, Cursor: encodeWatchCursor(org, c.Seq)}); err != nil {
				return after, err
			}
			after = c.Seq
		}
		if !more {
			return after, nil
		}
	}
}
