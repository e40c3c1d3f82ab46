// Command switchyard runs the Switchyard services.
//
//	switchyard dev            all three services and the Anthropic simulator in one process
//	switchyard orchestrator   the Orchestrator service
//	switchyard accountpool    the AccountPool service
//	switchyard activity       the Activity service
//	switchyard sim            the Anthropic Messages API simulator
//	switchyard migrate        apply the PostgreSQL schema (up, status, down)
//	switchyard keys           re-encrypt stored API keys under the newest key-encryption key (rewrap, status)
//	switchyard version        print the version, VCS revision and Go version (also -version)
//
// Every setting is a flag whose default comes from an environment variable;
// `switchyard <command> -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/switchyard-dev/switchyard/pkg/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code := exitCode(err); code != 0 {
		fmt.Fprintln(os.Stderr, "switchyard:", err)
		os.Exit(code)
	}
}

// exitCode is the exit status for run's error: 0 for none, and for -h,
// whose answer, the usage, the command has printed; 1 otherwise.
func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

const usage = `usage: switchyard <command> [flags]

commands:
  dev            run all three services and the Anthropic simulator in one process
  orchestrator   run the Orchestrator service
  accountpool    run the AccountPool service
  activity       run the Activity service
  sim            run the Anthropic Messages API simulator
  dashboard      serve the live dashboard (a web page reading AccountPool and Activity)
  migrate        apply the PostgreSQL schema (up, status, down)
  keys           re-encrypt stored API keys under the keyring's newest version (rewrap, status)
  health         check a service's gRPC health (exit 0 when SERVING), for container health checks
  certs          create a development CA and service certificates for mutual TLS
  version        print the version, VCS revision and Go version (also -version)

Run 'switchyard <command> -h' for the command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev", "orchestrator", "accountpool", "activity", "sim":
		tuneGC()
	}
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "orchestrator":
		return runOrchestrator(ctx, rest, stderr)
	case "accountpool":
		return runAccountPool(ctx, rest, stderr)
	case "activity":
		return runActivity(ctx, rest, stderr)
	case "sim":
		return runSim(ctx, rest, stdout, stderr)
	case "dashboard":
		return runDashboard(ctx, rest, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "health":
		return runHealth(ctx, rest, stdout, stderr)
	case "certs":
		return runCerts(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, buildinfo.Read())
		return err
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// defaultGCPercent is the garbage collector's target (GOGC) of the
// commands that serve, unless GOGC is set. A service keeps a small live
// heap (tens of megabytes) and allocates a lot per call, so Go's default
// of 100 collects many times a second under load; 400 lets the heap grow
// to five times the live data between collections for a fraction of the
// GC work (measured in docs/benchmarks.md). Where memory is tight, set
// GOMEMLIMIT too (the runtime then collects earlier near the limit), or
// GOGC=100 to go back to Go's default.
const defaultGCPercent = 400

// tuneGC applies defaultGCPercent unless GOGC says otherwise.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// logStarting logs the first line of a command that runs a service: which
// build of switchyard runs it.
func logStarting(logger *slog.Logger, command string) {
	b := buildinfo.Read()
	logger.Info("switchyard starting", "command", command, "version", b.Version, "revision", b.RevisionText(), "go", b.GoVersion)
}
