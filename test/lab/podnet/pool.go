package podnet

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// maxIdlePerUpstream bounds the idle connections a sidecar keeps to one
// upstream endpoint; the frontend's serial calls need one. maxIdleTime
// closes those of endpoints no longer picked (a replaced pod), which
// Envoy drops when the endpoint leaves EDS.
const (
	maxIdlePerUpstream = 4
	maxIdleTime        = 2 * time.Minute
)

// upstreamPool keeps a sidecar's mTLS connections to upstream endpoints
// open between requests, as Envoy's HTTP/1.1 connection pools do: a
// request takes an idle connection to its endpoint (same address, SNI and
// peer identity) or opens one, and gives it back when the response was
// read. Envoy closes idle upstream connections only after an hour, so a
// capture that starts later sees TLS application data and no handshake.
type upstreamPool struct {
	mu     sync.Mutex
	idle   map[string][]*upstreamConn
	closed bool
}

// upstreamConn is one pooled connection with its response reader (which
// may hold bytes read ahead).
type upstreamConn struct {
	net.Conn
	br    *bufio.Reader
	key   string
	since time.Time // idle since
}

func newUpstreamPool() *upstreamPool { return &upstreamPool{idle: map[string][]*upstreamConn{}} }

// get takes an idle connection for key, or returns nil. It closes the
// connections idle for longer than maxIdleTime on the way.
func (pl *upstreamPool) get(key string) *upstreamConn {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for k, cs := range pl.idle {
		keep := cs[:0]
		for _, c := range cs {
			if time.Since(c.since) > maxIdleTime {
				_ = c.Close()
				continue
			}
			keep = append(keep, c)
		}
		if len(keep) == 0 {
			delete(pl.idle, k)
		} else {
			pl.idle[k] = keep
		}
	}
	cs := pl.idle[key]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	pl.idle[key] = cs[:len(cs)-1]
	return c
}

// put gives a connection back, or closes it when the pool is closed or
// full.
func (pl *upstreamPool) put(c *upstreamConn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed || len(pl.idle[c.key]) >= maxIdlePerUpstream {
		_ = c.Close()
		return
	}
	c.since = time.Now()
	pl.idle[c.key] = append(pl.idle[c.key], c)
}

// count is the number of idle connections.
func (pl *upstreamPool) count() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := 0
	for _, cs := range pl.idle {
		n += len(cs)
	}
	return n
}

// close closes every idle connection; connections in use are closed when
// given back.
func (pl *upstreamPool) close() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.closed = true
	for k, cs := range pl.idle {
		for _, c := range cs {
			_ = c.Close()
		}
		delete(pl.idle, k)
	}
}
