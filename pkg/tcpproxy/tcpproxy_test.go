package tcpproxy_test

import (
	"bufio"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchyard-dev/switchyard/pkg/tcpproxy"
)

// echo serves lines back to the sender.
func echo(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					_, _ = c.Write(append(sc.Bytes(), '\n'))
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestDownCutsAndRefusesUpRestores(t *testing.T) {
	p, err := tcpproxy.New(echo(t))
	require.NoError(t, err)
	t.Cleanup(p.Close)

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, "hello")
	require.NoError(t, err)
	require.Equal(t, "hello\n", got)

	p.Down()
	_, err = roundTrip(c, "cut")
	require.Error(t, err, "an open connection is cut")
	refused, err := net.Dial("tcp", p.Addr())
	if err == nil { // accepted by the kernel, then reset by the proxy
		defer refused.Close()
		_, err = roundTrip(refused, "refused")
	}
	require.Error(t, err, "a new one is refused")

	p.Up()
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	got, err = roundTrip(c2, "back")
	require.NoError(t, err)
	require.Equal(t, "back\n", got)
}
