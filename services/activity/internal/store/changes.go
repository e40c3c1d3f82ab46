package store

// The change feed: every write that changes an activity (CreateActivity
// that creates, AppendProgress, CompleteActivity that completes,
// AbandonExpired) gives the activity a new change sequence number, and
// ChangesSince reads an organization's activities in the order of their
// latest change. It is what WatchActivities streams.
//
// Sequence numbers are positive, unique in a store and grow with every
// change; they are shared by all organizations, so an organization's
// numbers have gaps, and only their order means anything. An activity
// keeps only the number of its latest change: changes made between two
// reads are coalesced into the activity's state after the last of them.
//
// Exactness: within an organization, changes become visible in sequence
// order. Once a read returns a change numbered s, every change of that
// organization numbered below s is visible to every later read, so a
// reader that passes the last number it read as ChangeQuery.After misses
// no change, however many writers (goroutines, group commits, replicas)
// there are. Writes that change nothing (a create that found the id
// taken, a refused append or completion) take no number.

// Change is an activity as its latest change left it.
type Change struct {
	// Seq is the sequence number of the activity's latest change.
	Seq      int64
	Activity Activity
	// LatestProgress is the activity's last progress event; nil when it
	// has none.
	LatestProgress *ProgressEvent
}

// ChangeQuery is one page of an organization's change feed.
type ChangeQuery struct {
	// After is the sequence number to read after: 0 for the beginning,
	// else the Seq of the last change read, or a start from
	// RecentChangesStart.
	After int64
	// Limit is the most changes to return; it is always positive.
	Limit int
	// MaxBytes, when positive, bounds what one call loads, as
	// ListQuery.MaxBytes does: the page stops before the change that
	// would take its activities' size past MaxBytes, but always holds the
	// first one.
	MaxBytes int
}
