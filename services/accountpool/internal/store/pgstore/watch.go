package pgstore

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/switchyard-dev/switchyard/services/accountpool/internal/store"
)

// Channel is the channel the schema's triggers notify, with the
// organization id as payload, on every change to accounts,
// organization_settings or default_keys (migrations/accountpool).
const Channel = "switchyard_accountpool"

// Reconnect backoff of the change feed: doubling from the first to the
// cap, with jitter so replicas do not reconnect in lockstep.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 10 * time.Second
)

// WatchChanges implements store.ChangeWatcher with LISTEN on Channel.
//
// LISTEN needs a session of its own, so the feed holds one dedicated
// connection outside the pool (same configuration, so the same role and
// application name). After LISTEN succeeds it reports
// store.AllOrganizations, because anything committed while it was not
// listening was missed; only then does it wait for notifications.
// PostgreSQL delivers a notification after its transaction commits, so a
// reload triggered by it sees the change. A feed silent for WatchPing is
// pinged, so a connection that died without a word is noticed within that
// bound; any failure reconnects with backoff.
func (s *Store) WatchChanges(ctx context.Context, onChange func(orgID string)) error {
	delay := watchBackoffMin
	for {
		listened, err := s.listen(ctx, onChange)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			delay = watchBackoffMin
		}
		wait := delay/2 + rand.N(delay/2+1)
		s.logger.WarnContext(ctx, "accountpool change feed lost; this process's view of accounts and settings may lag until it reconnects",
			"channel", Channel, "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(2*delay, watchBackoffMax)
	}
}

// listen runs one connection of the feed until it fails or ctx ends.
// listened reports whether LISTEN took effect, i.e. the connection was
// healthy at some point and the backoff may start over.
func (s *Store) listen(ctx context.Context, onChange func(orgID string)) (listened bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.db.Config().ConnConfig)
	if err != nil {
		return false, wrap(ctx, "connecting the change feed", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return false, wrap(ctx, "listening on "+Channel, err)
	}
	s.logger.DebugContext(ctx, "accountpool change feed listening", "channel", Channel)
	onChange(store.AllOrganizations)
	for {
		waitCtx, cancel := context.WithTimeout(ctx, s.watchPing)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err == nil:
			if n.Channel == Channel && n.Payload != "" {
				onChange(n.Payload)
			}
		case pgconn.Timeout(err):
			// Silence: a timed-out wait leaves the connection usable, so
			// ask the server whether it is still there.
			pingCtx, cancel := context.WithTimeout(ctx, s.watchPing)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, wrap(ctx, "pinging the change feed", err)
			}
		default:
			return true, wrap(ctx, "waiting for notifications", err)
		}
	}
}
