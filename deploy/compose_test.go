package deploy_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// commands are the switchyard subcommands whose -h output lists the
// variables they read.
var commands = []string{"dev", "orchestrator", "accountpool", "activity", "sim", "migrate", "keys", "health"}

// envOnly are variables read from the environment without a flag (README,
// "Configuration": "environment only"), so -h need not name them, and the
// commands that read them.
var envOnly = map[string][]string{
	"SWITCHYARD_ORCHESTRATOR_TOKEN":      {"orchestrator", "dev"},
	"SWITCHYARD_ORCHESTRATOR_TOKEN_FILE": {"orchestrator", "dev"},
	"SWITCHYARD_KEYRING":                 {"accountpool", "dev", "keys"},
	"SWITCHYARD_TOKENS":                  {"orchestrator", "accountpool", "activity", "dev"},
	"SWITCHYARD_DATABASE_URL":            {"accountpool", "activity", "dev", "keys"},
}

// pending are variables the compose file sets ahead of the change that
// adds them: allowed while no command's -h names them. Once one does,
// every service that sets them must know them, and the entry can go.
var pending = []string{
	"SWITCHYARD_METRICS_ADDR", // -metrics-addr, Prometheus text at /metrics
}

// noHealthCheck are long-running services without a health check, and why.
var noHealthCheck = map[string]string{
	"jaeger": "its image has no shell or HTTP client to run one with; nothing waits for it to be healthy",
}

// published are the only ports bound on the host, each on loopback.
var published = map[string]uint32{"orchestrator": 50051, "jaeger": 16686, "prometheus": 9090}

// listenVar is the variable with each service command's listen address.
var listenVar = map[string]string{
	"orchestrator": "SWITCHYARD_ORCHESTRATOR_ADDR",
	"accountpool":  "SWITCHYARD_ACCOUNTPOOL_ADDR",
	"activity":     "SWITCHYARD_ACTIVITY_ADDR",
	"sim":          "SWITCHYARD_SIM_ADDR",
}

var switchyardVar = regexp.MustCompile(`SWITCHYARD_[A-Z0-9_]+`)

// knownVariables returns, for each command, the SWITCHYARD_* variables its
// -h output names (whatever -h exits with).
func knownVariables(t *testing.T, bin string) map[string]map[string]bool {
	t.Helper()
	known := map[string]map[string]bool{}
	for _, c := range commands {
		cmd := exec.Command(bin, c, "-h")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, _ := cmd.CombinedOutput()
		set := map[string]bool{}
		for _, v := range switchyardVar.FindAllString(string(out), -1) {
			set[v] = true
		}
		require.NotEmpty(t, set, "switchyard %s -h names no SWITCHYARD_ variable:\n%s", c, out)
		known[c] = set
	}
	for v, cmds := range envOnly {
		for _, c := range cmds {
			known[c][v] = true
		}
	}
	return known
}

// composeProject copies the compose file and what it refers to into a
// temporary project directory, generates the development secrets there
// with deploy/gen-secrets.sh, as the README says to, and loads it.
func composeProject(t *testing.T) (*types.Project, string) {
	t.Helper()
	needGenSecrets(t)
	dir := t.TempDir()
	for _, f := range []string{"docker-compose.yml", "Dockerfile", ".dockerignore", "deploy/gen-secrets.sh", "deploy/prometheus/prometheus.yml"} {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755))
		require.NoError(t, copyFile(filepath.Join(root, f), filepath.Join(dir, f)))
	}
	genSecrets(t, filepath.Join(dir, "deploy", "gen-secrets.sh"), "")
	return loadCompose(t, dir, nil), dir
}

func loadCompose(t *testing.T, dir string, env map[string]string, opts ...func(*loader.Options)) *types.Project {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		Environment: env,
	}, append([]func(*loader.Options){func(o *loader.Options) { o.SetProjectName("switchyard", true) }}, opts...)...)
	require.NoError(t, err)
	return p
}

