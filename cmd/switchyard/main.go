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
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
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
  migrate        apply the PostgreSQL schema (up, status, down)
  keys           re-encrypt stored API keys under the keyring's newest version (rewrap, status)
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
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "orchestrator":
		return runOrchestrator(ctx, rest, stderr)
	case "accountpool":
		return runAccountPool(ctx, rest, stderr)
	case "activity":
		return runActivity(ctx, rest, stderr)
	case "sim":
		return runSim(ctx, rest, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, stdout, stderr)
	case "health":
		return runHealth(ctx, rest, stdout, stderr)
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, readBuild())
		return err
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// build describes this binary, as runtime/debug.ReadBuildInfo tells it.
type build struct {
	version   string // the module version: a tag, a pseudo-version, or (devel)
	revision  string // the VCS revision, "+dirty" when the tree had changes; empty when unknown
	time      string // the revision's commit time (vcs.time); empty when unknown
	goVersion string
}

func readBuild() build {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return buildFrom(bi)
}

func buildFrom(bi *debug.BuildInfo) build {
	b := build{version: cmp.Or(bi.Main.Version, "(devel)"), goVersion: cmp.Or(bi.GoVersion, runtime.Version())}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.time":
			b.time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.revision != "" {
		b.revision += "+dirty"
	}
	return b
}

func (b build) String() string {
	s := "switchyard " + b.version
	if b.revision != "" {
		s += ", revision " + b.revision
	}
	if b.time != "" {
		s += ", committed " + b.time
	}
	return s + ", " + b.goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// logStarting logs the first line of a command that runs a service: which
// build of switchyard runs it.
func logStarting(logger *slog.Logger, command string) {
	b := readBuild()
	logger.Info("switchyard starting", "command", command, "version", b.version, "revision", b.revision, "go", b.goVersion)
}
