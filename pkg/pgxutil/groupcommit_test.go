package pgxutil_test

import (
	"slices"
	"testing"

	"github.com/switchyard-dev/switchyard/pkg/pgxutil"
)

func TestRunBatchesTakesWhatIsQueuedUpToTheMaximum(t *testing.T) {
	queue := make(chan int, 10)
	for i := range 7 {
		queue <- i
	}
	close(queue)
	var batches [][]int
	pgxutil.RunBatches(queue, 3, func(b []int) { batches = append(batches, slices.Clone(b)) })
	want := [][]int{{0, 1, 2}, {3, 4, 5}, {6}}
	if !slices.EqualFunc(batches, want, slices.Equal[[]int]) {
		t.Fatalf("batches %v, want %v", batches, want)
	}
}

func TestRunBatchesDoesNotWaitForCompany(t *testing.T) {
	queue := make(chan int)
	flushed := make(chan []int)
	go pgxutil.RunBatches(queue, 8, func(b []int) { flushed <- slices.Clone(b) })
	queue <- 1
	if got := <-flushed; !slices.Equal(got, []int{1}) {
		t.Fatalf("a lone item: flushed %v", got)
	}
	close(queue)
}
