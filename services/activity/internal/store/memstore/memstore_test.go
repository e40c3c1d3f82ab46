package memstore_test

import (
	"testing"

	"github.com/switchyard-dev/switchyard/services/activity/internal/store"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/memstore"
	"github.com/switchyard-dev/switchyard/services/activity/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return memstore.New() })
}

// TestConformanceSharedStore runs the suite with every subtest on one
// store, as pgstore runs it on one database: it proves the subtests do not
// depend on starting empty.
func TestConformanceSharedStore(t *testing.T) {
	shared := memstore.New()
	storetest.Run(t, func(*testing.T) store.Store { return shared })
}
