package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	orchestratorv1 "github.com/switchyard-dev/switchyard/gen/switchyard/orchestrator/v1"
)

// callFunc runs one task (or one direct upstream call) and says whether it
// succeeded; i numbers the calls of a step.
type callFunc func(ctx context.Context, i int) error

// The task every measurement runs: the benchmark's category, prompt and
// session, and what the Orchestrator sends upstream for it (the quick
// category's model and max_tokens, no system prompt without skills).
const (
	benchCategory  = "quick"
	benchModel     = "claude-haiku-4-5"
	benchMaxTokens = 4096
	benchPrompt    = "Benchmark prompt: say hello."
)

func delegateCall(client orchestratorv1.OrchestratorServiceClient) callFunc {
	req := &orchestratorv1.DelegateTaskRequest{OrganizationId: benchOrg, Category: benchCategory, Prompt: benchPrompt, SessionId: "bench"}
	return func(ctx context.Context, _ int) error {
		resp, err := client.DelegateTask(ctx, req)
		if err != nil {
			return err
		}
		if resp.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			return fmt.Errorf("task ended %s: %s", resp.GetStatus(), resp.GetError())
		}
		return nil
	}
}

func streamCall(client orchestratorv1.OrchestratorServiceClient) callFunc {
	req := &orchestratorv1.StreamDelegateTaskRequest{OrganizationId: benchOrg, Category: benchCategory, Prompt: benchPrompt, SessionId: "bench"}
	return func(ctx context.Context, _ int) error {
		stream, err := client.StreamDelegateTask(ctx, req)
		if err != nil {
			return err
		}
		var result *orchestratorv1.DelegateTaskResponse
		for {
			ev, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if r := ev.GetResult(); r != nil {
				result = r
			}
		}
		if result.GetStatus() != orchestratorv1.TaskStatus_TASK_STATUS_SUCCESS {
			return fmt.Errorf("task ended %s: %s", result.GetStatus(), result.GetError())
		}
		return nil
	}
}

// directCall is the baseline: the request the Orchestrator sends upstream
// (streamed, as it always is), posted straight to the simulator over a
// client that keeps its connections, read to the message_stop event. It
// spreads calls over the keys of the stack's accounts.
func directCall(baseURL string, keys []string, maxConns int) callFunc {
	body, _ := json.Marshal(map[string]any{
		"model":      benchModel,
		"max_tokens": benchMaxTokens,
		"messages":   []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": benchPrompt}}}},
		"stream":     true,
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: maxConns, MaxIdleConnsPerHost: maxConns, IdleConnTimeout: time.Minute}}
	return func(ctx context.Context, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/messages", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("content-type", "application/json")
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("x-api-key", keys[i%len(keys)])
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			return fmt.Errorf("upstream answered %s: %s", resp.Status, b)
		}
		sc := bufio.NewScanner(resp.Body)
		stopped := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: message_stop") {
				stopped = true
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
		if !stopped {
			return errors.New("the stream ended without message_stop")
		}
		return nil
	}
}

// sample is what one measured step produced.
type sample struct {
	tasks     int
	failures  int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration // sorted
	// cpu is each service process's CPU time over the step, in the
	// stack's order; simCPU the upstream's, dbCPU PostgreSQL's (every
	// postgres process on the machine; 0 on the embedded store).
	cpu    []time.Duration
	simCPU time.Duration
	dbCPU  time.Duration
}

func (s sample) throughput() float64 { return float64(s.tasks) / s.elapsed.Seconds() }

func (s sample) quantile(q float64) time.Duration {
	if len(s.latencies) == 0 {
		return 0
	}
	return s.latencies[min(len(s.latencies)-1, int(q*float64(len(s.latencies))))]
}

// cpuPerTask is process i's CPU time per task; -1 means the total of
// every service process.
func (s sample) cpuPerTask(i int) time.Duration {
	if s.tasks == 0 {
		return 0
	}
	if i < 0 {
		var total time.Duration
		for _, c := range s.cpu {
			total += c
		}
		return total / time.Duration(s.tasks)
	}
	return s.cpu[i] / time.Duration(s.tasks)
}

