package outbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/services/orchestrator/internal/outbox"
)

// BenchmarkEnqueueDurable measures Enqueue with a directory and a target
// that acknowledges at once: the common path of every task. ns/op is the
// throughput of all the goroutines; ns/enqueue what one call takes.
func BenchmarkEnqueueDurable(b *testing.B) { benchmarkEnqueue(b, true) }

// BenchmarkEnqueueMemory is the same without a directory, for reference.
func BenchmarkEnqueueMemory(b *testing.B) { benchmarkEnqueue(b, false) }

func benchmarkEnqueue(b *testing.B, durable bool) {
	for _, g := range []int{1, 16} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			dir := ""
			if durable {
				dir = b.TempDir()
			}
			o, err := outbox.Open(outbox.Config{
				Dir:       dir,
				Deliver:   func(context.Context, outbox.Record) ([]byte, error) { return []byte("ok"), nil },
				Retryable: func(error) bool { return true },
				Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { o.Run(ctx); close(done) }()
			body := make([]byte, 512)
			var next, spent atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range g {
				wg.Go(func() {
					r := outbox.Record{Lane: fmt.Sprint("task-", w), Target: "pool", Method: "/svc/M", Body: body}
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						start := time.Now()
						res, err := o.Enqueue(ctx, r)
						spent.Add(int64(time.Since(start)))
						if err != nil || !res.Delivered {
							b.Error(res, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(spent.Load())/float64(b.N), "ns/enqueue")
			cancel()
			<-done
			if err := o.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
