package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"golang.org/x/sync/errgroup"

	"github.com/switchyard-dev/switchyard/pkg/anthropicsim"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/services/accountpool"
	"github.com/switchyard-dev/switchyard/services/activity"
	"github.com/switchyard-dev/switchyard/services/orchestrator"
)

// devFallbackKey is the legacy-mode key in dev when ANTHROPIC_API_KEY is not
// set: a simulator key, so organizations without accounts work offline.
const devFallbackKey = "sk-ant-sim-legacy-dev-key"

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", "Runs the Orchestrator, AccountPool and Activity services and the Anthropic simulator in one process,\neach on its own port, talking real gRPC to each other, on the embedded store.", stderr)
	var of orchestratorFlags
	var af accountPoolFlags
	var lf logFlags
	var tf telemetryFlags
	var activityAddr, simAddr, dashboardAddr, readyFile string
	var rf activityReaperFlags
	var sc simControlFlags
	of.register(fs, "orchestrator-", "")
	af.register(fs, "accountpool-")
	// dev defaults to the embedded store even when a database URL is in
	// the environment: `make run` must need nothing installed.
	af.storeFlags.register(fs, "memory")
	fs.StringVar(&activityAddr, "activity-addr", env(envActivityAddr, defaultActivity), "activity gRPC listen address ("+envActivityAddr+")")
	rf.register(fs)
	of.securityFlags.register(fs)
	fs.StringVar(&simAddr, "sim-addr", env(envSimAddr, defaultSimAddr), "simulator listen address ("+envSimAddr+"); used as the upstream unless -anthropic-base-url is set")
	sc.register(fs, "sim-")
	fs.StringVar(&dashboardAddr, "dashboard-addr", env(envDashboardAddr, defaultDashboardAddr), "dashboard HTTP listen address ("+envDashboardAddr+"); empty serves none")
	fs.StringVar(&readyFile, "ready-file", "", "once every server listens, write their addresses and this run's tokens to this file as JSON (mode 0600), for scripts and tests")
	lf.register(fs)
	tf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "dev")
	useRedisLog(logger)

	simToken, simTokenGenerated, err := sc.token("-sim-control-token-file")
	if err != nil {
		return err
	}
	simLis, err := net.Listen("tcp", simAddr)
	if err != nil {
		return fmt.Errorf("listening on %s for the simulator: %w", simAddr, err)
	}
	if of.baseURL == "" {
		of.baseURL = "http://" + simLis.Addr().String()
	}
	fallback, err := anthropicKey()
	if err != nil {
		_ = simLis.Close()
		return err
	}
	if fallback.IsZero() && strings.HasPrefix(of.baseURL, "http://"+simLis.Addr().String()) {
		fallback = secret.New(devFallbackKey)
		logger.Info("ANTHROPIC_API_KEY is not set; legacy mode uses a simulator key")
	}
	store, dbURL, err := af.resolve()
	if err != nil {
		return err
	}
	keyring, err := readKeyring(af.keyring, af.keyringFile)
	if err != nil {
		return err
	}
	if keyring == "" {
		if store == "postgres" {
			return fmt.Errorf("with -store postgres the keys outlive the process: set %s or %s", envKeyring, envKeyringFile)
		}
		if keyring, err = accountpool.GenerateKeyring(); err != nil {
			return err
		}
		logger.Warn("generated an ephemeral key-encryption keyring: stored API keys cannot be decrypted after a restart; set " + envKeyring + " or " + envKeyringFile + " to keep them")
	}
	sec, devTokens, err := devSecurity(&of.securityFlags)
	if err != nil {
		return err
	}

	// One telemetry for the process: one /metrics endpoint, each service
	// under its own service.name (see telemetry.Process.Service).
	tp, err := tf.start(ctx, logger, "switchyard-dev")
	if err != nil {
		return err
	}
	defer shutdownTelemetry(ctx, logger, tp)
	activityTel := tp.Service("switchyard-activity")
	poolTel := tp.Service("switchyard-accountpool")
	orchTel := tp.Service("switchyard-orchestrator")

	act, err := activity.New(ctx, activity.Config{Addr: activityAddr, Store: store, DatabaseURL: dbURL,
		Tokens: sec.tokens, InsecureNoAuth: of.insecureNoAuth, TLS: sec.serverTLS, GRPCLimits: sec.limits, InsecurePlaintext: sec.insecurePlaintext,
		AbandonGrace: rf.abandonGrace, ReaperInterval: rf.reaperInterval,
		Logger: logger.With("service", "activity"), Telemetry: activityTel})
	if err != nil {
		return err
	}
	poolCfg := af.config(logger, poolTel, keyring, store, dbURL)
	accountPoolSecurity(&poolCfg, sec, of.insecureNoAuth)
	pool, err := accountpool.New(ctx, poolCfg)
	if err != nil {
		return err
	}
	// The Orchestrator calls the services at their listen addresses, or
	// where they listen when the port was left to the system (":0").
	of.poolAddr, of.activityAddr = dialAddr(af.addr, pool.Addr()), dialAddr(activityAddr, act.Addr())
	orch, err := orchestrator.New(ctx, of.config(logger, orchTel, fallback, sec))
	if err != nil {
		return err
	}
	var dashLis net.Listener
	var dash http.Handler
	if dashboardAddr != "" {
		if dashLis, err = net.Listen("tcp", dashboardAddr); err != nil {
			return fmt.Errorf("listening on %s for the dashboard: %w", dashboardAddr, err)
		}
		var closeConns func()
		dash, closeConns, err = newDashboard(dashboardTargets{pool: of.poolAddr, activity: of.activityAddr, tls: sec.clientTLS, insecurePlaintext: sec.insecurePlaintext}, tp.Service("switchyard-dashboard"), logger)
		if err != nil {
			_ = dashLis.Close()
			return err
		}
		defer closeConns()
	}

	// Shutdown runs in dependency order: the Orchestrator drains first (its
	// in-flight tasks finish or are cancelled, and its outbox delivers what
	// they recorded), and only then do AccountPool, Activity and the
	// simulator, which those records go to, stop.
	g, gctx := errgroup.WithContext(ctx)
	depsCtx, stopDeps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDeps()
	defer context.AfterFunc(gctx, func() {
		if ctx.Err() == nil {
			stopDeps() // a service failed: stop everything at once
		}
	})()
	sim := anthropicsim.New(anthropicsim.Config{ControlToken: simToken.Reveal(), Logger: logger.With("service", "sim")})
	g.Go(func() error { return serveSim(depsCtx, simLis, sim, logger) })
	if dash != nil {
		g.Go(func() error { return serveHTTP(depsCtx, dashLis, dash, "the dashboard", logger) })
	}
	g.Go(func() error { return act.Serve(depsCtx) })
	g.Go(func() error { return pool.Serve(depsCtx) })
	orchCtx, stopOrch := context.WithCancel(gctx)
	defer stopOrch()
	g.Go(func() error {
		defer stopDeps()
		return orch.Serve(orchCtx)
	})
	// abort stops the stack that has started, in the same order, when dev
	// cannot go on.
	abort := func(err error) error {
		stopOrch()
		_ = g.Wait()
		return err
	}

	addrs := devAddresses{Orchestrator: orch.Addr().String(), AccountPool: pool.Addr().String(), Activity: act.Addr().String(),
		Simulator: "http://" + simLis.Addr().String(), AdminToken: devTokens.admin.Reveal(), AcmeToken: devTokens.acme.Reveal(),
		SimControlToken: sim.ControlToken()}
	if dashLis != nil {
		addrs.Dashboard = "http://" + dashLis.Addr().String() + "/"
	}
	if err := walkthrough.Execute(stdout, map[string]string{
		"Orch": addrs.Orchestrator, "Pool": addrs.AccountPool, "Activity": addrs.Activity,
		"Sim": addrs.Simulator, "Upstream": of.baseURL, "Store": storeBanner(store), "Dashboard": addrs.Dashboard,
		"AdminToken": addrs.AdminToken, "AcmeToken": addrs.AcmeToken, "SimToken": generatedOnly(simTokenGenerated, addrs.SimControlToken),
	}); err != nil {
		return abort(err)
	}
	if readyFile != "" {
		if err := writeReadyFile(readyFile, addrs); err != nil {
			return abort(err)
		}
		// The tokens die with the run; so does the file that holds them.
		defer os.Remove(readyFile)
	}
	return g.Wait()
}

