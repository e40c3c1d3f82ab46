package grpcserver

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The listener sets the TCP_USER_TIMEOUT that grpc-go skips on a wrapped
// connection: a peer that stops acknowledging is dropped by the kernel
// after the keepalive timeout.
func TestAcceptedConnectionsHaveTheKeepaliveUserTimeout(t *testing.T) {
	limits := Limits{KeepaliveTimeout: 7 * time.Second}.withDefaults()
	require.Equal(t, 7*time.Second, limits.tcpUserTimeout())
	require.Zero(t, Limits{KeepaliveTime: -1}.withDefaults().tcpUserTimeout(), "no keepalive, no user timeout")

	srv, err := New(Config{Addr: "127.0.0.1:0", Name: "user-timeout", Logger: slog.New(slog.DiscardHandler), Limits: Limits{KeepaliveTimeout: 7 * time.Second}},
		func(grpc.ServiceRegistrar) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.lis.Close() })
	require.Equal(t, 7*time.Second, srv.lis.(*limitListener).userTimeout, "New gives the listener the keepalive timeout")

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lis := &limitListener{Listener: tcp, max: 10, userTimeout: limits.tcpUserTimeout()}
	t.Cleanup(func() { _ = lis.Close() })

	client, err := net.Dial("tcp", tcp.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	c, err := lis.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	raw, err := c.(*countedConn).Conn.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var got int
	var sockErr error
	require.NoError(t, raw.Control(func(fd uintptr) {
		got, sockErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}))
	require.NoError(t, sockErr)
	require.Equal(t, 7000, got, "milliseconds")
}
