package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/secret"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// Environment variables shared by several commands. Each is the default of
// the flag of the same meaning.
const (
	envOrchestratorAddr  = "SWITCHYARD_ORCHESTRATOR_ADDR"
	envAccountPoolAddr   = "SWITCHYARD_ACCOUNTPOOL_ADDR"
	envActivityAddr      = "SWITCHYARD_ACTIVITY_ADDR"
	envSimAddr           = "SWITCHYARD_SIM_ADDR"
	envAnthropicBaseURL  = "SWITCHYARD_ANTHROPIC_BASE_URL"
	envAnthropicAPIKey   = "ANTHROPIC_API_KEY"
	envFailPoolDown      = "SWITCHYARD_FAIL_WHEN_POOL_UNAVAILABLE"
	envCategoriesFile    = "SWITCHYARD_CATEGORIES_FILE"
	envSkillsDir         = "SWITCHYARD_SKILLS_DIR"
	envKeyring           = "SWITCHYARD_KEYRING"
	envKeyringFile       = "SWITCHYARD_KEYRING_FILE"
	envTiersFile         = "SWITCHYARD_TIERS_FILE"
	envPricingFile       = "SWITCHYARD_PRICING_FILE"
	envLogLevel          = "SWITCHYARD_LOG_LEVEL"
	envLogFormat         = "SWITCHYARD_LOG_FORMAT"
	envAttemptTimeout    = "SWITCHYARD_ATTEMPT_TIMEOUT"
	envMaxWait           = "SWITCHYARD_MAX_WAIT"
	envSelectTimeout     = "SWITCHYARD_SELECT_TIMEOUT"
	envProgressInterval  = "SWITCHYARD_PROGRESS_INTERVAL"
	envDrainTimeout      = "SWITCHYARD_DRAIN_TIMEOUT"
	envOutboxDir         = "SWITCHYARD_OUTBOX_DIR"
	envOutboxMax         = "SWITCHYARD_OUTBOX_MAX_RECORDS"
	envStore             = "SWITCHYARD_STORE"
	envDatabaseURL       = "SWITCHYARD_DATABASE_URL"
	envAbandonGrace      = "SWITCHYARD_ABANDON_GRACE"
	envReaperInterval    = "SWITCHYARD_REAPER_INTERVAL"
	envLeaseTimeout      = "SWITCHYARD_LEASE_TIMEOUT"
	envState             = "SWITCHYARD_STATE"
	envRedisURL          = "SWITCHYARD_REDIS_URL"
	envRedisNamespace    = "SWITCHYARD_REDIS_NAMESPACE"
	envRedisFailure      = "SWITCHYARD_REDIS_FAILURE"
	defaultSimAddr       = "127.0.0.1:50080"
	defaultAccountPool   = "127.0.0.1:50052"
	defaultActivity      = "127.0.0.1:50053"
	defaultOrchestrator  = "127.0.0.1:50051"
	defaultSkillsDir     = "skills"
	defaultAttemptTimout = 10 * time.Minute
)

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envBool(name string, def bool) bool {
	v, err := strconv.ParseBool(env(name, strconv.FormatBool(def)))
	if err != nil {
		return def
	}
	return v
}

func envDuration(name string, def time.Duration) time.Duration {
	v, err := time.ParseDuration(env(name, def.String()))
	if err != nil {
		return def
	}
	return v
}

func envInt(name string, def int) int {
	v, err := strconv.Atoi(env(name, strconv.Itoa(def)))
	if err != nil {
		return def
	}
	return v
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
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("-log-format must be text or json, not %q", l.format)
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
	switch f.store {
	case "":
		if f.databaseURL != "" {
			return "postgres", f.databaseURL, nil
		}
		return "memory", "", nil
	case "memory":
		return "memory", "", nil
	case "postgres":
		if f.databaseURL == "" {
			return "", "", fmt.Errorf("-store postgres needs %s (or DATABASE_URL): a connection string for the switchyard_app role", envDatabaseURL)
		}
		return "postgres", f.databaseURL, nil
	default:
		return "", "", fmt.Errorf("-store must be memory or postgres, not %q", f.store)
	}
}

// Security settings. Tokens and the orchestrator's own token come from the
// environment only: flags would show them in the process list.
const (
	envTokens         = "SWITCHYARD_TOKENS"
	envTokensFile     = "SWITCHYARD_TOKENS_FILE"
	envInsecureNoAuth = "SWITCHYARD_INSECURE_NO_AUTH"
	envServiceToken   = "SWITCHYARD_ORCHESTRATOR_TOKEN"
	envTLSCert        = "SWITCHYARD_TLS_CERT_FILE"
	envTLSKey         = "SWITCHYARD_TLS_KEY_FILE"
	envTLSCA          = "SWITCHYARD_TLS_CA_FILE"
)

type securityFlags struct {
	tokens, tokensFile string
	insecureNoAuth     bool
	tls                tlsconfig.Files
}

func (f *securityFlags) register(fs *flag.FlagSet) {
	f.tokens = env(envTokens, "")
	fs.StringVar(&f.tokensFile, "tokens-file", env(envTokensFile, ""), "file of '<sha256 hex of token> <admin|orchestrator|org:ID>' lines ("+envTokensFile+"; or the table itself in "+envTokens+")")
	fs.BoolVar(&f.insecureNoAuth, "insecure-no-auth", envBool(envInsecureNoAuth, false), "serve without authentication: any caller may act for any organization; local experiments only ("+envInsecureNoAuth+")")
	fs.StringVar(&f.tls.CertFile, "tls-cert-file", env(envTLSCert, ""), "this process's TLS certificate (PEM); with the key and CA files enables mutual TLS ("+envTLSCert+")")
	fs.StringVar(&f.tls.KeyFile, "tls-key-file", env(envTLSKey, ""), "this process's TLS private key (PEM) ("+envTLSKey+")")
	fs.StringVar(&f.tls.CAFile, "tls-ca-file", env(envTLSCA, ""), "the CA that signs every service's and client's certificate ("+envTLSCA+")")
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
	return security{tokens: tokens, serverTLS: server, clientTLS: client}, nil
}
