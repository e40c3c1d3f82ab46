package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/servicekit"
	"github.com/switchyard-dev/switchyard/pkg/telemetry"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// Environment variables shared by several commands. Each is the default of
// the flag of the same meaning.
const (
	envOrchestratorAddr = "SWITCHYARD_ORCHESTRATOR_ADDR"
	envAccountPoolAddr  = "SWITCHYARD_ACCOUNTPOOL_ADDR"
	envActivityAddr     = "SWITCHYARD_ACTIVITY_ADDR"
	envSimAddr          = "SWITCHYARD_SIM_ADDR"
	envAnthropicBaseURL = "SWITCHYARD_ANTHROPIC_BASE_URL"
	envAnthropicAPIKey  = "ANTHROPIC_API_KEY"
	// envAnthropicAPIKeyFile names a file holding it.
	envAnthropicAPIKeyFile = "ANTHROPIC_API_KEY_FILE"
	envFailPoolDown        = "SWITCHYARD_FAIL_WHEN_POOL_UNAVAILABLE"
	envLegacyEnvFallback   = "SWITCHYARD_LEGACY_ENVIRONMENT_FALLBACK"
	envCategoriesFile      = "SWITCHYARD_CATEGORIES_FILE"
	envSkillsDir           = "SWITCHYARD_SKILLS_DIR"
	envKeyring             = "SWITCHYARD_KEYRING"
	envKeyringFile         = "SWITCHYARD_KEYRING_FILE"
	envTiersFile           = "SWITCHYARD_TIERS_FILE"
	envPricingFile         = "SWITCHYARD_PRICING_FILE"
	envLogLevel            = "SWITCHYARD_LOG_LEVEL"
	envLogFormat           = "SWITCHYARD_LOG_FORMAT"
	envAttemptTimeout      = "SWITCHYARD_ATTEMPT_TIMEOUT"
	envMaxWait             = "SWITCHYARD_MAX_WAIT"
	envSelectTimeout       = "SWITCHYARD_SELECT_TIMEOUT"
	envProgressInterval    = "SWITCHYARD_PROGRESS_INTERVAL"
	envDrainTimeout        = "SWITCHYARD_DRAIN_TIMEOUT"
	envOutboxDir           = "SWITCHYARD_OUTBOX_DIR"
	envOutboxMax           = "SWITCHYARD_OUTBOX_MAX_RECORDS"
	envOrgMaxConcurrent    = "SWITCHYARD_ORG_MAX_CONCURRENT_TASKS"
	envOrgTasksPerSecond   = "SWITCHYARD_ORG_TASKS_PER_SECOND"
	envOrgTaskBurst        = "SWITCHYARD_ORG_TASK_BURST"
	envUpstreamMaxConns    = "SWITCHYARD_UPSTREAM_MAX_CONNS"
	envStore               = "SWITCHYARD_STORE"
	envDatabaseURL         = "SWITCHYARD_DATABASE_URL"
	envAbandonGrace        = "SWITCHYARD_ABANDON_GRACE"
	envReaperInterval      = "SWITCHYARD_REAPER_INTERVAL"
	envLeaseTimeout        = "SWITCHYARD_LEASE_TIMEOUT"
	envMaxAccountsPerOrg   = "SWITCHYARD_MAX_ACCOUNTS_PER_ORGANIZATION"
	envMaxLabelsPerAccount = "SWITCHYARD_MAX_LABELS_PER_ACCOUNT"
	envState               = "SWITCHYARD_STATE"
	envRedisURL            = "SWITCHYARD_REDIS_URL"
	envRedisNamespace      = "SWITCHYARD_REDIS_NAMESPACE"
	envRedisFailure        = "SWITCHYARD_REDIS_FAILURE"
	defaultSimAddr         = "127.0.0.1:50080"
	defaultAccountPool     = "127.0.0.1:50052"
	defaultActivity        = "127.0.0.1:50053"
	defaultOrchestrator    = "127.0.0.1:50051"
	defaultSkillsDir       = "skills"
	defaultAttemptTimout   = 10 * time.Minute
)

