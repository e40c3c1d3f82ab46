package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// runHealth checks one server and returns nil only when it is serving: a
// health check for images without a shell (distroless), e.g.
// ["CMD", "/switchyard", "health", "-addr", "127.0.0.1:50051"].
//
// With -addr it asks the gRPC health service (grpc.health.v1.Health/Check),
// which needs no token; with -http it GETs the URL and wants a 2xx answer
// (the simulator's /healthz). The TLS files default to the service's own
// SWITCHYARD_TLS_* variables, so in a container running with mutual TLS the
// check presents the service's certificate.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("health", `Checks that a server is serving, for container health checks: exits 0 when it is,
1 otherwise (not serving, unreachable, or no answer within -timeout).
  -addr host:port   ask the gRPC health service (grpc.health.v1; no token needed)
  -http URL         GET the URL and want a 2xx answer (e.g. the simulator's http://127.0.0.1:50080/healthz)`, stderr)
	var addr, httpURL, service, serverName string
	var timeout time.Duration
	var files tlsconfig.Files
	fs.StringVar(&addr, "addr", "", "gRPC address of the server to check, host:port")
	fs.StringVar(&httpURL, "http", "", "HTTP URL to GET instead of a gRPC check")
	fs.StringVar(&service, "service", "", "gRPC service to ask about; empty means the whole server")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "how long the check may take")
	fs.StringVar(&files.CertFile, "tls-cert-file", env(envTLSCert, ""), "client certificate (PEM) for a server with mutual TLS ("+envTLSCert+")")
	fs.StringVar(&files.KeyFile, "tls-key-file", env(envTLSKey, ""), "its private key (PEM) ("+envTLSKey+")")
	fs.StringVar(&files.CAFile, "tls-ca-file", env(envTLSCA, ""), "the CA that signed the server's certificate ("+envTLSCA+")")
	fs.StringVar(&serverName, "tls-server-name", "", "name to verify in the server's certificate; default the host of -addr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("health takes no arguments, got %q", fs.Args())
	}
	if (addr == "") == (httpURL == "") {
		return errors.New("health needs exactly one of -addr host:port or -http URL")
	}
	if timeout <= 0 {
		return errors.New("-timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if httpURL != "" {
		return checkHTTP(ctx, httpURL, stdout)
	}
	creds := insecure.NewCredentials()
	if files.Enabled() {
		cfg, err := tlsconfig.Client(files, serverName)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(cfg)
	}
	return checkGRPC(ctx, addr, service, creds, stdout)
}

func checkGRPC(ctx context.Context, addr, service string, creds credentials.TransportCredentials, stdout io.Writer) error {
	// passthrough: the address is dialed as given, without a resolver.
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer conn.Close()
	// WaitForReady: a server still starting has the whole timeout to accept
	// the connection, rather than failing at the first refused dial.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("health of %s: %w", describe(addr, service), err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%s is %s", describe(addr, service), st)
	}
	fmt.Fprintf(stdout, "%s is SERVING\n", describe(addr, service))
	return nil
}

func describe(addr, service string) string {
	if service == "" {
		return addr
	}
	return fmt.Sprintf("%s (service %s)", addr, service)
}

func checkHTTP(ctx context.Context, url string, stdout io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("-http: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health of %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	fmt.Fprintf(stdout, "%s answered %s\n", url, resp.Status)
	return nil
}
