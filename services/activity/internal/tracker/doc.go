// Package tracker is the Activity service's domain: it validates requests
// and enforces the lifecycle of an activity (RUNNING, then COMPLETED or
// FAILED, or ABANDONED when nobody completed it in time) on top of a
// store.Store. It knows nothing of gRPC or
// SQL; the api package translates its errors into status codes.
//
// # Identity
//
// Activity ids are UUIDs. When the caller gives none, Start generates a
// UUIDv7 (time-ordered, so a database index on it stays compact). A given
// id must be in the 8-4-4-4-12 hex form; any case is accepted and ids are
// always returned in lowercase.
//
// An activity is identified by (organization id, activity id): ids are
// scoped by organization. An id that organization B picks and that
// organization A already uses creates B's own activity. The alternative,
// globally unique ids answering AlreadyExists, would tell B that A has an
// activity with that id; scoping leaks nothing, never lets a client-chosen
// id fail because of another tenant, and maps onto a composite primary key
// under PostgreSQL row-level security, where a global unique constraint
// would let a tenant probe for rows it cannot read.
//
// # Lifecycle
//
//   - Start with an id that already exists in the organization returns the
//     stored activity unchanged, created = false, whatever its status
//     (ABANDONED included) and whatever the repeat's other fields say: a
//     retried start must never reset a running or ended activity. Whoever
//     wants to run an abandoned task again starts a new activity, with a
//     new id.
//   - Start may give a deadline: the time by which the task will have
//     finished or given up. A deadline already past is accepted, since
//     the caller's clock is not the service's.
//   - Progress appends an event only while the activity is RUNNING
//     (store.ErrAlreadyEnded otherwise, ABANDONED included). Events are
//     numbered 1, 2, 3, ... in append order; an activity holds at most
//     store.MaxProgressEvents.
//   - Complete ends a RUNNING activity as COMPLETED or FAILED. COMPLETED
//     with an error message is rejected as contradictory; FAILED may omit
//     one. Its metadata is merged into the start metadata at the top level,
//     its keys winning. Once COMPLETED or FAILED, an activity never changes
//     again. A repeated completion is idempotent when applying it again
//     would change nothing (same status, error message and output, and
//     every metadata key it gives already holds that value) and then
//     returns the stored activity; any other completion of a COMPLETED or
//     FAILED activity is ErrCompletionConflict.
//   - AbandonExpired (the service's reaper, every few seconds) marks
//     RUNNING activities whose deadline plus a grace period has passed as
//     ABANDONED, with complete time the sweep's time and the error message
//     "abandoned: no completion by the deadline <deadline> plus grace
//     <grace>". Activities without a deadline are never abandoned. The
//     grace absorbs clock skew and a completion in flight; with the
//     service's defaults (grace 30s, a sweep every 10s) an activity is
//     abandoned within about 40 seconds of its deadline.
//   - Complete of an ABANDONED activity is the one transition out of a
//     status other than RUNNING: a late completion records the real
//     outcome, replacing status, output, error message and complete time
//     (metadata merges as usual), because the abandonment was only the
//     service's guess that the task was gone. It happens once: the
//     activity is then COMPLETED or FAILED like any other.
//   - The service owns the clock: start, progress and completion times are
//     taken when the request is handled, in UTC, to the microsecond (what
//     PostgreSQL keeps, so memstore and pgstore agree). duration is
//     complete time minus start time and never negative.
//
// # Data and limits
//
// Input, output, metadata and progress data are JSON objects
// (map[string]any); an empty object and no object are the same and read
// back as nil. Limits (on the JSON encoding, or on the UTF-8 bytes of a
// string) keep one activity with all its events inside one 4 MiB gRPC
// response: input and output 1 MiB each, metadata 64 KiB per call (so at
// most 128 KiB after the merge), error message 16 KiB, progress message
// 2 KiB and data 4 KiB, identifiers 256 bytes. Strings must be valid UTF-8
// without NUL (PostgreSQL text and jsonb reject NUL); identifiers must not
// contain control characters, since they reach logs.
//
// # Listing
//
// List returns the newest activities first, ties in start time broken by
// id (descending), filtered by session, status and a start-time window
// [from, to). Pagination is by keyset: the opaque page token holds the
// position of the last activity returned, so pages neither repeat nor skip
// activities, even when activities are added between pages or share a
// start time. A token is bound to the organization and filters it was
// issued for. Page size defaults to 50 and is at most 500; a page also
// stops early once it holds about 3 MiB, so it may be shorter than the
// page size without being the last: only an empty next page token means
// the end.
//
// # Watching
//
// Watch streams an organization's activities as they change: each start,
// progress event and end (abandonment included) makes the activity come
// again, as it is after the change, with its latest progress event. It
// starts with a catch-up, every activity changed after the client's
// cursor (or, without one, the Backlog most recently changed, at most
// MaxWatchBacklog), oldest change first, then one caught-up event, then
// live changes until the caller leaves. Every event carries a cursor,
// bound to the organization: resuming with the last one processed misses
// no change, and changes to one activity made meanwhile arrive as one
// event with its latest state (GetActivity has every progress event).
//
// The store's change feed is the only source of events, replay and live
// alike, so the cursor is a position in it and nothing is sent twice or
// skipped. A watch reads the feed after its cursor when a write of this
// tracker to its organization has committed (the hub wakes it, without
// ever blocking the writer) and every Config.WatchPoll besides, which is
// how writes of other replicas on the same database reach it. A store
// failure ends the watch with the error; the client resumes with its
// cursor.
package tracker