var walkthrough = template.Must(template.New("walkthrough").Parse(`
Switchyard dev stack is up ({{.Store}}).
  orchestrator  {{.Orch}}
  accountpool   {{.Pool}}
  activity      {{.Activity}}
  simulator     {{.Sim}}   (upstream: {{.Upstream}})
{{if .Dashboard}}  dashboard     {{.Dashboard}}   (sign in with a token below)
{{end}}
{{if .AdminToken}}Tokens for this run (new at every start; paste these into your shell):
  export TOKEN={{.AdminToken}}        # admin: acts for any organization it names
  export ACME_TOKEN={{.AcmeToken}}   # acts for organization "acme" only

{{end}}{{if .SimToken}}The simulator's control token for this run (its /sim/ endpoints need it):
  export SIM_TOKEN={{.SimToken}}

{{end}}Try it (see README.md for the full walkthrough):
  grpcurl -plaintext {{.Orch}} list
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" \
    -d '{"organization_id":"acme","name":"primary","api_key":"sk-ant-sim-tier4-primary","tier":"tier4"}' \
    {{.Pool}} switchyard.accountpool.v1.AccountPoolService/RegisterAccount
  grpcurl -plaintext -H "authorization: Bearer $ACME_TOKEN" -d '{"category":"quick","prompt":"Say hello"}' \
    {{.Orch}} switchyard.orchestrator.v1.OrchestratorService/DelegateTask
  curl -H "Authorization: Bearer $SIM_TOKEN" '{{.Sim}}/sim/stats?api_key=sk-ant-sim-tier4-primary'

Press Ctrl-C to stop.
`))

