package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/services/accountpool"
	"github.com/switchyard-dev/switchyard/services/activity"
	"github.com/switchyard-dev/switchyard/services/orchestrator"
)

type orchestratorFlags struct {
	securityFlags
	addr, poolAddr, activityAddr, baseURL, categories, skills string
	failPoolDown, legacyEnvFallback                           bool
	attemptTimeout, maxWait, selectTimeout, progressInterval  time.Duration
	drainTimeout                                              time.Duration
	outboxDir                                                 string
	outboxMax                                                 int
	orgMaxConcurrent, orgTaskBurst, upstreamMaxConns          int
	orgTasksPerSecond                                         float64
}

func (f *orchestratorFlags) register(fs *flag.FlagSet, prefix, defaultBaseURL string) {
	fs.StringVar(&f.addr, prefix+"addr", env(envOrchestratorAddr, defaultOrchestrator), "orchestrator gRPC listen address ("+envOrchestratorAddr+")")
	fs.StringVar(&f.baseURL, "anthropic-base-url", env(envAnthropicBaseURL, defaultBaseURL), "Anthropic Messages API base URL ("+envAnthropicBaseURL+")")
	envVar(fs, &f.failPoolDown, "fail-when-pool-unavailable", envFailPoolDown, false, parseBool, "fail tasks with Unavailable when the AccountPool is unreachable instead of using ANTHROPIC_API_KEY")
	envVar(fs, &f.legacyEnvFallback, "legacy-environment-fallback-on-invalid-key", envLegacyEnvFallback, false, parseBool,
		"run an organization without accounts whose default key the upstream rejected on ANTHROPIC_API_KEY instead of failing its tasks with FailedPrecondition")
	fs.StringVar(&f.categories, "categories-file", env(envCategoriesFile, ""), "JSON file extending or overriding the category table ("+envCategoriesFile+")")
	fs.StringVar(&f.skills, "skills-dir", env(envSkillsDir, defaultSkillsDir), "directory of skills that load_skills can name ("+envSkillsDir+")")
	envVar(fs, &f.maxWait, "max-wait", envMaxWait, 10*time.Second, parseDuration, "how long a task may wait for a busy pool to free an account; 0 disables waiting")
	envVar(fs, &f.attemptTimeout, "attempt-timeout", envAttemptTimeout, defaultAttemptTimout, parsePositiveDuration, "upper bound of one model call")
	envVar(fs, &f.selectTimeout, "select-timeout", envSelectTimeout, 10*time.Second, parsePositiveDuration, "upper bound of one account selection; a slower pool fails the task with DeadlineExceeded")
	envVar(fs, &f.drainTimeout, "drain-timeout", envDrainTimeout, 30*time.Second, parsePositiveDuration, "at shutdown, how long in-flight tasks may finish, and then how long queued bookkeeping may take to deliver")
	fs.StringVar(&f.outboxDir, "outbox-dir", env(envOutboxDir, ""), "directory of the durable bookkeeping outbox; empty keeps it in memory ("+envOutboxDir+")")
	envVar(fs, &f.outboxMax, "outbox-max-records", envOutboxMax, 100_000, parsePositiveInt, "bookkeeping records that may wait for delivery before new tasks are refused")
	envVar(fs, &f.progressInterval, "progress-interval", envProgressInterval, 5*time.Second, parsePositiveDuration, "least time between progress events of a streaming attempt")
	f.registerTaskLimits(fs)
}

