package outbox

import (
	"context"
	"slices"
	"time"
)

// The writer is the one goroutine that writes a durable outbox's store.
// Enqueue hands it each new record (o.wputs) and deliveries hand it the
// sequence numbers of stored records they settled (o.wdels). It takes a
// record once its hold (PersistDelay) is over, at once when the record's
// first delivery failed, and never when the record is done by then. Each
// transaction takes everything due that was queued while the previous one
// ran: group commit, with no timer of its own. Its hold uses the real
// clock, not Config.Now, like Run's timers.

// deleteRetry is how long deletes whose transaction failed wait before
// the writer tries them again.
const deleteRetry = time.Second

// writer runs from Open until Close.
func (o *Outbox) writer() {
	defer close(o.wdone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		o.mu.Lock()
		puts, dels, flushed, next := o.take(time.Now())
		if len(puts) == 0 && len(dels) == 0 {
			// take takes everything left once closing: nothing waits.
			exit := o.wclosing
			o.wexited = exit
			o.mu.Unlock()
			for _, c := range flushed {
				close(c)
			}
			if exit {
				return
			}
			if next > 0 {
				timer.Reset(next)
			}
			select {
			case <-o.wwake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		o.mu.Unlock()

		recs := make([]Record, len(puts))
		for i, e := range puts {
			recs[i] = e.Record
		}
		err := o.store.write(recs, dels)

		o.mu.Lock()
		o.committed(puts, dels, err)
		o.mu.Unlock()
		for _, c := range flushed {
			close(c)
		}
	}
}

// take removes from the writer's queues what its next transaction writes:
// records past their hold or urgent (all of them while a flush waits or
// Close has begun), skipping those already done, and every delete. It
// returns the flushes that transaction completes and how long until the
// next queued record is due (0 when none is). o.mu must be held.
func (o *Outbox) take(now time.Time) (puts []*entry, dels []uint64, flushed []chan struct{}, next time.Duration) {
	all := o.wclosing || len(o.wflush) > 0
	keep := o.wputs[:0]
	for _, e := range o.wputs {
		switch {
		case e.done:
			// Delivered or dropped within its hold: never written.
		case all || e.urgent || !now.Before(e.due):
			e.writing = true
			puts = append(puts, e)
		default:
			keep = append(keep, e)
		}
	}
	clear(o.wputs[len(keep):])
	o.wputs = keep
	if len(keep) > 0 {
		next = max(keep[0].due.Sub(now), time.Nanosecond)
	}
	switch {
	case all || !now.Before(o.wdelsAfter):
		dels, o.wdels = o.wdels, nil
	case len(o.wdels) > 0:
		// Deletes that failed wait for their retry time, so that a
		// failing disk is not retried in a loop.
		if wait := o.wdelsAfter.Sub(now); next == 0 || wait < next {
			next = wait
		}
	}
	flushed, o.wflush = o.wflush, nil
	return puts, dels, flushed, next
}

// committed settles a transaction's records. o.mu must be held.
func (o *Outbox) committed(puts []*entry, dels []uint64, err error) {
	if err != nil {
		o.cfg.Logger.Error("outbox: could not store records", "records", len(puts), "error", err)
		if len(dels) > 0 {
			// Kept for the writer's next transaction (the next record or
			// delete wakes it); should the process stop first, they are
			// delivered again after a restart, and every target
			// deduplicates what it can.
			o.cfg.Logger.Warn("outbox: could not forget delivered records yet", "records", len(dels), "error", err)
			o.wdels = append(dels, o.wdels...)
			o.wdelsAfter = time.Now().Add(deleteRetry)
		}
	}
	for _, e := range puts {
		e.writing = false
		switch {
		case err != nil:
			e.werr = err
			if !e.done {
				o.withdraw(e)
			}
		case e.done:
			// Delivered while it was being written.
			e.persisted = true
			o.forget(e.seq)
		default:
			e.persisted = true
			close(e.settled)
		}
	}
}

// withdraw takes e, which could not be stored, out of the outbox, so that
// its Enqueue reports the error instead of a pending record that a crash
// would lose. A delivery of e in progress does it when it ends, unless it
// succeeds. o.mu must be held.
func (o *Outbox) withdraw(e *entry) {
	l := o.lanes[e.Lane]
	if l.busy && l.records[0] == e {
		e.withdraw = true
		return
	}
	i := slices.Index(l.records, e)
	l.records = slices.Delete(l.records, i, i+1)
	o.depth--
	if len(l.records) == 0 {
		o.unready(l)
		delete(o.lanes, l.name)
	}
	o.finish(e, Result{})
	o.noteIdle()
}

// forget queues the delete of a stored record that is done; nobody waits
// for it. o.mu must be held.
func (o *Outbox) forget(seq uint64) {
	if o.wexited {
		// Closed while a delivery ran: it will be delivered again after a
		// restart, and every target deduplicates what it can.
		o.cfg.Logger.Warn("outbox: could not forget a delivered record: the outbox is closed", "seq", seq)
		return
	}
	if len(o.wdels) == 0 {
		o.wakeWriter()
	}
	o.wdels = append(o.wdels, seq)
}

// flush waits until the writer has written everything queued before the
// call, or ctx ends. It returns at once in a memory outbox or once the
// writer is gone.
func (o *Outbox) flush(ctx context.Context) {
	o.mu.Lock()
	if o.store == nil || o.wexited {
		o.mu.Unlock()
		return
	}
	c := make(chan struct{})
	o.wflush = append(o.wflush, c)
	o.wakeWriter()
	o.mu.Unlock()
	select {
	case <-c:
	case <-ctx.Done():
	}
}

func (o *Outbox) wakeWriter() {
	select {
	case o.wwake <- struct{}{}:
	default:
	}
}