// env is the variable name's value, or def when it is unset or empty.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// envVar registers the flag name, whose default is def or, when it is set,
// the variable envName, and whose usage ends naming the variable. parse
// refuses what the setting does not accept, from the flag (Parse fails,
// naming the flag) or from the variable (parseFlags fails, naming it): a
// bad value never falls back to the default.
func envVar[T any](fs *flag.FlagSet, p *T, name, envName string, def T, parse func(string) (T, error), usage string) {
	*p = def
	v := &envValue[T]{p: p, parse: parse}
	if s := env(envName, ""); s != "" {
		if err := v.Set(s); err != nil {
			v.envErr = fmt.Errorf("%s: %q is %w", envName, s, err)
		}
	}
	fs.Var(v, name, usage+" ("+envName+")")
}

// envValue is the flag.Value of envVar. It keeps the variable's refusal,
// if any, for parseFlags: the flag set is the only state a command's
// configuration has.
type envValue[T any] struct {
	p      *T
	parse  func(string) (T, error)
	envErr error
}

func (v *envValue[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

// String formats the value for -h; the flag package calls it on a zero
// envValue too.
func (v *envValue[T]) String() string {
	var x T
	if v != nil && v.p != nil {
		x = *v.p
	}
	return fmt.Sprint(x)
}

// IsBoolFlag lets a boolean be given without a value (-insecure-no-auth).
func (v *envValue[T]) IsBoolFlag() bool {
	_, ok := any(v.p).(*bool)
	return ok
}

func (v *envValue[T]) envError() error { return v.envErr }

// parseFlags parses args, then refuses, all at once, every variable that
// envVar could not parse, except those whose flag is given: a flag
// overrides its variable.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := f.Value.(interface{ envError() error }); ok && !given[f.Name] {
			errs = append(errs, v.envError())
		}
	})
	return errors.Join(errs...)
}

const durationForm = "use a Go duration such as 10s or 1m30s"

// parseBool accepts what strconv.ParseBool does.
func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, errors.New("not a boolean; use true or false (or 1, 0, t, f)")
	}
	return b, nil
}

// parseDuration accepts any Go duration, for a setting that 0 turns off.
// A bare number has no unit and is refused.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New("not a duration; " + durationForm)
	}
	return d, nil
}

// parsePositiveDuration is for the settings that cannot be turned off: to
// the services a zero duration means their default, which is not what a 0
// asks for, so it is refused, as is a negative one.
func parsePositiveDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err == nil && d <= 0 {
		err = errors.New("not a positive duration; " + durationForm)
	}
	return d, err
}

// parsePositiveInt accepts a whole number of at least 1.
func parsePositiveInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("out of range; use a whole number from 1 to %d", math.MaxInt)
	case err != nil:
		return 0, errors.New("not an integer; use a whole number such as 100000")
	case n < 1:
		return 0, errors.New("out of range; use a whole number of at least 1")
	}
	return n, nil
}

// A setting is a variable the commands read and the flags, in any command,
// that default to it (none: the variable is read from the environment
// only).
type setting struct {
	env   string
	flags []string
}