// cpuReading is the CPU time so far of the processes a step is measured
// on.
type cpuReading struct {
	services []time.Duration
	sim, db  time.Duration
}

// cpuMeter reads the CPU time of the processes a step is measured on.
type cpuMeter func() (cpuReading, error)

// closedLoop runs callers goroutines that each call fn back to back:
// warm-up first (not measured), then for d.
func closedLoop(ctx context.Context, callers int, warmup, d time.Duration, fn callFunc, meter cpuMeter) (sample, error) {
	if warmup > 0 {
		if _, err := runClosed(ctx, callers, warmup, fn, nil); err != nil {
			return sample{}, err
		}
	}
	return runClosed(ctx, callers, d, fn, meter)
}

func runClosed(ctx context.Context, callers int, d time.Duration, fn callFunc, meter cpuMeter) (sample, error) {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		all     []time.Duration
		fails   int
		firstEr error
		wg      sync.WaitGroup
	)
	before, err := measure(meter)
	if err != nil {
		return sample{}, err
	}
	start := time.Now()
	stop := start.Add(d)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var lfails int
			var lerr error
			for time.Now().Before(stop) && ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				err := fn(ctx, i)
				local = append(local, time.Since(t0))
				if err != nil {
					lfails++
					lerr = cmpErr(lerr, err)
				}
			}
			mu.Lock()
			all = append(all, local...)
			fails += lfails
			firstEr = cmpErr(firstEr, lerr)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return finish(start, all, fails, firstEr, meter, before)
}

// openLoop starts calls at a fixed rate, whatever the answers, for d
// after a warm-up; a call's latency counts from when it was due, so a
// stall shows in the figures instead of slowing the schedule (no
// coordinated omission). At most maxInFlight calls run at once; a call due
// beyond that counts as a failure.
func openLoop(ctx context.Context, rate float64, warmup, d time.Duration, maxInFlight int, fn callFunc, meter cpuMeter) (sample, error) {
	if warmup > 0 {
		if _, err := runOpen(ctx, rate, warmup, maxInFlight, fn, nil); err != nil {
			return sample{}, err
		}
	}
	return runOpen(ctx, rate, d, maxInFlight, fn, meter)
}

func runOpen(ctx context.Context, rate float64, d time.Duration, maxInFlight int, fn callFunc, meter cpuMeter) (sample, error) {
	var (
		mu       sync.Mutex
		all      []time.Duration
		fails    int
		firstErr error
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, maxInFlight)
	)
	before, err := measure(meter)
	if err != nil {
		return sample{}, err
	}
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d / interval)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case inFlight <- struct{}{}:
		default:
			mu.Lock()
			fails++
			firstErr = cmpErr(firstErr, fmt.Errorf("more than %d calls in flight", maxInFlight))
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := fn(ctx, i)
			lat := time.Since(due)
			<-inFlight
			mu.Lock()
			all = append(all, lat)
			if err != nil {
				fails++
				firstErr = cmpErr(firstErr, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return finish(start, all, fails, firstErr, meter, before)
}

func measure(meter cpuMeter) (cpuReading, error) {
	if meter == nil {
		return cpuReading{}, nil
	}
	return meter()
}

func finish(start time.Time, lat []time.Duration, fails int, firstErr error, meter cpuMeter, before cpuReading) (sample, error) {
	elapsed := time.Since(start)
	after, err := measure(meter)
	if err != nil {
		return sample{}, err
	}
	slices.Sort(lat)
	s := sample{tasks: len(lat), failures: fails, firstErr: firstErr, elapsed: elapsed, latencies: lat,
		simCPU: after.sim - before.sim, dbCPU: after.db - before.db}
	for i := range after.services {
		s.cpu = append(s.cpu, after.services[i]-before.services[i])
	}
	return s, nil
}

func cmpErr(kept, err error) error {
	if kept != nil {
		return kept
	}
	return err
}
