package deploy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	accountpoolv1 "github.com/switchyard-dev/switchyard/gen/switchyard/accountpool/v1"
	"github.com/switchyard-dev/switchyard/pkg/auth"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

func needGenSecrets(t *testing.T) {
	t.Helper()
	for _, cmd := range []string{"sh", "openssl", "cut", "tr"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("deploy/gen-secrets.sh needs %s", cmd)
		}
	}
	_, errSum := exec.LookPath("sha256sum")
	_, errShasum := exec.LookPath("shasum")
	if errSum != nil && errShasum != nil {
		t.Skip("deploy/gen-secrets.sh needs sha256sum or shasum")
	}
}

// genSecrets runs deploy/gen-secrets.sh, with dir as its argument when it
// is not empty.
func genSecrets(t *testing.T, script, dir string) string {
	t.Helper()
	args := []string{script}
	if dir != "" {
		args = append(args, dir)
	}
	cmd := exec.Command("sh", args...)
	// The certificates come from `switchyard certs`, as the script finds it.
	cmd.Env = append(os.Environ(), "SWITCHYARD="+switchyardBinary(t))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Run(), out.String())
	return out.String()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// secretFiles are the files deploy/gen-secrets.sh writes.
var secretFiles = []string{"keyring", "tokens", "orchestrator-token", "anthropic-api-key", "client.env", "postgres-password", "pgpass-owner", "pgpass-app", "sim-control-token",
	"ca.pem", "ca-key.pem", "orchestrator.pem", "orchestrator-key.pem", "accountpool.pem", "accountpool-key.pem", "activity.pem", "activity-key.pem", "client.pem", "client-key.pem"}

// tokenTable maps each hash of a token table to its principal.
func tokenTable(t *testing.T, spec string) map[string]string {
	t.Helper()
	_, err := auth.ParseTokens(spec)
	require.NoError(t, err, "the services accept the token table")
	table := map[string]string{}
	for _, line := range strings.Split(spec, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			table[f[0]] = f[1]
		}
	}
	return table
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, name := range secretFiles {
		files[name] = readFile(t, filepath.Join(dir, name))
	}
	return files
}

func TestGenSecrets(t *testing.T) {
	needGenSecrets(t)
	script := filepath.Join(root, "deploy", "gen-secrets.sh")
	dir := filepath.Join(t.TempDir(), "secrets")
	genSecrets(t, script, dir)

	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "only the owner may enter the secrets directory")
	for _, name := range secretFiles {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		// Compose bind-mounts the file as it is; the services run as uid
		// 65532 and must be able to read it. The CA's key is never mounted.
		want := os.FileMode(0o644)
		if name == "ca-key.pem" {
			want = 0o600
		}
		require.Equal(t, want, info.Mode().Perm(), name)
	}

	table := tokenTable(t, readFile(t, filepath.Join(dir, "tokens")))
	require.Len(t, table, 3)
	orch := strings.TrimSpace(readFile(t, filepath.Join(dir, "orchestrator-token")))
	require.Equal(t, "orchestrator", table[auth.HashToken(orch)])
	// The env file is read with compose's own parser.
	client, err := dotenv.Read(filepath.Join(dir, "client.env"))
	require.NoError(t, err)
	require.Equal(t, "admin", table[auth.HashToken(client["TOKEN"])])
	require.Equal(t, "org:acme", table[auth.HashToken(client["ACME_TOKEN"])])

	keyring := strings.TrimSpace(readFile(t, filepath.Join(dir, "keyring")))
	require.Regexp(t, `^1:[A-Za-z0-9+/=]+$`, keyring)
	kek, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(keyring, "1:"))
	require.NoError(t, err)
	require.Len(t, kek, 32)

	owner := strings.TrimSpace(readFile(t, filepath.Join(dir, "postgres-password")))
	require.Regexp(t, `^[0-9a-f]{48}$`, owner)
	require.Equal(t, "*:*:*:postgres:"+owner, strings.TrimSpace(readFile(t, filepath.Join(dir, "pgpass-owner"))))
	app := strings.TrimSpace(readFile(t, filepath.Join(dir, "pgpass-app")))
	require.Regexp(t, `^\*:\*:\*:switchyard_app:[0-9a-f]{48}$`, app)
	require.NotContains(t, app, owner)

	// Running it again changes nothing: a new keyring could not decrypt
	// the stored keys, a new owner password would not match the volume.
	before := snapshot(t, dir)
	out := genSecrets(t, script, dir)
	require.Contains(t, out, "keeping")
	require.Equal(t, before, snapshot(t, dir))

	// Half a token set is refused rather than completed with tokens that
	// do not match the table.
	require.NoError(t, os.Remove(filepath.Join(dir, "client.env")))
	cmd := exec.Command("sh", script, dir)
	b, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(b), "remove them all")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// start runs the binary with exactly env (plus PATH and HOME) and stops it
