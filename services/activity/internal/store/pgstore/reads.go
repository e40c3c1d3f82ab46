package pgstore

// The reads: GetActivity and ListActivities, one round trip each, outside
// the group commit.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

const selectEventsSQL = `SELECT sequence, message, data, create_time FROM progress_events
	WHERE organization_id = $1 AND activity_id = $2 ORDER BY sequence`

// GetActivity implements store.Store.
func (s *Store) GetActivity(ctx context.Context, orgID, activityID string) (store.Activity, []store.ProgressEvent, error) {
	var (
		a      store.Activity
		exists bool
		events []store.ProgressEvent
	)
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, orgID)
	b.Queue(selectActivitySQL, orgID, activityID).QueryRow(func(row pgx.Row) error {
		var err error
		a, err = scanActivity(row)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return err
		}
		exists = true
		return nil
	})
	b.Queue(selectEventsSQL, orgID, activityID).Query(func(rows pgx.Rows) error {
		events = make([]store.ProgressEvent, 0)
		for rows.Next() {
			pe := store.ProgressEvent{ActivityID: activityID}
			var (
				data []byte
				at   time.Time
			)
			if err := rows.Scan(&pe.Sequence, &pe.Message, &data, &at); err != nil {
				return err
			}
			pe.CreateTime = at.UTC()
			var err error
			if pe.Data, err = decode(data); err != nil {
				return fmt.Errorf("decoding progress event %d: %w", pe.Sequence, err)
			}
			events = append(events, pe)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return store.Activity{}, nil, wrapRead(ctx, "reading activity", err)
	}
	if !exists {
		return store.Activity{}, nil, store.ErrNotFound
	}
	return a, events, nil
}

// ListActivities implements store.Store.
func (s *Store) ListActivities(ctx context.Context, orgID string, q store.ListQuery) ([]store.Activity, bool, error) {
	sql, args := listSQL(orgID, q)
	var (
		as         []store.Activity
		candidates int64
	)
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, orgID)
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			a, err := scanActivity(rows, &candidates)
			if err != nil {
				return err
			}
			as = append(as, a)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, false, wrapRead(ctx, "listing activities", err)
	}
	return as, candidates > int64(len(as)), nil
}

// listSQL builds the list query for q. Only fixed fragments go into the
// text; every value is a parameter. Each combination of filters is its own
// statement, so the planner picks the index that fits it; a catch-all
// such as "session_id = $2 OR $2 IS NULL" would defeat that.
//
// The inner query walks an index for at most Limit+1 candidates; the window
// ranks them and sums their sizes on the server; only the rows within Limit
// and MaxBytes are sent, each with the number of candidates, from which
// the caller learns whether more follow.
func listSQL(orgID string, q store.ListQuery) (string, []any) {
	args := []any{orgID, q.Limit, q.MaxBytes}
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"organization_id = $1"}
	f := q.Filter
	if f.SessionID != "" {
		where = append(where, "session_id = "+param(f.SessionID))
	}
	if f.Status != "" {
		where = append(where, "status = "+param(string(f.Status)))
	}
	if !f.StartFrom.IsZero() {
		where = append(where, "start_time >= "+param(f.StartFrom))
	}
	if !f.StartTo.IsZero() {
		where = append(where, "start_time < "+param(f.StartTo))
	}
	if q.After != nil {
		// A row comparison is one index condition on (start_time, id);
		// the DESC index is scanned from the cursor onwards.
		where = append(where, "(start_time, id) < ("+param(q.After.StartTime)+"::timestamptz, "+param(q.After.ID)+"::uuid)")
	}
	return `SELECT ` + activityColumns + `, candidates FROM (
		SELECT c.*,
			row_number() OVER w AS n,
			sum(c.size) OVER w AS running_size,
			count(*) OVER () AS candidates
		FROM (
			SELECT ` + activityColumns + `,
				COALESCE(octet_length(input_data::text), 0) + COALESCE(octet_length(output_data::text), 0)
					+ COALESCE(octet_length(metadata::text), 0) + octet_length(error_message) AS size
			FROM activities
			WHERE ` + strings.Join(where, " AND ") + `
			ORDER BY start_time DESC, id DESC
			LIMIT $2::bigint + 1
		) c
		WINDOW w AS (ORDER BY c.start_time DESC, c.id DESC ROWS UNBOUNDED PRECEDING)
	) p
	WHERE p.n <= $2::bigint AND (p.n = 1 OR $3::bigint <= 0 OR p.running_size <= $3::bigint)
	ORDER BY p.start_time DESC, p.id DESC`, args
}
