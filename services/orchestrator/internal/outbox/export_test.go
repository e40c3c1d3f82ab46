package outbox

import (
	"sync"
	"time"
)

// Hook watches the writes of an outbox opened with OpenHooked: it counts
// what they committed, and can hold them up or fail them.
type Hook struct {
	mu         sync.Mutex
	puts, dels []uint64 // committed, by sequence number
	failed     int      // writes failed by Fail
	gate       chan struct{}
	waiting    int
	fail       error
}

// OpenHooked is Open with a Hook on the writes.
func OpenHooked(cfg Config) (*Outbox, *Hook, error) {
	h := &Hook{}
	o, err := open(cfg, func(s store) store { return &hookedStore{store: s, h: h} })
	return o, h, err
}

type hookedStore struct {
	store
	h *Hook
}

func (s *hookedStore) write(puts []Record, dels []uint64) error {
	h := s.h
	h.mu.Lock()
	gate := h.gate
	if gate != nil {
		h.waiting++
	}
	h.mu.Unlock()
	if gate != nil {
		<-gate
		h.mu.Lock()
		h.waiting--
		h.mu.Unlock()
	}
	h.mu.Lock()
	fail := h.fail
	if fail != nil {
		h.failed++
	}
	h.mu.Unlock()
	if fail != nil {
		return fail
	}
	if err := s.store.write(puts, dels); err != nil {
		return err
	}
	h.mu.Lock()
	for _, r := range puts {
		h.puts = append(h.puts, r.seq)
	}
	h.dels = append(h.dels, dels...)
	h.mu.Unlock()
	return nil
}

// Block holds up the writes that start from now on until Unblock.
func (h *Hook) Block() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate == nil {
		h.gate = make(chan struct{})
	}
}

// Unblock lets the held-up writes go on.
func (h *Hook) Unblock() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

// Fail makes the writes fail with err (nil: succeed again).
func (h *Hook) Fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// Writes returns how many records and deletes the writes committed.
func (h *Hook) Writes() (puts, dels int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.puts), len(h.dels)
}

// Failed returns how many writes Fail has failed.
func (h *Hook) Failed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}

// Waiting returns how many writes are held up.
func (h *Hook) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiting
}

// Stored returns the records in dir's file, oldest first; no outbox may
// have it open.
func Stored(dir string) ([]Record, error) {
	bs, err := openBolt(dir)
	if err != nil {
		return nil, err
	}
	defer bs.close()
	return bs.load()
}

// SetCloseTimeout shortens how long Close waits for a stuck writer.
func SetCloseTimeout(o *Outbox, d time.Duration) { o.closeTimeout = d }
