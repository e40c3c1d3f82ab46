// Package tlsconfig builds the TLS configurations for mutual TLS between
// Switchyard services: TLS 1.3 only, every peer presents a certificate
// signed by the deployment's CA, and every peer verifies the other's.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Files names the PEM files of one process: its certificate and key, and
// the CA that signs every peer's certificate.
type Files struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// Enabled reports whether any file is set; then all three must be.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

func (f Files) load() (tls.Certificate, *x509.CertPool, error) {
	if f.CertFile == "" || f.KeyFile == "" || f.CAFile == "" {
		return tls.Certificate{}, nil, errors.New("mutual TLS needs a certificate, its key and the CA file")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("loading the TLS certificate and key: %w", err)
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("the CA file %s holds no PEM certificate", f.CAFile)
	}
	return cert, pool, nil
}

// Server returns a server configuration that requires and verifies client
// certificates.
func Server(f Files) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// Client returns a client configuration that presents the certificate and
// verifies the server's against the CA. serverName overrides the name
// checked in the server's certificate (empty: the dialed host).
func Client(f Files, serverName string) (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}
