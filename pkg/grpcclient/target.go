package grpcclient

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/resolver"

	"github.com/switchyard-dev/switchyard/pkg/tlsconfig"
)

// listScheme is the scheme of the resolver Dial gives a connection whose
// target is a comma-separated list. Each connection has its own builder
// (grpc.WithResolvers), so the name never reaches gRPC's global registry.
const listScheme = "switchyard-list"

// target is a Config.Target taken apart.
type target struct {
	// dial is what grpc.NewClient is given.
	dial string
	// list holds the entries of a comma-separated list, served by a
	// listResolver; nil for any other target.
	list []string
}

// loopback reports whether every server the target names is on this
// machine: each host (of a list, a dns or passthrough target) is
// loopback (tlsconfig.IsLoopback), or the target is a Unix socket. A name
// sent to a DNS server of the target's own (dns://server/name) is not
// taken as loopback, whatever the name.
func (t target) loopback() bool {
	if t.list != nil {
		for _, hp := range t.list {
			if !tlsconfig.IsLoopbackAddr(hp) {
				return false
			}
		}
		return true
	}
	u, err := url.Parse(t.dial)
	if err != nil || u.Scheme == "" || resolver.Get(u.Scheme) == nil {
		return tlsconfig.IsLoopbackAddr(t.dial)
	}
	switch u.Scheme {
	case "unix", "unix-abstract":
		return true
	case "dns", "passthrough":
		endpoint := u.Path
		if endpoint == "" {
			endpoint = u.Opaque
		}
		endpoint = strings.TrimPrefix(endpoint, "/")
		if u.Scheme == "dns" && u.Host != "" && !isIPLiteral(endpoint) {
			// The name is resolved by the DNS server the authority names,
			// which may answer "localhost" with any address.
			return false
		}
		return tlsconfig.IsLoopbackAddr(endpoint)
	default:
		return false
	}
}

// isIPLiteral reports whether hostport's host is an IP address, which no
// resolver can map elsewhere.
func isIPLiteral(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	return net.ParseIP(strings.Trim(host, "[]")) != nil
}

// CheckTarget reports whether Dial accepts s as a target, and if not why,
// in words a start-up error can quote after the name of the setting.
// Dial accepts:
//
//   - "host:port": one server, resolved by gRPC's dns resolver, which
//     may find several addresses (a headless service, say);
//   - "host1:port1,host2:port2,...": one connection to every listed
//     server (spaces around the commas are ignored);
//   - "dns:///host:port" (or "dns://dns-server/host:port"): gRPC's dns
//     resolver, which re-resolves the name as replicas come and go;
//   - a target of another resolver registered with gRPC ("unix:///path",
//     "passthrough:///host:port"), as it is.
//
// Hosts may be names, IPv4 or bracketed IPv6 addresses, or empty (":50052",
// the local system, as net.Dial has it); ports are numbers from 1 to 65535.
func CheckTarget(s string) error {
	_, err := parseTarget(s)
	return err
}

func parseTarget(s string) (target, error) {
	if strings.TrimSpace(s) == "" {
		return target{}, errors.New("no address given: want host:port, a comma-separated list of host:port, or dns:///host:port")
	}
	if strings.Contains(s, ",") {
		return parseList(s)
	}
	if scheme, ok := registeredScheme(s); ok {
		if scheme == "dns" {
			if err := checkDNS(s); err != nil {
				return target{}, err
			}
		}
		return target{dial: s}, nil
	}
	hp := strings.TrimSpace(s)
	if err := checkHostPort(hp); err != nil {
		return target{}, err
	}
	return target{dial: hp}, nil
}

// parseList checks every entry of a comma-separated list.
func parseList(s string) (target, error) {
	entries := strings.Split(s, ",")
	seen := make(map[string]bool, len(entries))
	list := make([]string, 0, len(entries))
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			return target{}, fmt.Errorf("entry %d of %q is empty (a doubled, leading or trailing comma?)", i+1, s)
		}
		if strings.Contains(e, "://") {
			return target{}, fmt.Errorf("entry %d, %q: a list takes host:port entries only; give a dns:/// target on its own", i+1, e)
		}
		if err := checkHostPort(e); err != nil {
			return target{}, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if seen[e] {
			return target{}, fmt.Errorf("%q is listed twice", e)
		}
		seen[e] = true
		list = append(list, e)
	}
	return target{dial: listScheme + ":///" + strings.Join(list, ","), list: list}, nil
}

// registeredScheme returns the scheme of s when s is a URL whose scheme
// names a resolver registered with gRPC. As in grpc.NewClient,
// "localhost:50052" is no such URL: "localhost" is not a resolver.
func registeredScheme(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || resolver.Get(u.Scheme) == nil {
		return "", false
	}
	return u.Scheme, true
}

// checkDNS checks the endpoint of a dns target ("dns:///host:port").
func checkDNS(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a dns target: %w", s, err)
	}
	endpoint := u.Path
	if endpoint == "" {
		endpoint = u.Opaque
	}
	endpoint = strings.TrimPrefix(endpoint, "/")
	if endpoint == "" {
		return fmt.Errorf("%q names no host: want dns:///host:port", s)
	}
	if err := checkHostPort(endpoint); err != nil {
		return fmt.Errorf("%q: %w (want dns:///host:port)", s, err)
	}
	return nil
}

// checkHostPort checks one host:port.
func checkHostPort(hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q is not host:port: %s", hp, ae.Err)
		}
		return fmt.Errorf("%q is not host:port: %w", hp, err)
	}
	if strings.ContainsAny(host, " \t/\\@?#") {
		return fmt.Errorf("%q is not host:port: the host %q is not a name or an IP address", hp, host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q is not host:port: the port %q is not a number from 1 to 65535", hp, port)
	}
	return nil
}

// listResolver hands a connection the fixed list of its target: one
// endpoint per entry. An entry that is a host name is resolved by the dialer
// at each connection attempt; a name whose addresses change while the
// process runs is better given as a dns:/// target.
type listResolver struct {
	state resolver.State
}

func newListResolver(list []string) *listResolver {
	eps := make([]resolver.Endpoint, len(list))
	for i, hp := range list {
		// ServerName makes each entry the authority of its own
		// connection (the :authority header and the name TLS verifies),
		// as a single "host:port" target is.
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: hp, ServerName: hp}}}
	}
	return &listResolver{state: resolver.State{Endpoints: eps}}
}

func (r *listResolver) Scheme() string { return listScheme }

// Build hands the list to the connection. It is called again when a
// connection leaves idleness.
func (r *listResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	// The error can only say that the balancer rejected the list, which
	// round_robin does only for an empty one.
	_ = cc.UpdateState(r.state)
	return nopResolver{}, nil
}

// nopResolver is the built listResolver: the list never changes.
type nopResolver struct{}

func (nopResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (nopResolver) Close()                                {}