// isSwitchyard reports whether the service runs the switchyard image.
func isSwitchyard(s types.ServiceConfig) bool { return s.Build != nil }

// oneShots are the services others wait for to complete.
func oneShots(p *types.Project) map[string]bool {
	out := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				out[dep] = true
			}
		}
	}
	return out
}

func env(s types.ServiceConfig, name string) string {
	if v, ok := s.Environment[name]; ok && v != nil {
		return *v
	}
	return ""
}

func port(t *testing.T, hostPort string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostPort)
	require.NoError(t, err, hostPort)
	return p
}

func TestComposeFile(t *testing.T) {
	p, dir := composeProject(t)
	bin := switchyardBinary(t)
	known := knownVariables(t, bin)
	shots := oneShots(p)

	t.Run("one-shots run once", func(t *testing.T) {
		require.NotEmpty(t, shots)
		for name := range shots {
			require.Equal(t, "no", p.Services[name].Restart, "%s must not restart", name)
		}
		require.Contains(t, p.Services["migrate"].Command, "migrate")
	})

	t.Run("every long-running service has a health check", func(t *testing.T) {
		for name, s := range p.Services {
			if shots[name] {
				continue
			}
			if _, ok := noHealthCheck[name]; ok {
				continue
			}
			require.NotNil(t, s.HealthCheck, "%s has no health check", name)
			require.False(t, s.HealthCheck.Disable, name)
			require.NotEmpty(t, s.HealthCheck.Test, name)
		}
	})

	t.Run("switchyard services listen on 0.0.0.0 and check their own port", func(t *testing.T) {
		for name, s := range p.Services {
			if !isSwitchyard(s) || shots[name] {
				continue
			}
			require.Equal(t, "switchyard:dev", s.Image, name)
			require.Len(t, s.Command, 1, "%s: the command only; configuration is in the environment", name)
			lv, ok := listenVar[s.Command[0]]
			require.True(t, ok, "%s runs %q, not a service", name, s.Command[0])
			listen := env(s, lv)
			require.True(t, strings.HasPrefix(listen, "0.0.0.0:"), "%s: %s=%q must listen on 0.0.0.0", name, lv, listen)

			test := s.HealthCheck.Test
			require.Equal(t, []string{"CMD", "/switchyard", "health"}, []string(test[:3]), "%s: the health command of the binary (distroless has no shell)", name)
			switch i := slices.Index(test, "-addr"); {
			case i >= 0:
				require.Equal(t, "127.0.0.1:"+port(t, listen), test[i+1], name)
			default:
				j := slices.Index(test, "-http")
				require.GreaterOrEqual(t, j, 0, "%s: health needs -addr or -http", name)
				u, err := url.Parse(test[j+1])
				require.NoError(t, err)
				require.Equal(t, "127.0.0.1:"+port(t, listen), u.Host, name)
			}
		}
	})

	t.Run("configuration only through the environment", func(t *testing.T) {
		for name, s := range p.Services {
			if !isSwitchyard(s) {
				continue
			}
			require.NotEmpty(t, s.Command, name)
			require.Contains(t, commands, s.Command[0], name)
			for _, arg := range s.Command[1:] {
				require.False(t, strings.HasPrefix(arg, "-"), "%s: flag %s; set the variable instead", name, arg)
			}
		}
	})

	t.Run("gRPC between containers is mutual TLS, never plaintext", func(t *testing.T) {
		for name, s := range p.Services {
			if !isSwitchyard(s) {
				continue
			}
			v, grpcService := listenVar[s.Command[0]]
			if !grpcService || s.Command[0] == "sim" {
				continue
			}
			require.NotEqual(t, "127.0.0.1", strings.Split(env(s, v), ":")[0], "%s listens for other containers", name)
			require.Empty(t, env(s, "SWITCHYARD_INSECURE_PLAINTEXT"), "%s: plaintext would carry tokens and API keys in cleartext", name)
			for _, tv := range []string{"SWITCHYARD_TLS_CERT_FILE", "SWITCHYARD_TLS_KEY_FILE", "SWITCHYARD_TLS_CA_FILE"} {
				require.True(t, strings.HasPrefix(env(s, tv), "/run/secrets/"), "%s: %s is a mounted secret", name, tv)
			}
		}
	})

	t.Run("every SWITCHYARD variable is one the command knows", func(t *testing.T) {
		anyKnows := func(v string) bool {
			for _, set := range known {
				if set[v] {
					return true
				}
			}
			return false
		}
		for name, s := range p.Services {
			for v := range s.Environment {
				if !strings.HasPrefix(v, "SWITCHYARD_") {
					continue
				}
				require.True(t, isSwitchyard(s), "%s sets %s but does not run switchyard", name, v)
				cmd := s.Command[0]
				if slices.Contains(pending, v) && !anyKnows(v) {
					t.Logf("%s: %s is not known to the binary yet (pending)", name, v)
					continue
				}
				require.True(t, known[cmd][v], "%s sets %s, which `switchyard %s` does not read (see `switchyard %s -h`)", name, v, cmd, cmd)
			}
		}
	})

	t.Run("depends_on waits for the right condition", func(t *testing.T) {
		for name, s := range p.Services {
			for dep, d := range s.DependsOn {
				target, ok := p.Services[dep]
				require.True(t, ok, "%s depends on unknown %s", name, dep)
				switch d.Condition {
				case types.ServiceConditionHealthy:
					require.NotNil(t, target.HealthCheck, "%s waits for %s to be healthy, which has no health check", name, dep)
				case types.ServiceConditionCompletedSuccessfully:
					require.True(t, shots[dep])
				case types.ServiceConditionStarted:
				default:
					t.Fatalf("%s depends on %s with condition %q", name, dep, d.Condition)
				}
			}
		}
		// The long-running services need the schema, the role's password
		// and the services they call.
		for _, name := range []string{"accountpool-1", "accountpool-2", "activity"} {
			require.Equal(t, types.ServiceConditionCompletedSuccessfully, p.Services[name].DependsOn["db-app-role"].Condition, name)
		}
		for _, dep := range []string{"accountpool-1", "accountpool-2", "activity", "sim"} {
			require.Equal(t, types.ServiceConditionHealthy, p.Services["orchestrator"].DependsOn[dep].Condition, dep)
		}
	})

	t.Run("the orchestrator reaches every replica", func(t *testing.T) {
		o := p.Services["orchestrator"]
		for v, cmd := range map[string]string{"SWITCHYARD_ACCOUNTPOOL_ADDR": "accountpool", "SWITCHYARD_ACTIVITY_ADDR": "activity"} {
			var want []string
			for name, s := range p.Services {
				if isSwitchyard(s) && len(s.Command) > 0 && s.Command[0] == cmd {
					want = append(want, name+":"+port(t, env(s, listenVar[cmd])))
				}
			}
			got := strings.Split(env(o, v), ",")
			slices.Sort(want)
			slices.Sort(got)
			require.Equal(t, want, got, v)
		}
		require.GreaterOrEqual(t, len(strings.Split(env(o, "SWITCHYARD_ACCOUNTPOOL_ADDR"), ",")), 2, "two AccountPool replicas")
		for name, s := range p.Services {
			if isSwitchyard(s) && len(s.Command) > 0 && s.Command[0] == "accountpool" {
				require.NotEmpty(t, env(s, "SWITCHYARD_REDIS_URL"), "%s: replicas share their live state in Redis", name)
			}
		}
	})

	t.Run("the simulator is the default upstream", func(t *testing.T) {
		o := p.Services["orchestrator"]
		u, err := url.Parse(env(o, "SWITCHYARD_ANTHROPIC_BASE_URL"))
		require.NoError(t, err)
		require.Equal(t, "sim:"+port(t, env(p.Services["sim"], "SWITCHYARD_SIM_ADDR")), u.Host)

		real := loadCompose(t, dir, map[string]string{"SWITCHYARD_ANTHROPIC_BASE_URL": "https://api.anthropic.com", "ANTHROPIC_API_KEY": "sk-ant-from-the-shell"})
		require.Equal(t, "https://api.anthropic.com", env(real.Services["orchestrator"], "SWITCHYARD_ANTHROPIC_BASE_URL"))
		require.Empty(t, env(real.Services["orchestrator"], "ANTHROPIC_API_KEY"), "a key in the shell never reaches the container's environment")
		require.Equal(t, "/run/secrets/anthropic-api-key", env(real.Services["orchestrator"], "ANTHROPIC_API_KEY_FILE"), "legacy mode's key is a secret file")
	})

	t.Run("traces go to a service of the file", func(t *testing.T) {
		for name, s := range p.Services {
			for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
				if e := env(s, v); e != "" {
					u, err := url.Parse(e)
					require.NoError(t, err)
					_, ok := p.Services[u.Hostname()]
					require.True(t, ok, "%s: %s=%s names no service", name, v, e)
				}
			}
			if isSwitchyard(s) && !shots[name] && s.Command[0] != "sim" {
				require.NotEmpty(t, env(s, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), "%s exports traces", name)
			}
		}
	})

	t.Run("only the orchestrator and the UIs are published, on loopback", func(t *testing.T) {
		for name, s := range p.Services {
			want, ok := published[name]
			if !ok {
				require.Empty(t, s.Ports, "%s must not be published", name)
				continue
			}
			require.Len(t, s.Ports, 1, name)
			require.Equal(t, "127.0.0.1", s.Ports[0].HostIP, name)
			require.Equal(t, want, s.Ports[0].Target, name)
		}
	})

	t.Run("Prometheus scrapes every metrics endpoint", func(t *testing.T) {
		want := []string{}
		for name, s := range p.Services {
			if m := env(s, "SWITCHYARD_METRICS_ADDR"); m != "" {
				require.True(t, strings.HasPrefix(m, "0.0.0.0:"), name)
				want = append(want, name+":"+port(t, m))
			}
		}
		require.NotEmpty(t, want)
		var cfg struct {
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				MetricsPath   string `yaml:"metrics_path"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(readFile(t, filepath.Join(root, "deploy", "prometheus", "prometheus.yml"))), &cfg))
		var got []string
		for _, sc := range cfg.ScrapeConfigs {
			if sc.JobName != "switchyard" {
				continue
			}
			require.Contains(t, []string{"", "/metrics"}, sc.MetricsPath)
			for _, st := range sc.StaticConfigs {
				got = append(got, st.Targets...)
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		require.Equal(t, want, got)

		var mounted bool
		for _, v := range p.Services["prometheus"].Volumes {
			mounted = mounted || (v.Target == "/etc/prometheus/prometheus.yml" && v.Source == filepath.Join(dir, "deploy", "prometheus", "prometheus.yml"))
		}
		require.True(t, mounted, "Prometheus gets deploy/prometheus/prometheus.yml")
	})

	t.Run("secrets are files under deploy/secrets that gen-secrets.sh writes", func(t *testing.T) {
		secretsDir := filepath.Join(dir, "deploy", "secrets")
		require.NotEmpty(t, p.Secrets)
		for name, sec := range p.Secrets {
			require.Equal(t, secretsDir, filepath.Dir(sec.File), "secret %s", name)
			require.FileExists(t, sec.File, "secret %s: deploy/gen-secrets.sh does not write it", name)
		}
		for name, s := range p.Services {
			mounted := map[string]bool{}
			for _, ref := range s.Secrets {
				_, ok := p.Secrets[ref.Source]
				require.True(t, ok, "%s uses undeclared secret %s", name, ref.Source)
				mounted["/run/secrets/"+ref.Source] = true
			}
			for _, f := range s.EnvFiles {
				require.Equal(t, secretsDir, filepath.Dir(f.Path), "%s: env_file %s", name, f.Path)
			}
			// A variable naming a file in /run/secrets names one this
			// service mounts.
			for v, val := range s.Environment {
				if val != nil && strings.HasPrefix(*val, "/run/secrets/") {
					require.True(t, mounted[*val], "%s: %s=%s is not mounted", name, v, *val)
				}
			}
		}
		o := p.Services["orchestrator"]
		require.Equal(t, "/run/secrets/orchestrator-token", env(o, "SWITCHYARD_ORCHESTRATOR_TOKEN_FILE"), "the orchestrator reads its token from a secret file")
		require.Empty(t, env(o, "SWITCHYARD_ORCHESTRATOR_TOKEN"), "not from its environment")
	})

	t.Run("no secret value inline", func(t *testing.T) {
		raw, err := loader.LoadModelWithContext(context.Background(), types.ConfigDetails{
			WorkingDir:  dir,
			ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yml")}},
		}, func(o *loader.Options) {
			o.SetProjectName("switchyard", true)
			o.SkipInterpolation = true
			o.SkipResolveEnvironment = true
		})
		require.NoError(t, err)
		secretName := regexp.MustCompile(`(?i)(TOKEN|PASSWORD|SECRET|API_KEY|KEYRING|PASSFILE)`)
		// A value from the operator's environment, at most with a
		// simulator key (not a secret) as its default.
		reference := regexp.MustCompile(`^\$\{[A-Z0-9_]+(:?-sk-ant-sim-[A-Za-z0-9-]*)?\}$`)
		passwordInURL := regexp.MustCompile(`://[^/@:]*:[^/@]*@`)
		services, _ := raw["services"].(map[string]any)
		require.NotEmpty(t, services)
		for name, sv := range services {
			svc, _ := sv.(map[string]any)
			envMap := map[string]string{}
			switch e := svc["environment"].(type) {
			case map[string]any:
				for k, v := range e {
					envMap[k], _ = v.(string)
				}
			case []any:
				for _, kv := range e {
					k, v, _ := strings.Cut(kv.(string), "=")
					envMap[k] = v
				}
			}
			for k, v := range envMap {
				require.NotRegexp(t, passwordInURL, v, "%s: %s has a password in its URL", name, k)
				if !secretName.MatchString(k) {
					continue
				}
				if strings.HasSuffix(k, "_FILE") || k == "PGPASSFILE" {
					require.True(t, strings.HasPrefix(v, "/run/secrets/"), "%s: %s=%s must name a mounted secret", name, k, v)
					continue
				}
				require.Regexp(t, reference, v, "%s: %s is set inline", name, k)
			}
		}
		// And none of the generated values appears in the file.
		compose := readFile(t, filepath.Join(dir, "docker-compose.yml"))
		for _, f := range secretFiles {
			for _, line := range strings.Split(readFile(t, filepath.Join(dir, "deploy", "secrets", f)), "\n") {
				for _, word := range regexp.MustCompile(`[A-Za-z0-9_+/=-]{24,}`).FindAllString(line, -1) {
					require.NotContains(t, compose, word)
				}
			}
		}
	})

	t.Run("the admin-ports override parses", func(t *testing.T) {
		over := filepath.Join(root, "deploy", "compose.admin-ports.yml")
		require.NoError(t, copyFile(over, filepath.Join(dir, "deploy", "compose.admin-ports.yml")))
		merged, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
			WorkingDir: dir,
			ConfigFiles: []types.ConfigFile{
				{Filename: filepath.Join(dir, "docker-compose.yml")},
				{Filename: filepath.Join(dir, "deploy", "compose.admin-ports.yml")},
			},
		}, func(o *loader.Options) { o.SetProjectName("switchyard", true) })
		require.NoError(t, err)
		for name, s := range merged.Services {
			for _, pc := range s.Ports {
				require.Equal(t, "127.0.0.1", pc.HostIP, "%s is published on loopback only", name)
			}
		}
		require.NotEmpty(t, merged.Services["accountpool-1"].Ports)
		require.NotEmpty(t, merged.Services["activity"].Ports)
	})
}