// devAddresses is what -ready-file holds: where each server listens and
// the tokens dev generated (empty when the operator configured tokens),
// and the simulator's control token, generated or configured, which a
// script needs to drive the simulator's /sim/ endpoints.
type devAddresses struct {
	Orchestrator string `json:"orchestrator"`
	AccountPool  string `json:"accountpool"`
	Activity     string `json:"activity"`
	Simulator    string `json:"simulator"`
	Dashboard    string `json:"dashboard,omitempty"`
	AdminToken   string `json:"admin_token,omitempty"`
	AcmeToken    string `json:"acme_token,omitempty"`
	// SimControlToken is the bearer token of the simulator's /sim/ endpoints.
	SimControlToken string `json:"sim_control_token"`
}

// writeReadyFile writes the addresses atomically (a reader sees no file
// or the whole of it), readable by the owner only, since it holds tokens.
// The temporary file is created afresh (never one that already exists, or
// a link planted in its place) in the same directory, then renamed.
func writeReadyFile(path string, addrs devAddresses) error {
	b, err := json.MarshalIndent(addrs, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*.json")
	if err != nil {
		return fmt.Errorf("writing the ready file: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing the ready file: %w", werr)
	}
	return nil
}

// generatedOnly is token when it was generated for this run, else empty:
// a configured token is not printed.
func generatedOnly(generated bool, token string) string {
	if generated {
		return token
	}
	return ""
}

func storeBanner(store string) string {
	if store == "postgres" {
		return "PostgreSQL store"
	}
	return "embedded store: nothing is kept across restarts"
}

// devTokens are the tokens dev generated, to print; zero when the
// operator configured tokens.
type devTokens struct {
	admin, acme secret.String
}

// devSecurity resolves dev's security settings. Without configured tokens
// it generates an admin, an orchestrator and an "acme" token for this run.
func devSecurity(f *securityFlags) (security, devTokens, error) {
	sec, err := f.resolve()
	if err != nil || f.insecureNoAuth {
		return sec, devTokens{}, err
	}
	if sec.tokens != nil {
		tok, err := serviceToken()
		if err != nil {
			return sec, devTokens{}, err
		}
		sec.serviceToken = tok
		if sec.serviceToken.IsZero() {
			return sec, devTokens{}, fmt.Errorf("with configured tokens, set %s (or %s) to the orchestrator's own token", envServiceToken, envServiceTokenFile)
		}
		return sec, devTokens{}, nil
	}
	var toks devTokens
	var table strings.Builder
	for _, t := range []struct {
		dst       *secret.String
		principal string
	}{{&toks.admin, "admin"}, {&sec.serviceToken, "orchestrator"}, {&toks.acme, "org:acme"}} {
		tok, err := auth.GenerateToken()
		if err != nil {
			return sec, devTokens{}, err
		}
		*t.dst = tok
		fmt.Fprintf(&table, "%s %s\n", auth.HashToken(tok.Reveal()), t.principal)
	}
	sec.tokens, err = auth.ParseTokens(table.String())
	return sec, toks, err
}

// dialAddr is the address to call a service listening on listen at: listen
// itself (its host name is what a TLS certificate names), unless its port
// was left to the system, when only the bound address says where it is.
func dialAddr(listen string, bound net.Addr) string {
	if _, port, err := net.SplitHostPort(listen); err == nil && port == "0" {
		return bound.String()
	}
	return listen
}