func (f *orchestratorFlags) config(logger *slog.Logger, tel telemetry.Providers, fallbackKey secret.String, sec security) orchestrator.Config {
	return orchestrator.Config{
		Tokens:                  sec.tokens,
		InsecureNoAuth:          f.insecureNoAuth,
		ServiceToken:            sec.serviceToken,
		TLS:                     sec.serverTLS,
		ClientTLS:               sec.clientTLS,
		GRPCLimits:              sec.limits,
		InsecurePlaintext:       sec.insecurePlaintext,
		Addr:                    f.addr,
		AccountPoolAddr:         f.poolAddr,
		ActivityAddr:            f.activityAddr,
		AnthropicBaseURL:        f.baseURL,
		FallbackAPIKey:          fallbackKey,
		FailWhenPoolUnavailable: f.failPoolDown,
		CategoriesFile:          f.categories,
		SkillsDir:               f.skills,
		AttemptTimeout:          f.attemptTimeout,
		MaxWait:                 f.libraryMaxWait(),
		SelectTimeout:           f.selectTimeout,
		ProgressInterval:        f.progressInterval,
		DrainTimeout:            f.drainTimeout,
		OutboxDir:               f.outboxDir,
		OutboxMaxRecords:        f.outboxMax,
		OrgMaxConcurrentTasks:   f.orgMaxConcurrent,
		OrgTasksPerSecond:       f.orgTasksPerSecond,
		OrgTaskBurst:            f.orgTaskBurst,
		UpstreamMaxConns:        f.upstreamMaxConns,
		Logger:                  logger.With("service", "orchestrator"),
		Telemetry:               tel,

		LegacyEnvironmentFallbackOnInvalidKey: f.legacyEnvFallback,
	}
}

// libraryMaxWait is -max-wait as orchestrator.Config takes it: there 0
// means its default and a negative wait disables waiting, while the flag's
// 0 disables it (as does a negative one).
func (f *orchestratorFlags) libraryMaxWait() time.Duration {
	if f.maxWait <= 0 {
		return -1
	}
	return f.maxWait
}

// activityReaperFlags set how soon the Activity service abandons an
// activity still running after its deadline.
type activityReaperFlags struct {
	abandonGrace, reaperInterval time.Duration
}

func (f *activityReaperFlags) register(fs *flag.FlagSet) {
	envVar(fs, &f.abandonGrace, "abandon-grace", envAbandonGrace, activity.DefaultAbandonGrace, parsePositiveDuration, "how long after its deadline a running activity is marked ABANDONED")
	envVar(fs, &f.reaperInterval, "reaper-interval", envReaperInterval, activity.DefaultReaperInterval, parsePositiveDuration, "how often the Activity service sweeps for such activities")
}

type accountPoolFlags struct {
	addr, keyring, keyringFile, tiers, pricing    string
	state, redisURL, redisNamespace, redisFailure string
	leaseTimeout                                  time.Duration
	maxAccountsPerOrg, maxLabelsPerAccount        int
	storeFlags
	usageFlags
}

// accountPoolSecurity is what the accountpool needs of the security
// settings.
func accountPoolSecurity(c *accountpool.Config, sec security, insecureNoAuth bool) {
	c.Tokens, c.TLS, c.InsecureNoAuth, c.GRPCLimits, c.InsecurePlaintext = sec.tokens, sec.serverTLS, insecureNoAuth, sec.limits, sec.insecurePlaintext
}

func (f *accountPoolFlags) register(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&f.addr, prefix+"addr", env(envAccountPoolAddr, defaultAccountPool), "accountpool gRPC listen address ("+envAccountPoolAddr+")")
	fs.StringVar(&f.keyringFile, "keyring-file", env(envKeyringFile, ""), "file holding the key-encryption keyring ("+envKeyringFile+")")
	fs.StringVar(&f.tiers, "tiers-file", env(envTiersFile, ""), "JSON file overriding the tier limits table ("+envTiersFile+")")
	fs.StringVar(&f.pricing, "pricing-file", env(envPricingFile, ""), "JSON file overriding the model pricing table ("+envPricingFile+")")
	f.usageFlags.register(fs)
	envVar(fs, &f.leaseTimeout, "lease-timeout", envLeaseTimeout, 2*time.Minute, parsePositiveDuration, "how long a selection's reservation holds when its usage is never recorded; a lease outliving it is released")
	envVar(fs, &f.maxAccountsPerOrg, "max-accounts-per-organization", envMaxAccountsPerOrg, accountpool.DefaultMaxAccountsPerOrganization, parsePositiveInt, "the most accounts one organization may register; RegisterAccount past it answers FailedPrecondition")
	envVar(fs, &f.maxLabelsPerAccount, "max-labels-per-account", envMaxLabelsPerAccount, accountpool.DefaultMaxLabelsPerAccount, parseLabelsPerAccount, "the most labels one account may carry, 1 to 64")
	fs.StringVar(&f.state, "state", env(envState, ""), "where the pool's live state lives: memory (this process only) or redis (shared by replicas); default redis when a Redis URL is set ("+envState+")")
	// The URL may hold a password: its flag does not default to the
	// variable, so -h never prints it (config reads the variable).
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis for -state redis, redis://host:6379/0; a password belongs in "+envRedisURL+", not the flag (default "+envRedisURL+")")
	fs.StringVar(&f.redisNamespace, "redis-namespace", env(envRedisNamespace, ""), "prefix of every Redis key, to share a Redis between deployments; default switchyard ("+envRedisNamespace+")")
	fs.StringVar(&f.redisFailure, "redis-failure", env(envRedisFailure, accountpool.FailClosed), "while Redis is unreachable: closed (SelectAccount answers Unavailable) or degrade (each replica runs alone on its share of every limit) ("+envRedisFailure+")")
	// The inline keyring is read from the environment only: a flag would
	// show it in the process list.
	f.keyring = env(envKeyring, "")
}

