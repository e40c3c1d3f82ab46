package delegate

// EventKind says what an Event reports.
type EventKind int

// The events of a task, in the order StreamDelegateTask documents.
const (
	// EventAccepted: the task is valid and its activity started (Accepted).
	EventAccepted EventKind = iota + 1
	// EventAttemptStarted: a model call is about to be made (Attempt,
	// AccountID, AccountName, Legacy).
	EventAttemptStarted
	// EventText: a piece of the answer (Attempt, Text).
	EventText
	// EventAttemptFailed: an attempt ended without success (Attempt,
	// Outcome, HTTPStatus, Reason).
	EventAttemptFailed
	// EventRestart: the text sent so far is void; another attempt follows
	// (Attempt is the attempt whose text is discarded).
	EventRestart
)

// Event is one thing that happened to a task while it ran. Which fields are
// set depends on Kind.
type Event struct {
	Kind EventKind

	ActivityID, RequestID, Model, Category string

	Attempt                int
	AccountID, AccountName string
	Legacy                 bool

	Text string

	Outcome    string
	HTTPStatus int
	Reason     string
}

// Observer receives a task's events in order, on the task's goroutine.
type Observer func(Event)

func (run *taskRun) emit(e Event) {
	if run.observe != nil {
		run.observe(e)
	}
}
