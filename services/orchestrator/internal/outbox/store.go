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

// store keeps records until they are delivered.
type store interface {
	// put stores r durably before it returns.
	put(r Record) error
	delete(seq uint64) error
	// load returns every stored record, oldest first.
	load() ([]Record, error)
	close() error
}

// memStore keeps nothing beyond the Outbox's own queues.
type memStore struct{}

func (memStore) put(Record) error        { return nil }
func (memStore) delete(uint64) error     { return nil }
func (memStore) load() ([]Record, error) { return nil, nil }
func (memStore) close() error            { return nil }

// boltStore keeps records in a bbolt file, one key per record (its
// sequence number, big-endian, so keys sort in enqueue order). bbolt
// fsyncs every commit; db.Batch lets concurrent puts share one.
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

func (s *boltStore) put(r Record) error {
	v, err := json.Marshal(storedRecord{Lane: r.Lane, Target: r.Target, Method: r.Method, Body: r.Body, Enqueued: r.Enqueued})
	if err != nil {
		return err
	}
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key(r.seq), v) })
}

func (s *boltStore) delete(seq uint64) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(key(seq)) })
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
