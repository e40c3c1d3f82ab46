package pgstore

// FlushStats reports s's committed group commits, the writes they carried,
// and the batches retried one write at a time, for the external tests'
// benchmarks.
func FlushStats(s *Store) (flushes, writes, fallbacks int64) {
	return s.writes.flushes.Load(), s.writes.writes.Load(), s.writes.fallbacks.Load()
}
