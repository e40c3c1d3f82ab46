package pgstore

import (
	"github.com/jackc/pgx/v5"
)

// stampSQL numbers the batch's changes for the change feed; see
// queueStamp.
const stampSQL = `SELECT stamp_activity_changes($1::text[], $2::uuid[])`

// queueStamp adds the change feed's stamping to a batch of writes, as its
// last statement: stamp_activity_changes (migrations/activity/00003) takes
// the change lock of every organization the batch wrote for, in the one
// order every writer uses, and gives each activity the batch changed a new
// change_seq. The locks are held from there to the commit, so that an
// organization's numbers become visible in the order they were given out,
// which is what makes a change-feed cursor exact (see store.Change). It
// costs one statement per batch, in the same round trip; the batches of
// one organization commit one after another, but no batch waits for a row
// lock while it holds a change lock, nor takes change locks out of order,
// so batches do not deadlock.
func queueStamp(b *pgx.Batch, ps []*pending) {
	orgs := make([]string, len(ps))
	ids := make([]string, len(ps))
	for i, p := range ps {
		orgs[i], ids[i] = p.org, p.id
	}
	b.Queue(stampSQL, orgs, ids)
}
