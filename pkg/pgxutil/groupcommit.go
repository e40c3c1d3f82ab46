package pgxutil

// RunBatches is a group commit's writer loop: for every item from queue it
// takes the items queued behind it at that moment, up to maxBatch in all,
// and hands them to flush as one batch, without waiting for more, so a
// lone write costs no delay and a burst shares one transaction. It returns
// once queue is closed and drained. flush must not keep the slice: it is
// reused, and cleared after each call so answered callers are not held.
func RunBatches[T any](queue <-chan T, maxBatch int, flush func([]T)) {
	batch := make([]T, 0, maxBatch)
	for item := range queue {
		batch = append(batch[:0], item)
	collect:
		for len(batch) < maxBatch {
			select {
			case item, ok := <-queue:
				if !ok {
					break collect
				}
				batch = append(batch, item)
			default:
				break collect
			}
		}
		flush(batch)
		clear(batch)
	}
}
