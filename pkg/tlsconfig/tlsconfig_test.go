package tlsconfig_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/switchyard-dev/switchyard/pkg/grpcclient"
	"github.com/switchyard-dev/switchyard/pkg/grpcserver"
	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// pki writes a CA and certificates it signs into a temporary directory.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{dir: t.TempDir(), caCert: cert, caKey: key}
	writePEM(t, filepath.Join(p.dir, "ca.pem"), "CERTIFICATE", der)
	return p
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
}

// issue writes name.pem and name-key.pem, valid for 127.0.0.1.
func (p *pki) issue(t *testing.T, name string) tlsconfig.Files {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	f := tlsconfig.Files{CertFile: filepath.Join(p.dir, name+".pem"), KeyFile: filepath.Join(p.dir, name+"-key.pem"), CAFile: filepath.Join(p.dir, "ca.pem")}
	writePEM(t, f.CertFile, "CERTIFICATE", der)
	writePEM(t, f.KeyFile, "EC PRIVATE KEY", keyDER)
	return f
}

func startServer(t *testing.T, files tlsconfig.Files) string {
	t.Helper()
	serverTLS, err := tlsconfig.Server(files)
	require.NoError(t, err)
	require.Equal(t, uint16(tls.VersionTLS13), serverTLS.MinVersion)
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Name: "mtls", TLS: serverTLS,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(grpc.ServiceRegistrar) {})
	require.NoError(t, err)
	srv.SetServing(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.Addr().String()
}

func check(t *testing.T, addr string, clientTLS *tls.Config) error {
	t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Target: addr, TLS: clientTLS})
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestMutualTLS(t *testing.T) {
	ca := newPKI(t, "switchyard-ca")
	addr := startServer(t, ca.issue(t, "accountpool"))

	good, err := tlsconfig.Client(ca.issue(t, "orchestrator"), "")
	require.NoError(t, err)
	require.NoError(t, check(t, addr, good), "a client with a certificate from the CA is served")

	noCert := good.Clone()
	noCert.Certificates = nil
	require.Error(t, check(t, addr, noCert), "a client without a certificate is refused")

	other := newPKI(t, "someone-else")
	foreign, err := tlsconfig.Client(other.issue(t, "intruder"), "")
	require.NoError(t, err)
	foreign.RootCAs = good.RootCAs // trusts our server, but its own certificate is from another CA
	require.Error(t, check(t, addr, foreign), "a client certificate from another CA is refused")

	require.Error(t, check(t, addr, nil), "a plaintext client is refused")
}

func TestIncompleteFilesAreAnError(t *testing.T) {
	_, err := tlsconfig.Server(tlsconfig.Files{CertFile: "x.pem"})
	require.Error(t, err)
	require.True(t, tlsconfig.Files{CAFile: "ca.pem"}.Enabled())
	require.False(t, tlsconfig.Files{}.Enabled())
}