// settings is every variable a command reads, itself or through
// pkg/telemetry: the table of README.md's "Configuration" section. Tests
// hold the README to it, and it to the flags every command's -h lists with
// the variable each names.
var settings = []setting{
	{envOrchestratorAddr, []string{"addr", "orchestrator-addr"}},
	{envAccountPoolAddr, []string{"addr", "accountpool-addr"}},
	{envActivityAddr, []string{"addr", "activity-addr"}},
	{envSimAddr, []string{"addr", "sim-addr"}},
	{envSimControlToken, nil},
	{envSimControlTokenFile, []string{"control-token-file", "sim-control-token-file"}},
	{envDashboardAddr, []string{"addr", "dashboard-addr"}},
	{envAnthropicBaseURL, []string{"anthropic-base-url"}},
	{envAnthropicAPIKey, nil},
	{envAnthropicAPIKeyFile, nil},
	{envFailPoolDown, []string{"fail-when-pool-unavailable"}},
	{envLegacyEnvFallback, []string{"legacy-environment-fallback-on-invalid-key"}},
	{envCategoriesFile, []string{"categories-file"}},
	{envSkillsDir, []string{"skills-dir"}},
	{envAttemptTimeout, []string{"attempt-timeout"}},
	{envMaxWait, []string{"max-wait"}},
	{envSelectTimeout, []string{"select-timeout"}},
	{envProgressInterval, []string{"progress-interval"}},
	{envOutboxDir, []string{"outbox-dir"}},
	{envOutboxMax, []string{"outbox-max-records"}},
	{envOrgMaxConcurrent, []string{"org-max-concurrent-tasks"}},
	{envOrgTasksPerSecond, []string{"org-tasks-per-second"}},
	{envOrgTaskBurst, []string{"org-task-burst"}},
	{envUpstreamMaxConns, []string{"upstream-max-conns"}},
	{envDrainTimeout, []string{"drain-timeout"}},
	{envAbandonGrace, []string{"abandon-grace"}},
	{envReaperInterval, []string{"reaper-interval"}},
	{envStore, []string{"store"}},
	{envState, []string{"state"}},
	{envRedisURL, []string{"redis-url"}},
	{envRedisNamespace, []string{"redis-namespace"}},
	{envRedisFailure, []string{"redis-failure"}},
	{envLeaseTimeout, []string{"lease-timeout"}},
	{envDBMaxConns, []string{"db-max-conns"}},
	{envUsageQueryConns, []string{"usage-query-conns"}},
	{envUsageQueryTimeout, []string{"usage-query-timeout"}},
	{envUsageMaxRange, []string{"usage-max-range"}},
	{envUsageMaxRecordsRange, []string{"usage-max-records-range"}},
	{envMaxAccountsPerOrg, []string{"max-accounts-per-organization"}},
	{envMaxLabelsPerAccount, []string{"max-labels-per-account"}},
	{envDatabaseURL, nil},
	{"DATABASE_URL", nil},
	{envMigrateDatabaseURL, []string{"database-url"}},
	{envKeyring, nil},
	{envKeyringFile, []string{"keyring-file"}},
	{envTiersFile, []string{"tiers-file"}},
	{envPricingFile, []string{"pricing-file"}},
	{envLogLevel, []string{"log-level"}},
	{envLogFormat, []string{"log-format"}},
	{envTokens, nil},
	{envTokensFile, []string{"tokens-file"}},
	{envServiceToken, nil},
	{envServiceTokenFile, nil},
	{envInsecureNoAuth, []string{"insecure-no-auth"}},
	{envInsecurePlaintext, []string{"insecure-plaintext"}},
	{envTLSCert, []string{"tls-cert-file"}},
	{envTLSKey, []string{"tls-key-file"}},
	{envTLSCA, []string{"tls-ca-file"}},
	{envGRPCMaxConnections, []string{"grpc-max-connections"}},
	{envGRPCMaxStreamsPerConn, []string{"grpc-max-concurrent-streams"}},
	{envGRPCMaxCalls, []string{"grpc-max-calls"}},
	{envGRPCMaxHeaderBytes, []string{"grpc-max-header-bytes"}},
	{envGRPCMaxMessageBytes, []string{"grpc-max-message-bytes"}},
	{envGRPCHandshakeTimeout, []string{"grpc-handshake-timeout"}},
	{envGRPCIdleTimeout, []string{"grpc-max-connection-idle"}},
	{envGRPCReadTimeout, []string{"grpc-request-read-timeout"}},
	{envMetricsAddr, []string{"metrics-addr"}},
	{envPprof, []string{"pprof"}},
	// The standard variables pkg/telemetry reads itself (the OTLP
	// exporters read the rest of the OTEL_EXPORTER_OTLP_* family).
	{"OTEL_EXPORTER_OTLP_ENDPOINT", nil},
	{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", nil},
	{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", nil},
	{telemetry.EnvTracesExporter, nil},
	{telemetry.EnvMetricsExporter, nil},
	{telemetry.EnvTracesSampler, nil},
	{telemetry.EnvTracesSamplerArg, nil},
	{telemetry.EnvServiceName, nil},
	{telemetry.EnvResourceAttributes, nil},
	{telemetry.EnvSDKDisabled, nil},
	{telemetry.EnvPrometheusHost, nil},
	{telemetry.EnvPrometheusPort, nil},
	// Go's collector target, read by tuneGC.
	{"GOGC", nil},
}

// newFlagSet returns a flag set whose usage names the command and whose
// errors go to w.
func newFlagSet(name, summary string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: switchyard %s [flags]\n\n%s\n\nflags (each defaults to the environment variable named in its description):\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

type logFlags struct {
	level, format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", env(envLogLevel, "info"), "log level: debug, info, warn, error ("+envLogLevel+")")
	fs.StringVar(&l.format, "log-format", env(envLogFormat, "text"), "log format: text or json ("+envLogFormat+")")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("-log-level (%s): %q is not a log level; use debug, info, warn or error", envLogLevel, l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("-log-format (%s): %q is not a log format; use text or json", envLogFormat, l.format)
	}
}

// readKeyring returns the keyring from SWITCHYARD_KEYRING or the file named
// by SWITCHYARD_KEYRING_FILE (or the flags that default to them).
func readKeyring(inline, file string) (string, error) {
	switch {
	case inline != "" && file != "":
		return "", fmt.Errorf("set either %s or %s, not both", envKeyring, envKeyringFile)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading keyring file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	default:
		return inline, nil
	}
}

// storeFlags choose a service's store. The connection string comes from the
// environment only (SWITCHYARD_DATABASE_URL, else DATABASE_URL): a flag would
// show its password in the process list.
type storeFlags struct {
	store, databaseURL string
}

func (f *storeFlags) register(fs *flag.FlagSet, def string) {
	fs.StringVar(&f.store, "store", env(envStore, def), "store: memory or postgres; empty means postgres when "+envDatabaseURL+" or DATABASE_URL is set ("+envStore+")")
	f.databaseURL = env(envDatabaseURL, env("DATABASE_URL", ""))
}

// resolve returns the store name and URL to hand to a service's Config.
func (f *storeFlags) resolve() (store, url string, err error) {
	// The services choose the same way (servicekit.ChooseStore); choosing
	// here too names the flag in the error before anything starts.
	kind, err := servicekit.ChooseStore(f.store, f.databaseURL)
	if err != nil {
		return "", "", fmt.Errorf("-store (%s): %w", envStore, err)
	}
	if kind == servicekit.StoreMemory {
		return kind, "", nil
	}
	return kind, f.databaseURL, nil
}

// Security settings. Tokens and the orchestrator's own token come from the
// environment only: flags would show them in the process list.
const (
	envTokens         = "SWITCHYARD_TOKENS"
	envTokensFile     = "SWITCHYARD_TOKENS_FILE"
	envInsecureNoAuth = "SWITCHYARD_INSECURE_NO_AUTH"
	// envInsecurePlaintext allows gRPC without TLS off loopback.
	envInsecurePlaintext = "SWITCHYARD_INSECURE_PLAINTEXT"
	envServiceToken      = "SWITCHYARD_ORCHESTRATOR_TOKEN"
	// envServiceTokenFile names a file holding it, for secrets mounted as
	// files (compose, Kubernetes).
	envServiceTokenFile = "SWITCHYARD_ORCHESTRATOR_TOKEN_FILE"
	envTLSCert          = "SWITCHYARD_TLS_CERT_FILE"
	envTLSKey           = "SWITCHYARD_TLS_KEY_FILE"
	envTLSCA            = "SWITCHYARD_TLS_CA_FILE"
)

// securityFlags are what protects a server: its tokens, its TLS and its
// transport limits.
type securityFlags struct {
	tokens, tokensFile string
	insecureNoAuth     bool
	tls                tlsconfig.Files
	insecurePlaintext  bool
	limits             limitFlags
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	f.tokens = env(envTokens, "")
	fs.StringVar(&f.tokensFile, "tokens-file", env(envTokensFile, ""), "file of '<sha256 hex of token> <admin|orchestrator|org:ID>' lines ("+envTokensFile+"; or the table itself in "+envTokens+")")
	envVar(fs, &f.insecureNoAuth, "insecure-no-auth", envInsecureNoAuth, false, parseBool, "serve without authentication: any caller may act for any organization; local experiments only")
	registerTLSFlags(fs, &f.tls)
	registerInsecurePlaintext(fs, &f.insecurePlaintext)
	f.limits.register(fs)
}

// registerInsecurePlaintext registers -insecure-plaintext, which lets a
// process serve or dial gRPC without TLS on addresses beyond loopback.
func registerInsecurePlaintext(fs *flag.FlagSet, p *bool) {
	envVar(fs, p, "insecure-plaintext", envInsecurePlaintext, false, parseBool,
		"allow gRPC without TLS on addresses other machines reach, where tokens and API keys then cross the network in cleartext; only on a network protected otherwise")
}

func registerTLSFlags(fs *flag.FlagSet, f *tlsconfig.Files) {
	fs.StringVar(&f.CertFile, "tls-cert-file", env(envTLSCert, ""), "this process's TLS certificate (PEM); with the key and CA files enables mutual TLS ("+envTLSCert+")")
	fs.StringVar(&f.KeyFile, "tls-key-file", env(envTLSKey, ""), "this process's TLS private key (PEM) ("+envTLSKey+")")
	fs.StringVar(&f.CAFile, "tls-ca-file", env(envTLSCA, ""), "the CA that signs every service's and client's certificate ("+envTLSCA+")")
}

// tokenTable returns the configured tokens, or nil when none are.
func (f *securityFlags) tokenTable() (*auth.Tokens, error) {
	spec := f.tokens
	switch {
	case f.tokens != "" && f.tokensFile != "":
		return nil, fmt.Errorf("set either %s or %s, not both", envTokens, envTokensFile)
	case f.tokensFile != "":
		b, err := os.ReadFile(f.tokensFile)
		if err != nil {
			return nil, fmt.Errorf("reading the tokens file: %w", err)
		}
		spec = string(b)
	case spec == "":
		return nil, nil
	}
	return auth.ParseTokens(spec)
}

// tlsConfigs returns the server and client TLS configurations, both nil
// when TLS is not configured.
func (f *securityFlags) tlsConfigs() (server, client *tls.Config, err error) {
	if !f.tls.Enabled() {
		return nil, nil, nil
	}
	if server, err = tlsconfig.Server(f.tls); err != nil {
		return nil, nil, err
	}
	if client, err = tlsconfig.Client(f.tls, ""); err != nil {
		return nil, nil, err
	}
	return server, client, nil
}

// security is what securityFlags resolve to.
type security struct {
	tokens               *auth.Tokens
	serverTLS, clientTLS *tls.Config
	serviceToken         secret.String
	limits               grpcserver.Limits
	insecurePlaintext    bool
}

func (f *securityFlags) resolve() (security, error) {
	tokens, err := f.tokenTable()
	if err != nil {
		return security{}, err
	}
	server, client, err := f.tlsConfigs()
	if err != nil {
		return security{}, err
	}
	return security{tokens: tokens, serverTLS: server, clientTLS: client, limits: f.limits.limits(), insecurePlaintext: f.insecurePlaintext}, nil
}

// serviceToken is the orchestrator's own token, from
// SWITCHYARD_ORCHESTRATOR_TOKEN or SWITCHYARD_ORCHESTRATOR_TOKEN_FILE.
func serviceToken() (secret.String, error) { return secretEnv(envServiceToken, envServiceTokenFile) }

// anthropicKey is legacy mode's environment key, from ANTHROPIC_API_KEY or
// ANTHROPIC_API_KEY_FILE.
func anthropicKey() (secret.String, error) {
	return secretEnv(envAnthropicAPIKey, envAnthropicAPIKeyFile)
}

// secretEnv reads a secret from the variable inline or from the file the
// variable file names (not both); empty when neither is set. Errors name
// the variables, never the value.
func secretEnv(inline, file string) (secret.String, error) {
	v, path := env(inline, ""), env(file, "")
	switch {
	case v != "" && path != "":
		return secret.String{}, fmt.Errorf("set either %s or %s, not both", inline, file)
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			// The path is configuration, not the secret: it may be named.
			return secret.String{}, fmt.Errorf("%s: %w", file, err)
		}
		return secret.New(strings.TrimSpace(string(b))), nil
	}
	return secret.New(v), nil
}
