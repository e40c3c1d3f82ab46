package tlsconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Identity is one certificate to issue: Name is its file name (Name.pem,
// Name-key.pem) and common name; Hosts are the DNS names and IP addresses
// it is valid for, beside localhost, 127.0.0.1 and ::1, which every
// certificate carries so health checks and local clients verify it too.
type Identity struct {
	Name  string
	Hosts []string
}

// The CA's files in a directory written by IssueDevelopment.
const (
	CAFileName    = "ca.pem"
	CAKeyFileName = "ca-key.pem"
)

// IssueDevelopment writes a development PKI into dir: a CA (ca.pem,
// ca-key.pem) and, for each identity, a certificate and key signed by it
// that serve both as a server's and as a client's, as mutual TLS between
// the services needs. Files that exist are kept: an existing CA signs the
// new certificates, and an existing certificate is not reissued, so the
// command can be run again to add an identity. Keys are written 0600,
// certificates 0644, each through a temporary file and a rename. It
// returns the files it wrote.
//
// The CA is for one deployment's development or test: anyone holding
// ca-key.pem can issue certificates every service trusts. Production
// certificates come from the platform's own CA.
func IssueDevelopment(dir string, ids []Identity, validity time.Duration, now time.Time) ([]string, error) {
	if validity <= 0 {
		return nil, errors.New("the validity must be positive")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	var written []string
	caCert, caKey, fresh, err := loadOrCreateCA(dir, validity, now)
	if err != nil {
		return nil, err
	}
	if fresh {
		written = append(written, filepath.Join(dir, CAFileName), filepath.Join(dir, CAKeyFileName))
	}
	for _, id := range ids {
		if id.Name == "" || filepath.Base(id.Name) != id.Name || id.Name == "ca" {
			return written, fmt.Errorf("%q is not a usable certificate name: use a plain name such as accountpool", id.Name)
		}
		certPath, keyPath := filepath.Join(dir, id.Name+".pem"), filepath.Join(dir, id.Name+"-key.pem")
		if exists(certPath) || exists(keyPath) {
			continue
		}
		certPEM, keyPEM, err := issue(caCert, caKey, id, validity, now)
		if err != nil {
			return written, err
		}
		if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return written, err
		}
		if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
			return written, err
		}
		written = append(written, certPath, keyPath)
	}
	return written, nil
}

func loadOrCreateCA(dir string, validity time.Duration, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, bool, error) {
	certPath, keyPath := filepath.Join(dir, CAFileName), filepath.Join(dir, CAKeyFileName)
	switch c, k := exists(certPath), exists(keyPath); {
	case c && k:
		cert, key, err := loadCA(certPath, keyPath)
		return cert, key, false, err
	case c || k:
		return nil, nil, false, fmt.Errorf("%s holds only one of %s and %s: remove it to start over", dir, CAFileName, CAKeyFileName)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Switchyard development CA", Organization: []string{"Switchyard"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, false, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, false, err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, false, err
	}
	if err := writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, false, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, true, err
}

func loadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tlsLoadPair(certPath, keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the existing CA: %w", err)
	}
	key, ok := pair.key.(*ecdsa.PrivateKey)
	if !ok || !pair.cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA this command made (an ECDSA CA certificate and key)", certPath)
	}
	return pair.cert, key, nil
}

func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, id Identity, validity time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: id.Name, Organization: []string{"Switchyard"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	seen := map[string]bool{}
	for _, h := range append(append([]string{}, id.Hosts...), "localhost", "127.0.0.1", "::1") {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// serial is a random 127-bit serial number, as RFC 5280 recommends (and
// positive, as it requires). crypto/rand's Reader does not fail.
func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

type keyPair struct {
	cert *x509.Certificate
	key  crypto.PrivateKey
}

func tlsLoadPair(certPath, keyPath string) (keyPair, error) {
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return keyPair{}, err
	}
	leaf := kp.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(kp.Certificate[0]); err != nil {
			return keyPair{}, err
		}
	}
	return keyPair{cert: leaf, key: kp.PrivateKey}, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
