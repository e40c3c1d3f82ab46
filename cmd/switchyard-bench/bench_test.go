package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWriteSectionReplacesOnlyTheGeneratedPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	doc := "# Benchmarks\n\nintro\n\n" + sectionBegin + "\nold tables\n" + sectionEnd + "\n\n## Profile\n\nkept\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	section := sectionBegin + "\n\nnew tables\n\n" + sectionEnd + "\n"
	if err := writeSection(path, section); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# Benchmarks\n\nintro\n\n" + sectionBegin + "\n\nnew tables\n\n" + sectionEnd + "\n\n## Profile\n\nkept\n"
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}

	if err := os.WriteFile(path, []byte("# no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, section); err == nil || !strings.Contains(err.Error(), "no generated section") {
		t.Fatalf("a file without markers: %v", err)
	}
}

func TestSampleFigures(t *testing.T) {
	s := sample{tasks: 4, elapsed: 2 * time.Second,
		latencies: []time.Duration{1 * time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 40 * time.Millisecond},
		cpu:       []time.Duration{8 * time.Millisecond, 4 * time.Millisecond, 0}}
	if got := s.throughput(); got != 2 {
		t.Errorf("throughput = %v, want 2", got)
	}
	if got := s.quantile(0.5); got != 3*time.Millisecond {
		t.Errorf("p50 = %v", got)
	}
	if got := s.quantile(0.99); got != 40*time.Millisecond {
		t.Errorf("p99 = %v", got)
	}
	if got := s.cpuPerTask(0); got != 2*time.Millisecond {
		t.Errorf("cpu of process 0 per task = %v", got)
	}
	if got := s.cpuPerTask(-1); got != 3*time.Millisecond {
		t.Errorf("cpu of all per task = %v", got)
	}
}

func TestProcessCPUCountsThisProcess(t *testing.T) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin for longer than the kernel's 10 ms tick, so the figure moves.
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Fatalf("CPU time did not grow while spinning: %v then %v", before, after)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

func TestLoopsCountEveryCallAndFailure(t *testing.T) {
	ctx := context.Background()
	var calls atomic.Int64
	fn := func(_ context.Context, i int) error {
		calls.Add(1)
		if i%10 == 0 {
			return errors.New("every tenth fails")
		}
		return nil
	}
	meter := func() (cpuReading, error) { return cpuReading{services: []time.Duration{0, 0, 0}}, nil }
	s, err := closedLoop(ctx, 4, 0, 50*time.Millisecond, fn, meter)
	if err != nil {
		t.Fatal(err)
	}
	if int64(s.tasks) != calls.Load() || s.tasks == 0 || len(s.latencies) != s.tasks {
		t.Fatalf("closed loop: %d tasks, %d latencies, %d calls", s.tasks, len(s.latencies), calls.Load())
	}
	if s.failures == 0 || s.firstErr == nil {
		t.Fatalf("closed loop: failures %d, first error %v", s.failures, s.firstErr)
	}

	calls.Store(0)
	s, err = openLoop(ctx, 200, 0, 100*time.Millisecond, 64, fn, meter)
	if err != nil {
		t.Fatal(err)
	}
	if s.tasks != 20 || calls.Load() != 20 {
		t.Fatalf("open loop at 200/s for 100 ms: %d tasks, %d calls, want 20", s.tasks, calls.Load())
	}
	if s.failures != 2 {
		t.Fatalf("open loop: %d failures, want 2 (calls 0 and 10)", s.failures)
	}
}

func TestCommandCPUSumsTheProcessesOfACommand(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	self, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	all, err := commandCPU(strings.TrimSpace(string(comm)))
	if err != nil {
		t.Fatal(err)
	}
	if all < self || all == 0 {
		t.Fatalf("commandCPU(%q) = %v, less than this process's own %v", comm, all, self)
	}
	if none, err := commandCPU("no-such-command-here"); err != nil || none != 0 {
		t.Fatalf("a command with no process: %v, %v", none, err)
	}
}

func TestSpanBreakdownTakesTheMedianOfEachKindOfSpan(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	line := func(name string, kind int, d time.Duration) string {
		return fmt.Sprintf(`{"Name":%q,"SpanKind":%d,"StartTime":%q,"EndTime":%q}`, name, kind,
			at.Format(time.RFC3339Nano), at.Add(d).Format(time.RFC3339Nano))
	}
	log := strings.Join([]string{
		`time=... level=INFO msg="not a span"`,
		line("chat", 3, 3*time.Millisecond), line("chat", 3, 1*time.Millisecond), line("chat", 3, 2*time.Millisecond),
		line("TrackStart", 3, 500*time.Microsecond),
		`{"Name": broken`,
	}, "\n")
	path := filepath.Join(dir, "orchestrator.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	stats, err := spanBreakdown([]*process{{name: "orchestrator", logPath: path}})
	if err != nil {
		t.Fatal(err)
	}
	want := []spanStat{
		{service: "orchestrator", name: "chat", kind: 3, count: 3, median: 2 * time.Millisecond},
		{service: "orchestrator", name: "TrackStart", kind: 3, count: 1, median: 500 * time.Microsecond},
	}
	if !slices.Equal(stats, want) {
		t.Fatalf("got %+v, want %+v", stats, want)
	}
}
