// Command switchyard-bench is the load benchmark behind `make bench` and
// docs/benchmarks.md: it starts the stack (the Orchestrator, AccountPool
// and Activity as separate processes, on the embedded store and, when a
// PostgreSQL URL is given, on PostgreSQL) against the Anthropic simulator
// in another process, and drives DelegateTask closed-loop at several
// caller counts and open-loop at a fixed rate. In the same run it drives
// the simulator directly with the request the Orchestrator sends, so
// every figure is relative to that baseline: throughput as a ratio,
// latency as the time added, and CPU time per task of each service
// process as the kernel accounts it (/proc/pid/stat).
//
//	go run ./cmd/switchyard-bench                     # embedded store only
//	go run ./cmd/switchyard-bench -database-url URL   # and PostgreSQL (URL of a role that may create schemas)
//	go run ./cmd/switchyard-bench -write docs/benchmarks.md
//
// It is a measurement, not a test: it asserts nothing about speed, and
// fails only when a task fails or the stack does not start.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "switchyard-bench:", err)
		}
		os.Exit(1)
	}
}

type options struct {
	bin, databaseURL, write, logDir string
	callers                         []int
	rate                            float64
	duration, warmup                time.Duration
	accounts                        int
	streamCallers                   int
	memoryOutbox                    bool
	profileDir                      string
	spans                           bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("switchyard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var callers, stores string
	fs.StringVar(&o.bin, "switchyard", "", "the switchyard binary to run (default: go build ./cmd/switchyard into a temporary directory)")
	fs.StringVar(&o.databaseURL, "database-url", "", "also benchmark on PostgreSQL, through this URL of a role that may create schemas (default $SWITCHYARD_BENCH_DATABASE_URL, else $SWITCHYARD_TEST_DATABASE_URL)")
	fs.StringVar(&o.write, "write", "", "replace the generated section of this Markdown file (docs/benchmarks.md) with the results")
	fs.StringVar(&o.logDir, "log-dir", "", "keep the services' logs here (default: a temporary directory, removed)")
	fs.StringVar(&callers, "callers", "1,16,64", "closed-loop caller counts")
	fs.StringVar(&stores, "stores", "memory,postgres", "the stores to run on; postgres needs a database URL and is skipped without one")
	fs.Float64Var(&o.rate, "rate", 500, "open-loop arrival rate, tasks per second")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "measured time of each step")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each step")
	fs.IntVar(&o.accounts, "accounts", 8, "accounts in the pool (on the simulator's scale tier, so no limit is hit)")
	fs.IntVar(&o.streamCallers, "stream-callers", 16, "callers of the StreamDelegateTask step (0: skip it)")
	fs.BoolVar(&o.spans, "spans", false, "write every service's spans as JSON lines into its log and print the median duration of each kind of span: where a task's time goes, hop by hop (spans cost CPU: figures taken with it are not comparable)")
	fs.BoolVar(&o.memoryOutbox, "memory-outbox", false, "keep the Orchestrator's bookkeeping outbox in memory (the dev default) instead of on disk (production's)")
	fs.StringVar(&o.profileDir, "profile", "", "write a CPU profile of each service during the DelegateTask step at 16 callers (or the first caller count) into this directory: STORE-SERVICE.pprof")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.databaseURL = cmp.Or(o.databaseURL, os.Getenv("SWITCHYARD_BENCH_DATABASE_URL"), os.Getenv("SWITCHYARD_TEST_DATABASE_URL"))
	for _, f := range strings.Split(callers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-callers: %q is not a positive number", f)
		}
		o.callers = append(o.callers, n)
	}
	if o.rate <= 0 || o.duration <= 0 || o.accounts < 1 {
		return errors.New("-rate, -duration and -accounts must be positive")
	}

	work, err := os.MkdirTemp("", "switchyard-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	logDir := cmp.Or(o.logDir, work)
	if o.bin == "" {
		o.bin = filepath.Join(work, "switchyard")
		fmt.Fprintln(stderr, "building ./cmd/switchyard")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.bin, "./cmd/switchyard")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/switchyard: %w", err)
		}
	}
	skills, err := filepath.Abs("skills")
	if err != nil {
		return err
	}

	var run []string
	for _, st := range strings.Split(stores, ",") {
		switch st = strings.TrimSpace(st); {
		case st == "memory", st == "postgres" && o.databaseURL != "":
			run = append(run, st)
		case st == "postgres":
			fmt.Fprintln(stderr, "no database URL (-database-url, SWITCHYARD_BENCH_DATABASE_URL or SWITCHYARD_TEST_DATABASE_URL): PostgreSQL is skipped")
		default:
			return fmt.Errorf("-stores: %q is not a store (memory, postgres)", st)
		}
	}
	rep := report{env: describeMachine(), opts: o}
	for _, store := range run {
		res, err := benchStore(ctx, o, stackConfig{bin: o.bin, dir: logDir, store: store, adminDBURL: o.databaseURL,
			accounts: o.accounts, skillsDir: skills, logLevel: "warn", memoryOutbox: o.memoryOutbox, profiling: o.profileDir != "", spans: o.spans}, stderr)
		if err != nil {
			return fmt.Errorf("store %s: %w", store, err)
		}
		rep.stores = append(rep.stores, res)
	}
	out := rep.markdown()
	fmt.Fprint(stdout, out)
	if o.write != "" {
		return writeSection(o.write, out)
	}
	return nil
}