// parseLabelsPerAccount accepts 1 to accountpool.MaxLabelsPerAccountCeiling:
// the API refuses more labels than that whatever the setting.
func parseLabelsPerAccount(s string) (int, error) {
	n, err := parsePositiveInt(s)
	if err == nil && n > accountpool.MaxLabelsPerAccountCeiling {
		return 0, fmt.Errorf("out of range; use a whole number from 1 to %d", accountpool.MaxLabelsPerAccountCeiling)
	}
	return n, err
}

// resolve is storeFlags.resolve plus the live state's settings, checked
// before anything starts so the error names the flag and the variable.
func (f *accountPoolFlags) resolve() (store, url string, err error) {
	switch f.state {
	case "", accountpool.StateMemory, accountpool.StateRedis:
	default:
		return "", "", fmt.Errorf("-state (%s): %q is not a state; use %s or %s", envState, f.state, accountpool.StateMemory, accountpool.StateRedis)
	}
	switch f.redisFailure {
	case "", accountpool.FailClosed, accountpool.FailDegrade:
	default:
		return "", "", fmt.Errorf("-redis-failure (%s): %q is not a policy; use %s or %s", envRedisFailure, f.redisFailure, accountpool.FailClosed, accountpool.FailDegrade)
	}
	return f.storeFlags.resolve()
}

func (f *accountPoolFlags) config(logger *slog.Logger, tel telemetry.Providers, keyring, store, databaseURL string) accountpool.Config {
	c := accountpool.Config{
		Store:       store,
		DatabaseURL: databaseURL,
		Addr:        f.addr,
		Keyring:     keyring,
		TiersFile:   f.tiers,
		PricingFile: f.pricing,
		Logger:      logger.With("service", "accountpool"),
		Telemetry:   tel,

		LeaseTimeout:               f.leaseTimeout,
		MaxAccountsPerOrganization: f.maxAccountsPerOrg,
		MaxLabelsPerAccount:        f.maxLabelsPerAccount,
		State:                      f.state,
		RedisURL:                   cmp.Or(f.redisURL, env(envRedisURL, "")),
		RedisNamespace:             f.redisNamespace,
		RedisFailure:               f.redisFailure,
	}
	f.usageFlags.apply(&c)
	return c
}

