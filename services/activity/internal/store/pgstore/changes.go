package pgstore

// The change feed's reads: ChangesSince and RecentChangesStart, one round
// trip each, outside the group commit. The writes number the changes
// (stamp.go).

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
)

// changesSinceSQL is keyset pagination on (organization_id, change_seq),
// the activities_org_change index, shaped like listSQL: the inner query
// takes at most Limit+1 candidates, the window ranks them and sums their
// sizes on the server, and only those within Limit and MaxBytes are sent,
// each with the number of candidates, from which the caller learns whether
// more follow. The latest progress event is the one numbered
// progress_count, found by its primary key.
const changesSinceSQL = `SELECT ` + activityColumns + `, change_seq, candidates, progress_count, pe_message, pe_data, pe_create_time FROM (
		SELECT c.*,
			p.message AS pe_message, p.data AS pe_data, p.create_time AS pe_create_time,
			row_number() OVER w AS n,
			sum(c.size) OVER w AS running_size,
			count(*) OVER () AS candidates
		FROM (
			SELECT ` + activityColumns + `, change_seq, progress_count,
				COALESCE(octet_length(input_data::text), 0) + COALESCE(octet_length(output_data::text), 0)
					+ COALESCE(octet_length(metadata::text), 0) + octet_length(error_message) AS size
			FROM activities
			WHERE organization_id = $1 AND change_seq > $2
			ORDER BY change_seq
			LIMIT $3::bigint + 1
		) c
		LEFT JOIN progress_events p
			ON p.organization_id = c.organization_id AND p.activity_id = c.id AND p.sequence = c.progress_count
		WINDOW w AS (ORDER BY c.change_seq ROWS UNBOUNDED PRECEDING)
	) r
	WHERE r.n <= $3::bigint AND (r.n = 1 OR $4::bigint <= 0 OR r.running_size <= $4::bigint)
	ORDER BY r.change_seq`

// ChangesSince implements store.Store.
func (s *Store) ChangesSince(ctx context.Context, orgID string, q store.ChangeQuery) ([]store.Change, bool, error) {
	var (
		changes    []store.Change
		candidates int64
	)
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, orgID)
	b.Queue(changesSinceSQL, orgID, q.After, q.Limit, q.MaxBytes).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			c, err := scanChange(rows, &candidates)
			if err != nil {
				return err
			}
			changes = append(changes, c)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, false, wrapRead(ctx, "reading activity changes", err)
	}
	return changes, candidates > int64(len(changes)), nil
}

// scanChange reads a row of changesSinceSQL.
func scanChange(row pgx.Row, candidates *int64) (store.Change, error) {
	var (
		r       rawActivity
		c       store.Change
		count   int64
		message *string
		data    []byte
		at      *time.Time
	)
	if err := row.Scan(r.dest(&c.Seq, candidates, &count, &message, &data, &at)...); err != nil {
		return store.Change{}, err
	}
	var err error
	if c.Activity, err = r.decode(); err != nil {
		return store.Change{}, err
	}
	if message != nil && at != nil {
		pe := store.ProgressEvent{ActivityID: c.Activity.ID, Sequence: count, Message: *message, CreateTime: at.UTC()}
		if pe.Data, err = decode(data); err != nil {
			return store.Change{}, fmt.Errorf("decoding the latest progress event of activity %s: %w", c.Activity.ID, err)
		}
		c.LatestProgress = &pe
	}
	return c, nil
}

// recentChangesStartSQL walks the activities_org_change index backwards
// past the n latest changes.
const recentChangesStartSQL = `SELECT COALESCE((
		SELECT change_seq FROM activities WHERE organization_id = $1
		ORDER BY change_seq DESC OFFSET $2 LIMIT 1
	), 0)`

// RecentChangesStart implements store.Store.
func (s *Store) RecentChangesStart(ctx context.Context, orgID string, n int) (int64, error) {
	var after int64
	b := &pgx.Batch{}
	pgxutil.QueueTenant(b, orgID)
	b.Queue(recentChangesStartSQL, orgID, n).QueryRow(func(row pgx.Row) error {
		return row.Scan(&after)
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return 0, wrapRead(ctx, "reading the activity change feed's position", err)
	}
	return after, nil
}