// when the test ends.
func start(t *testing.T, bin string, env []string, args ...string) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", args[0], out.String())
		}
	})
	return &out
}

// health runs the health command as the compose health checks do.
// env is added to PATH, as the container's variables are.
func health(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"health", "-timeout", "20s"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "switchyard health %v: %s", args, b)
}

// The generated secrets are what the services accept: the binary the
// Dockerfile builds starts on them (on the in-memory store, as no
// PostgreSQL is needed for this), its health command reports SERVING as the
// compose health checks ask, and the generated tokens authenticate.
func TestGeneratedSecretsStartTheServices(t *testing.T) {
	needGenSecrets(t)
	bin := switchyardBinary(t)
	dir := filepath.Join(t.TempDir(), "secrets")
	genSecrets(t, filepath.Join(root, "deploy", "gen-secrets.sh"), dir)

	// Mutual TLS with the generated certificates, as docker-compose.yml
	// configures each service.
	tlsEnv := func(name string) []string {
		return []string{
			"SWITCHYARD_TLS_CERT_FILE=" + filepath.Join(dir, name+".pem"),
			"SWITCHYARD_TLS_KEY_FILE=" + filepath.Join(dir, name+"-key.pem"),
			"SWITCHYARD_TLS_CA_FILE=" + filepath.Join(dir, "ca.pem"),
		}
	}
	poolAddr, orchAddr, simAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, bin, append([]string{
		"SWITCHYARD_ACCOUNTPOOL_ADDR=" + poolAddr,
		"SWITCHYARD_KEYRING_FILE=" + filepath.Join(dir, "keyring"),
		"SWITCHYARD_TOKENS_FILE=" + filepath.Join(dir, "tokens"),
	}, tlsEnv("accountpool")...), "accountpool")
	env := []string{
		"SWITCHYARD_ORCHESTRATOR_ADDR=" + orchAddr,
		"SWITCHYARD_ACCOUNTPOOL_ADDR=" + poolAddr,
		"SWITCHYARD_ACTIVITY_ADDR=" + freeAddr(t),
		"SWITCHYARD_ANTHROPIC_BASE_URL=http://" + simAddr,
		"SWITCHYARD_TOKENS_FILE=" + filepath.Join(dir, "tokens"),
		"SWITCHYARD_ORCHESTRATOR_TOKEN_FILE=" + filepath.Join(dir, "orchestrator-token"),
	}
	start(t, bin, append(env, tlsEnv("orchestrator")...), "orchestrator")
	start(t, bin, []string{"SWITCHYARD_SIM_ADDR=" + simAddr}, "sim")

	client := tlsEnv("client")
	health(t, bin, client, "-addr", poolAddr)
	health(t, bin, client, "-addr", orchAddr)
	health(t, bin, nil, "-http", "http://"+simAddr+"/healthz")

	tokens, err := dotenv.Read(filepath.Join(dir, "client.env"))
	require.NoError(t, err)
	clientTLS, err := tlsconfig.Client(tlsconfig.Files{CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}, "")
	require.NoError(t, err)
	conn, err := grpc.NewClient("passthrough:///"+poolAddr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	pool := accountpoolv1.NewAccountPoolServiceClient(conn)
	call := func(token, org string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		_, err := pool.ListAccounts(ctx, &accountpoolv1.ListAccountsRequest{OrganizationId: org})
		return err
	}
	require.NoError(t, call(tokens["TOKEN"], "acme"), "the admin token")
	require.NoError(t, call(tokens["ACME_TOKEN"], "acme"), "acme's token")
	require.Equal(t, codes.PermissionDenied, status.Code(call(tokens["ACME_TOKEN"], "globex")))
	require.Equal(t, codes.Unauthenticated, status.Code(call("sy_not-a-token", "acme")))
}
