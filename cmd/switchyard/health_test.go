package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// healthServer serves the gRPC health service on 127.0.0.1:0.
func healthServer(t *testing.T, opts ...grpc.ServerOption) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), hs
}

func health1(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"health"}, args...), &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestHealthGRPC(t *testing.T) {
	for _, v := range []string{envTLSCert, envTLSKey, envTLSCA} {
		t.Setenv(v, "")
	}
	addr, hs := healthServer(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("switchyard.activity.v1.ActivityService", healthpb.HealthCheckResponse_NOT_SERVING)

	out, err := health1("-addr", addr)
	require.NoError(t, err)
	require.Contains(t, out, "SERVING")

	_, err = health1("-addr", addr, "-service", "switchyard.activity.v1.ActivityService")
	require.ErrorContains(t, err, "NOT_SERVING")
	_, err = health1("-addr", addr, "-service", "no.such.Service")
	require.ErrorContains(t, err, "NotFound")

	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	_, err = health1("-addr", addr)
	require.ErrorContains(t, err, "NOT_SERVING")

	// Nothing listening: fails within the timeout.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := lis.Addr().String()
	require.NoError(t, lis.Close())
	start := time.Now()
	_, err = health1("-addr", closed, "-timeout", "300ms")
	require.Error(t, err)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestHealthUsage(t *testing.T) {
	_, err := health1()
	require.ErrorContains(t, err, "exactly one of")
	_, err = health1("-addr", "127.0.0.1:1", "-http", "http://127.0.0.1:1/")
	require.ErrorContains(t, err, "exactly one of")
	_, err = health1("-addr", "127.0.0.1:1", "extra")
	require.ErrorContains(t, err, "no arguments")
}

func TestHealthHTTP(t *testing.T) {
	code := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }))
	t.Cleanup(srv.Close)
	_, err := health1("-http", srv.URL+"/healthz")
	require.NoError(t, err)
	code = http.StatusServiceUnavailable
	_, err = health1("-http", srv.URL+"/healthz")
	require.ErrorContains(t, err, "503")
}

// The TLS files default to the service's SWITCHYARD_TLS_* variables, so a
// health check in a container running mutual TLS needs no flags for them.
func TestHealthMutualTLS(t *testing.T) {
	dir := t.TempDir()
	writeTestPKI(t, dir)
	files := tlsconfig.Files{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), CAFile: filepath.Join(dir, "ca.pem")}
	serverTLS, err := tlsconfig.Server(files)
	require.NoError(t, err)
	addr, hs := healthServer(t, grpc.Creds(credentials.NewTLS(serverTLS)))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	for _, v := range []string{envTLSCert, envTLSKey, envTLSCA} {
		t.Setenv(v, "")
	}
	_, err = health1("-addr", addr, "-timeout", "2s")
	require.Error(t, err, "a plaintext check of a TLS server fails")

	t.Setenv(envTLSCert, files.CertFile)
	t.Setenv(envTLSKey, files.KeyFile)
	t.Setenv(envTLSCA, files.CAFile)
	out, err := health1("-addr", addr)
	require.NoError(t, err)
	require.Contains(t, out, "SERVING")
}

// writeTestPKI writes a CA (ca.pem) and a certificate it signs for
// 127.0.0.1, usable by server and client alike (cert.pem, key.pem), with
// what `switchyard certs` uses.
func writeTestPKI(t *testing.T, dir string) {
	t.Helper()
	_, err := tlsconfig.IssueDevelopment(dir, []tlsconfig.Identity{{Name: "cert"}}, time.Hour, time.Now())
	require.NoError(t, err)
	require.NoError(t, os.Rename(filepath.Join(dir, "cert-key.pem"), filepath.Join(dir, "key.pem")))
}
