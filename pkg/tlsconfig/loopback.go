package tlsconfig

import (
	"net"
	"net/netip"
	"strings"
)

// IsLoopback reports whether host (a name or an IP address, without a
// port) stays on this machine: "localhost", or an address in 127.0.0.0/8
// or ::1. Every other name counts as remote without being resolved, and an
// empty or unspecified host ("", 0.0.0.0, ::) listens on every interface,
// so it is not loopback either. It decides where Switchyard insists on
// TLS: API keys and bearer tokens cross every connection that is not
// loopback, and plaintext there needs an explicit, logged setting.
func IsLoopback(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.IsLoopback()
}

// IsLoopbackAddr is IsLoopback of a "host:port" address's host; an
// address that is not host:port is not loopback.
func IsLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && IsLoopback(host)
}
