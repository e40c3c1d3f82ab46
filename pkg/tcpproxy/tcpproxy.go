// Package tcpproxy is a TCP forwarder that tests put between a service and
// its database (or any peer) to take the peer away and bring it back, as a
// network partition or a restart of the peer would.
package tcpproxy

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards connections from its address to a target. It is safe for
// concurrent use.
type Proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	lis   net.Listener // nil while down
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// New listens on a free loopback port and forwards to target.
func New(target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, addr: lis.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(lis)
	return p, nil
}

// Addr is the proxy's address ("127.0.0.1:port"); it stays the same across
// Down and Up.
func (p *Proxy) Addr() string { return p.addr }

// Down stops accepting connections (new ones are refused) and cuts every
// open one, both ways.
func (p *Proxy) Down() {
	p.mu.Lock()
	lis := p.lis
	p.lis = nil
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	if lis != nil {
		_ = lis.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
}

// Up accepts connections again on the same address.
func (p *Proxy) Up() error {
	p.mu.Lock()
	up := p.lis != nil
	p.mu.Unlock()
	if up {
		return nil
	}
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.serve(lis)
	return nil
}

// Close takes the proxy down for good and waits for its goroutines.
func (p *Proxy) Close() {
	p.Down()
	p.wg.Wait()
}

func (p *Proxy) serve(lis net.Listener) {
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return // closed by Down
			}
			p.forward(c)
		}
	}()
}

func (p *Proxy) forward(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	if !p.track(client, server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		_, _ = io.Copy(dst, src) // ends when either side closes or Down cuts it
		_ = dst.Close()
		_ = src.Close()
	}
	p.wg.Add(2)
	go pipe(server, client)
	go pipe(client, server)
}

// track records both ends of a forwarded connection so Down can cut them;
// it reports false when the proxy went down meanwhile.
func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis == nil {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}
