package pgtest

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy is a TCP relay in front of a server that a test can take down (every
// connection dropped, new ones refused) and bring back, to prove that callers
// report an outage and recover from it; or silence (every connection kept
// open, nothing relayed: a network that stops answering).
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	down    bool
	silent  chan struct{} // closed while bytes flow; open while silent
	conns   map[net.Conn]struct{}
	refused int
}

// Refused counts the connections refused while down: a test waits on it to
// know that its callers met the outage.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// NewProxy relays to the host:port of dsn and returns the proxy and dsn
// rewritten to go through it.
func NewProxy(t testing.TB, dsn string) (*Proxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: u.Host, ln: ln, conns: map[net.Conn]struct{}{}, silent: make(chan struct{})}
	close(p.silent)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.SetDown(true) })
	u.Host = ln.Addr().String()
	return p, u.String()
}

// SetDown drops every connection and refuses new ones (down) or accepts again.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// SetSilent stops relaying (silent) — connections stay open, and what is
// sent on them waits — or relays again.
func (p *Proxy) SetSilent(silent bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.silent: // flowing
		if silent {
			p.silent = make(chan struct{})
		}
	default:
		if !silent {
			close(p.silent)
		}
	}
}

// flowing waits while the proxy is silent.
func (p *Proxy) flowing() {
	p.mu.Lock()
	gate := p.silent
	p.mu.Unlock()
	<-gate
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.relay(c)
	}
}

func (p *Proxy) relay(client net.Conn) {
	p.mu.Lock()
	if p.down {
		p.refused++
		p.mu.Unlock()
		client.Close()
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		client.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.flowing()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}