func runOrchestrator(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("orchestrator", "Runs the Orchestrator service (DelegateTask).", stderr)
	var of orchestratorFlags
	var lf logFlags
	var tf telemetryFlags
	of.register(fs, "", orchestrator.DefaultAnthropicBaseURL)
	fs.StringVar(&of.poolAddr, "accountpool-addr", env(envAccountPoolAddr, defaultAccountPool), "AccountPool gRPC target: host:port, a comma-separated list of replicas' host:port, or dns:///host:port ("+envAccountPoolAddr+")")
	fs.StringVar(&of.activityAddr, "activity-addr", env(envActivityAddr, defaultActivity), "Activity gRPC target: host:port, a comma-separated list of replicas' host:port, or dns:///host:port ("+envActivityAddr+")")
	of.securityFlags.register(fs)
	lf.register(fs)
	tf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkTargets(of.poolAddr, of.activityAddr); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "orchestrator")
	sec, err := of.securityFlags.resolve()
	if err != nil {
		return err
	}
	tok, err := serviceToken()
	if err != nil {
		return err
	}
	sec.serviceToken = tok
	if sec.serviceToken.IsZero() && !of.insecureNoAuth {
		return fmt.Errorf("the orchestrator needs its own token for AccountPool and Activity: set %s or %s (a token whose principal is 'orchestrator')", envServiceToken, envServiceTokenFile)
	}
	key, err := anthropicKey()
	if err != nil {
		return err
	}
	return withTelemetry(ctx, tf, logger, "switchyard-orchestrator", func(tel telemetry.Providers) error {
		return orchestrator.Run(ctx, of.config(logger, tel, key, sec))
	})
}

// checkTargets checks the Orchestrator's targets of AccountPool and
// Activity before anything starts, naming the setting that is wrong.
func checkTargets(poolAddr, activityAddr string) error {
	for _, t := range []struct{ flag, env, v string }{
		{"-accountpool-addr", envAccountPoolAddr, poolAddr},
		{"-activity-addr", envActivityAddr, activityAddr},
	} {
		if err := grpcclient.CheckTarget(t.v); err != nil {
			return fmt.Errorf("%s (%s): %w", t.flag, t.env, err)
		}
	}
	return nil
}

func runAccountPool(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("accountpool", "Runs the AccountPool service. The key-encryption keyring comes from "+envKeyring+" or "+envKeyringFile+".", stderr)
	var af accountPoolFlags
	var lf logFlags
	var tf telemetryFlags
	var secf securityFlags
	af.register(fs, "")
	af.storeFlags.register(fs, "")
	secf.register(fs)
	lf.register(fs)
	tf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "accountpool")
	useRedisLog(logger)
	store, dbURL, err := af.resolve()
	if err != nil {
		return err
	}
	keyring, err := readKeyring(af.keyring, af.keyringFile)
	if err != nil {
		return err
	}
	if keyring == "" {
		return fmt.Errorf("the accountpool needs a key-encryption keyring: set %s or %s (generate one with 'openssl rand -base64 32' and write it as '1:<base64>')", envKeyring, envKeyringFile)
	}
	sec, err := secf.resolve()
	if err != nil {
		return err
	}
	return withTelemetry(ctx, tf, logger, "switchyard-accountpool", func(tel telemetry.Providers) error {
		cfg := af.config(logger, tel, keyring, store, dbURL)
		accountPoolSecurity(&cfg, sec, secf.insecureNoAuth)
		return accountpool.Run(ctx, cfg)
	})
}

func runActivity(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("activity", "Runs the Activity service.", stderr)
	var addr string
	var lf logFlags
	var tf telemetryFlags
	var sf storeFlags
	var secf securityFlags
	var rf activityReaperFlags
	fs.StringVar(&addr, "addr", env(envActivityAddr, defaultActivity), "activity gRPC listen address ("+envActivityAddr+")")
	rf.register(fs)
	sf.register(fs, "")
	secf.register(fs)
	lf.register(fs)
	tf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	logStarting(logger, "activity")
	store, dbURL, err := sf.resolve()
	if err != nil {
		return err
	}
	sec, err := secf.resolve()
	if err != nil {
		return err
	}
	return withTelemetry(ctx, tf, logger, "switchyard-activity", func(tel telemetry.Providers) error {
		return activity.Run(ctx, activity.Config{Addr: addr, Store: store, DatabaseURL: dbURL,
			Tokens: sec.tokens, InsecureNoAuth: secf.insecureNoAuth, TLS: sec.serverTLS, GRPCLimits: sec.limits, InsecurePlaintext: sec.insecurePlaintext,
			AbandonGrace: rf.abandonGrace, ReaperInterval: rf.reaperInterval,
			Logger: logger.With("service", "activity"), Telemetry: tel})
	})
}