// directKeys is how many simulator keys the direct calls spread over;
// maxDirectConns how many connections to the simulator they keep; and
// maxInFlight how many calls an open-loop step lets run at once (a call
// due beyond it counts as failed).
const (
	directKeys     = 512
	maxDirectConns = 256
	maxInFlight    = 4096
)

// storeResult is every step of one store's run.
type storeResult struct {
	store  string
	steps  []step
	stream *step // StreamDelegateTask against DelegateTask at the same callers
}

// step is one load shape measured twice: on the simulator directly and
// through Switchyard.
type step struct {
	label          string
	direct, system sample
}

func benchStore(ctx context.Context, o options, cfg stackConfig, log io.Writer) (storeResult, error) {
	fmt.Fprintf(log, "starting the stack on the %s store\n", cfg.store)
	s, err := startStack(ctx, cfg)
	if err != nil {
		return storeResult{}, err
	}
	defer s.close()
	// The direct calls use keys of their own, so that they neither drain
	// the accounts' simulated rate limits before a Switchyard step nor hit
	// them: at several thousand calls a second they spread over enough
	// keys to stay under the scale tier's 10,000 requests per minute each.
	keys := make([]string, directKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("sk-ant-sim-scale-direct-%d", i)
	}
	direct := directCall(s.simURL, keys, maxDirectConns)
	delegate := delegateCall(s.client)
	res := storeResult{store: cfg.store}
	// measure runs one step, fails on any failed call, and logs the step.
	measure := func(what string, step func() (sample, error)) (sample, error) {
		sm, err := step()
		if err != nil {
			return sm, err
		}
		if sm.failures > 0 {
			return sm, fmt.Errorf("%s: %d of %d calls failed; the first: %v", what, sm.failures, sm.tasks, sm.firstErr)
		}
		fmt.Fprintf(log, "  %-40s %8.0f/s  p50 %-8s p99 %-8s cpu/task %s\n", what, sm.throughput(), ms(sm.quantile(0.5)), ms(sm.quantile(0.99)), ms(sm.cpuPerTask(-1)))
		return sm, nil
	}
	closed := func(callers int, fn callFunc) func() (sample, error) {
		return func() (sample, error) { return closedLoop(ctx, callers, o.warmup, o.duration, fn, s.cpu) }
	}
	open := func(fn callFunc) func() (sample, error) {
		return func() (sample, error) { return openLoop(ctx, o.rate, o.warmup, o.duration, maxInFlight, fn, s.cpu) }
	}

	idle, err := idleCPU(ctx, s, 2*time.Second)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(log, "  idle CPU per second: orchestrator %s, accountpool %s, activity %s, stub %s, database %s\n", ms(idle[0]), ms(idle[1]), ms(idle[2]), ms(idle[3]), ms(idle[4]))
	unaryAt := map[int]sample{}
	for _, c := range o.callers {
		st := step{label: fmt.Sprintf("%d callers", c)}
		if st.direct, err = measure("direct, "+st.label, closed(c, direct)); err != nil {
			return res, err
		}
		var profiled func() error
		if o.profileDir != "" && c == profileCallers(o.callers) {
			profiled = s.profile(ctx, o.profileDir, o.warmup, o.duration)
		}
		st.system, err = measure("DelegateTask, "+st.label, closed(c, delegate))
		if profiled != nil {
			err = errors.Join(err, profiled())
		}
		if err != nil {
			return res, err
		}
		unaryAt[c] = st.system
		res.steps = append(res.steps, st)
	}
	st := step{label: fmt.Sprintf("open loop, %g/s", o.rate)}
	if st.direct, err = measure("direct, "+st.label, open(direct)); err != nil {
		return res, err
	}
	if st.system, err = measure("DelegateTask, "+st.label, open(delegate)); err != nil {
		return res, err
	}
	res.steps = append(res.steps, st)

	if c := o.streamCallers; c > 0 {
		label := fmt.Sprintf("%d callers", c)
		unary, ok := unaryAt[c]
		if !ok {
			if unary, err = measure("DelegateTask, "+label, closed(c, delegate)); err != nil {
				return res, err
			}
		}
		streamed, err := measure("StreamDelegateTask, "+label, closed(c, streamCall(s.client)))
		if err != nil {
			return res, err
		}
		res.stream = &step{label: label, direct: unary, system: streamed}
	}
	if o.spans {
		stats, err := spanBreakdown(s.services)
		if err != nil {
			return res, err
		}
		printSpans(log, stats)
	}
	return res, nil
}

// profileCallers is the caller count whose DelegateTask step is profiled:
// 16 when measured, else the first.
func profileCallers(callers []int) int {
	if slices.Contains(callers, 16) {
		return 16
	}
	return callers[0]
}

// idleCPU is the CPU time per second each process of the stack uses with
// no load (services in stack order, then the stub and the database).
func idleCPU(ctx context.Context, s *stack, d time.Duration) ([]time.Duration, error) {
	before, err := s.cpu()
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(d):
	}
	after, err := s.cpu()
	if err != nil {
		return nil, err
	}
	per := func(x time.Duration) time.Duration { return x * time.Second / d }
	out := make([]time.Duration, 0, len(after.services)+2)
	for i := range after.services {
		out = append(out, per(after.services[i]-before.services[i]))
	}
	return append(out, per(after.sim-before.sim), per(after.db-before.db)), nil
}

// waitHTTP polls u until it answers 200.
func waitHTTP(ctx context.Context, u string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s: %v", u, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
