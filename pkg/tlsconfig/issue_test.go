package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func files(dir, name string) Files {
	return Files{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), CAFile: filepath.Join(dir, CAFileName)}
}

// handshake runs a mutual-TLS handshake between a server with the server
// identity's files and a client with the client's, verifying serverName.
func handshake(t *testing.T, server, client Files, serverName string) error {
	t.Helper()
	scfg, err := Server(server)
	require.NoError(t, err)
	ccfg, err := Client(client, serverName)
	require.NoError(t, err)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	require.NoError(t, err)
	defer lis.Close()
	served := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		served <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), ccfg)
	if err == nil {
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() || err == io.EOF {
			err = nil
		}
		_ = c.Close()
	}
	if serr := <-served; err == nil {
		err = serr
	}
	return err
}

func TestIssuedCertificatesDoMutualTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	written, err := IssueDevelopment(dir, []Identity{{Name: "accountpool", Hosts: []string{"accountpool-1", "accountpool-2", "10.1.2.3"}}, {Name: "client"}}, 24*time.Hour, now)
	require.NoError(t, err)
	require.Len(t, written, 6)
	for _, key := range []string{CAKeyFileName, "accountpool-key.pem", "client-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, key))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), key)
	}

	for _, name := range []string{"accountpool-1", "accountpool-2", "localhost", "127.0.0.1", "10.1.2.3"} {
		require.NoError(t, handshake(t, files(dir, "accountpool"), files(dir, "client"), name), name)
	}
	require.Error(t, handshake(t, files(dir, "accountpool"), files(dir, "client"), "activity"), "a name the certificate does not carry")

	// A second run keeps every file and adds the new identity under the same CA.
	before, err := os.ReadFile(filepath.Join(dir, "accountpool.pem"))
	require.NoError(t, err)
	written, err = IssueDevelopment(dir, []Identity{{Name: "accountpool"}, {Name: "activity", Hosts: []string{"activity"}}}, 24*time.Hour, now)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "activity.pem"), filepath.Join(dir, "activity-key.pem")}, written)
	after, err := os.ReadFile(filepath.Join(dir, "accountpool.pem"))
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.NoError(t, handshake(t, files(dir, "activity"), files(dir, "accountpool"), "activity"))

	// A certificate from another CA is refused both ways.
	other := t.TempDir()
	_, err = IssueDevelopment(other, []Identity{{Name: "client"}}, time.Hour, now)
	require.NoError(t, err)
	stranger := files(other, "client")
	stranger.CAFile = filepath.Join(dir, CAFileName)
	require.Error(t, handshake(t, files(dir, "accountpool"), stranger, "localhost"))

	pem, err := os.ReadFile(filepath.Join(dir, "accountpool.pem"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
}

func TestIssueRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "../x", "a/b", "ca"} {
		_, err := IssueDevelopment(t.TempDir(), []Identity{{Name: name}}, time.Hour, time.Now())
		require.Error(t, err, name)
	}
}
