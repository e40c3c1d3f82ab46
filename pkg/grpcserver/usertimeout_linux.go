package grpcserver

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setTCPUserTimeout sets TCP_USER_TIMEOUT on an accepted connection: how
// long sent data may stay unacknowledged before the kernel drops the
// connection. grpc-go sets it itself from the keepalive timeout, but only
// on a *net.TCPConn, and the connection counter wraps what it accepts, so
// the listener sets it instead. Best effort, as a connection without it
// is still bounded by keepalive.
func setTCPUserTimeout(c net.Conn, timeout time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout/time.Millisecond))
	})
}
