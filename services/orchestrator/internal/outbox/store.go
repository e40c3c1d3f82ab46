package outbox

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// store keeps records until they are delivered. A memory outbox has none.
// Only the Outbox's writer goroutine calls write; load runs once, in Open,
// before the writer starts.
type store interface {
	// write stores puts and forgets dels in one transaction, durable
	// (fsynced) when it returns nil; on error none of it is applied.
	write(puts []Record, dels []uint64) error
	// load returns every stored record, oldest first.
	load() ([]Record, error)
	close() error
}

// boltStore keeps records in a bbolt file, one key per record (its
// sequence number, big-endian, so keys sort in enqueue order). bbolt
// fsyncs every commit; the Outbox's writer puts everything queued while
// its previous commit ran into the next one.
type boltStore struct {
	db *bolt.DB
}

var bucket = []byte("records")

// storedRecord is a record's encoding in the file.
type storedRecord struct {
	Lane     string    `json:"lane"`
	Target   string    `json:"target"`
	Method   string    `json:"method"`
	Body     []byte    `json:"body"`
	Enqueued time.Time `json:"enqueued"`
}

func openBolt(dir string) (*boltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, "outbox.db")
	// The timeout turns a second orchestrator on the same directory into
	// an error instead of a hang: bbolt locks the file.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("outbox: opening %s (is another orchestrator using it?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("outbox: preparing %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func (s *boltStore) write(puts []Record, dels []uint64) error {
	vals := make([][]byte, len(puts))
	for i, r := range puts {
		v, err := json.Marshal(storedRecord{Lane: r.Lane, Target: r.Target, Method: r.Method, Body: r.Body, Enqueued: r.Enqueued})
		if err != nil {
			return err
		}
		vals[i] = v
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for i, r := range puts {
			if err := b.Put(key(r.seq), vals[i]); err != nil {
				return err
			}
		}
		for _, seq := range dels {
			if err := b.Delete(key(seq)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltStore) load() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var sr storedRecord
			if len(k) != 8 || json.Unmarshal(v, &sr) != nil {
				return fmt.Errorf("outbox: a stored record is corrupt (key %x)", k)
			}
			out = append(out, Record{Lane: sr.Lane, Target: sr.Target, Method: sr.Method, Body: sr.Body,
				Enqueued: sr.Enqueued, seq: binary.BigEndian.Uint64(k)})
			return nil
		})
	})
	return out, err
}

func (s *boltStore) close() error { return s.db.Close() }
