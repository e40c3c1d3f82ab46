package pgstore

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// A failed batch is retried write by write only when one of its writes
// caused the failure; a refusal that would fail every write again (each
// after its own wait) is the whole batch's answer.
func TestPerWriteFallbackOnlyForAWritesOwnFault(t *testing.T) {
	for code, want := range map[string]bool{
		"22P05": true,  // untranslatable character in a jsonb value
		"22001": true,  // string too long
		"23505": true,  // unique violation
		"40001": true,  // serialization failure
		"40P01": true,  // deadlock
		"57014": false, // statement timeout
		"55P03": false, // lock timeout
		"53100": false, // disk full
		"53200": false, // out of memory
		"25006": false, // read-only transaction (after a failover)
		"08006": false, // connection failure
		"57P01": false, // admin shutdown
	} {
		err := fmt.Errorf("sending the batch: %w", &pgconn.PgError{Code: code})
		if got := perWrite(err); got != want {
			t.Errorf("SQLSTATE %s: perWrite = %v, want %v", code, got, want)
		}
	}
	if perWrite(errors.New("connection reset by peer")) {
		t.Error("an error without a SQLSTATE is not a write's fault")
	}
}
