package pgxutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrorClass says what a failed pgx call means to whoever asked for it:
// whether its work may have taken effect, and whether asking again can
// help. Classify assigns it; the services turn it into their store errors.
type ErrorClass int

const (
	// ClassNone is the class of a nil error.
	ClassNone ErrorClass = iota

	// ClassPermanent: asking again would fail the same way. The server
	// rejected the statement for what it is (a constraint or data error:
	// the caller's fault; an SQL, schema or privilege error: a bug or a
	// misconfiguration), or the error is none that Classify knows, such
	// as a failed Scan, where retrying a bug would only repeat it.
	ClassPermanent

	// ClassRetryable: the work did not take effect, and the same call may
	// succeed on a later attempt, typically on another connection. Either
	// nothing was sent (no connection could be made, or pgconn guarantees
	// the failure came before the first byte), or the server refused the
	// work for a reason that passes and rolled it back: shutting down,
	// starting up, out of connections or resources, connected to a
	// standby after a failover, a lost serialization race or deadlock, a
	// statement or lock timeout.
	ClassRetryable

	// ClassUnknownOutcome: the statement may have reached the server and
	// even committed, but its answer never arrived. The connection broke
	// or a timeout fired after pgconn may have sent it. A write in this
	// class must not be reported as failed: the caller can only retry it
	// (safe when the write is idempotent) or read back what happened. A
	// statement that changes nothing can treat it as ClassRetryable.
	ClassUnknownOutcome

	// ClassContextDone: the call's context was cancelled or its deadline
	// passed, so whoever asked gave up. As with ClassUnknownOutcome, a
	// write may or may not have taken effect; the caller knows it stopped
	// waiting, and is told its context's error rather than the database's.
	ClassContextDone
)

// String returns the constant's name without its Class prefix.
func (c ErrorClass) String() string {
	switch c {
	case ClassNone:
		return "None"
	case ClassPermanent:
		return "Permanent"
	case ClassRetryable:
		return "Retryable"
	case ClassUnknownOutcome:
		return "UnknownOutcome"
	case ClassContextDone:
		return "ContextDone"
	default:
		return "ErrorClass(" + strconv.Itoa(int(c)) + ")"
	}
}

// Classify says what err, returned by a pgx call or wrapping such an
// error (wrapping with %w keeps it classifiable), means. The first rule
// that matches wins:
//
//  1. nil: ClassNone.
//  2. A *pgconn.PgError: by its SQLSTATE, as the table below says. The
//     server answered, and an error aborts the statement's transaction, so
//     nothing of it took effect (unless the code itself says otherwise).
//  3. context.Canceled: ClassContextDone.
//  4. A *pgconn.ConnectError: ClassRetryable. There is no connection, so
//     nothing was sent, whether the dial was refused, the TLS handshake
//     failed or connect_timeout fired; connect_timeout wraps
//     context.DeadlineExceeded, which is why this rule comes before 5.
//  5. context.DeadlineExceeded: ClassContextDone.
//  6. pgconn.ErrConnClosed: ClassUnknownOutcome. pgconn returns it for a
//     connection closed before the call, when nothing was sent, but also
//     (pgx v5.12, claiming SafeToRetry) when the connection broke while
//     the simple protocol read a result: an Exec without arguments, and
//     so every COMMIT of a pgx.Tx. From the error alone the two cannot be
//     told apart, and calling a committed write failed is the worse
//     mistake.
//  7. pgconn.SafeToRetry(err): ClassRetryable. Apart from that case, pgconn
//     says "safe to retry" only when it failed before sending anything, as
//     for a write of which not one byte went out.
//  8. pgconn.Timeout(err), a net.Error, io.EOF or io.ErrUnexpectedEOF:
//     ClassUnknownOutcome. The connection failed while the statement may
//     have been on its way or already executed; pgconn cannot tell which.
//  9. Anything else: ClassPermanent.
//
// Server errors, by SQLSTATE (pgerrcode names them):
//
//	08007 transaction_resolution_unknown   UnknownOutcome, as they say
//	40003 statement_completion_unknown
//	class 08 connection_exception          Retryable
//	class 53 insufficient_resources        Retryable (53300 too_many_connections,
//	                                       out of memory, disk full)
//	25006 read_only_sql_transaction        Retryable (a standby after a failover)
//	40001 serialization_failure            Retryable
//	40P01 deadlock_detected                Retryable
//	55P03 lock_not_available               Retryable (lock_timeout, NOWAIT)
//	57014 query_canceled                   Retryable (statement_timeout)
//	57P01 admin_shutdown                   Retryable
//	57P02 crash_shutdown                   Retryable
//	57P03 cannot_connect_now               Retryable (starting up, recovering)
//	57P05 idle_session_timeout             Retryable
//	any other code                         Permanent, including errors while
//	                                       connecting such as 28P01
//	                                       invalid_password: a retry fails the same
//
// Classify judges the failed call alone: statements the caller saw
// succeed before it stay done. It cannot know whose context ended, so a
// caller that runs statements under a context of its own (a flush
// timeout) checks that context before classifying, and a caller that
// wants its own deadline reported as such even while connecting checks
// ctx.Err() first too.
func Classify(err error) ErrorClass {
	if err == nil {
		return ClassNone
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return classifyCode(pgErr.Code)
	}
	if errors.Is(err, context.Canceled) {
		return ClassContextDone
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return ClassRetryable
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassContextDone
	}
	if errors.Is(err, pgconn.ErrConnClosed) {
		return ClassUnknownOutcome
	}
	if pgconn.SafeToRetry(err) {
		return ClassRetryable
	}
	if _, ok := errors.AsType[net.Error](err); ok ||
		pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ClassUnknownOutcome
	}
	return ClassPermanent
}

// classifyCode is rule 2 of Classify: the table of SQLSTATEs in its doc.
func classifyCode(code string) ErrorClass {
	switch code {
	case pgerrcode.TransactionResolutionUnknown, pgerrcode.StatementCompletionUnknown:
		return ClassUnknownOutcome
	case pgerrcode.ReadOnlySQLTransaction,
		pgerrcode.SerializationFailure,
		pgerrcode.DeadlockDetected,
		pgerrcode.LockNotAvailable,
		pgerrcode.QueryCanceled,
		pgerrcode.AdminShutdown,
		pgerrcode.CrashShutdown,
		pgerrcode.CannotConnectNow,
		pgerrcode.IdleSessionTimeout:
		return ClassRetryable
	}
	if inClass(code, pgerrcode.ConnectionException) || inClass(code, pgerrcode.InsufficientResources) {
		return ClassRetryable
	}
	return ClassPermanent
}

// inClass reports whether code is in the SQLSTATE class of classCode: the
// class is a code's first two characters, and a client that does not know
// a code is meant to go by its class.
func inClass(code, classCode string) bool {
	return len(code) == 5 && code[:2] == classCode[:2]
}

// IsUniqueViolation reports whether err is, or wraps, the server's report
// of a unique or primary key violation (23505). The violated constraint is
// in the *pgconn.PgError's ConstraintName.
func IsUniqueViolation(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == pgerrcode.UniqueViolation
}

// StoreErrors are the sentinels a store tags its PostgreSQL errors with,
// so its service maps them to gRPC codes without knowing about pgx.
type StoreErrors struct {
	// Unavailable marks a retryable error.
	Unavailable error
	// OutcomeUnknown marks a write that may or may not have been applied;
	// it should wrap Unavailable.
	OutcomeUnknown error
}

// Write wraps the error of a call that may have written: nil stays nil; the
// caller's own cancellation or deadline stays that context error (also when
// pgx reports it as a broken connection); a retryable error is tagged
// Unavailable, an unknown outcome OutcomeUnknown; anything else is only
// given its context.
func (e StoreErrors) Write(ctx context.Context, doing string, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(err, ctxErr) {
			return fmt.Errorf("%s: %w", doing, err)
		}
		return fmt.Errorf("%s: %w (%w)", doing, ctxErr, err)
	}
	switch Classify(err) {
	case ClassRetryable:
		return fmt.Errorf("%s: %w: %w", doing, e.Unavailable, err)
	case ClassUnknownOutcome:
		return fmt.Errorf("%s: %w: %w", doing, e.OutcomeUnknown, err)
	default:
		return fmt.Errorf("%s: %w", doing, err)
	}
}

// Read is Write for a call that changes nothing: when its answer was lost
// there is no write whose fate is unknown, only a read to retry.
func (e StoreErrors) Read(ctx context.Context, doing string, err error) error {
	if err != nil && ctx.Err() == nil && Classify(err) == ClassUnknownOutcome {
		return fmt.Errorf("%s: %w: %w", doing, e.Unavailable, err)
	}
	return e.Write(ctx, doing, err)
}
