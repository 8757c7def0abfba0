//lint:file-ignore SA1019 HTTP/2 over a connection dialled and handshaken here (in a pod's network namespace) needs x/net/http2's ClientConn and ServeConn; net/http dials its own.

package podnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// HBONEPort is where ztunnel takes HBONE: HTTP/2 CONNECT inside mTLS.
const HBONEPort = 15008

// HBONEALPN is the only protocol ztunnel offers in its ClientHello.
var HBONEALPN = []string{"h2"}

// hboneState is a pod in ztunnel's care: its identity's certificate and
// trust root, the HBONE listener in its namespace, and the pooled HBONE
// connections of its outbound calls. bypass (BypassAnnotation) sends its
// calls around ztunnel.
type hboneState struct {
	id     string
	cert   tls.Certificate
	roots  *x509.CertPool
	bypass atomic.Bool
	pool   *hbonePool
	ln     net.Listener
	srv    *http2.Server
}

func (st *hboneState) close() {
	if st.ln != nil {
		_ = st.ln.Close()
	}
	st.pool.close()
}

// hboneClientTLS is ztunnel's outbound TLS (ztunnel src/tls): TLS 1.3
// only, ALPN exactly h2, no SNI (no ServerName), no session resumption
// (no session cache), the source's workload certificate, and the peer's
// SPIFFE ID checked against the trust root instead of a host name.
func hboneClientTLS(cert tls.Certificate, roots *x509.CertPool, peerID string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, NextProtos: HBONEALPN,
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, VerifyPeerCertificate: verifySPIFFE(roots, peerID),
	}
}

// hboneServerTLS is ztunnel's inbound TLS on 15008: TLS 1.3, h2, and a
// client certificate that chains to the trust root with a SPIFFE ID of the
// mesh's trust domain.
func hboneServerTLS(cert tls.Certificate, roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert}, NextProtos: HBONEALPN,
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: verifySPIFFE(roots, ""),
	}
}

// listenHBONE listens on the pod's IP:15008 inside its namespace (in-pod
// redirection: ztunnel's sockets live there) and forwards CONNECT streams
// to the pod's own application ports.
func (d *daemon) listenHBONE(p *pod, st *hboneState) error {
	addr := net.JoinHostPort(p.net.IP.String(), strconv.Itoa(HBONEPort))
	if err := netlab.InNetNS(p.net.NS, func() (err error) {
		st.ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listening for HBONE on %s in %s: %w", addr, p.net.NS, err)
	}
	ip := p.net.IP.String()
	st.srv = serveHBONE(st.ln, hboneServerTLS(st.cert, st.roots), func(target string) error {
		host, port, err := net.SplitHostPort(target)
		if err != nil || host != ip || port == strconv.Itoa(HBONEPort) {
			return fmt.Errorf("CONNECT to %s: this ztunnel serves %s", target, ip)
		}
		return nil
	}, func(ctx context.Context, target string) (net.Conn, error) {
		return dialIn(ctx, p.net.NS, target)
	}, p.appLog.Printf)
	return nil
}

// serveHBONE accepts mTLS on ln and serves HTTP/2 on it: each CONNECT
// stream whose target allow accepts is joined to a connection dial opens.
func serveHBONE(ln net.Listener, cfg *tls.Config, allow func(target string) error,
	dial func(ctx context.Context, target string) (net.Conn, error), logf func(string, ...any)) *http2.Server {
	srv := &http2.Server{IdleTimeout: time.Hour}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "HBONE takes CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		if err := allow(r.Host); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		up, err := dial(r.Context(), r.Host)
		if err != nil {
			logf("HBONE: %v", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		go func() {
			_, _ = io.Copy(up, r.Body)
			if cw, ok := up.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					logf("HBONE: TLS handshake from %s failed: %v", c.RemoteAddr(), err)
					c.Close()
					return
				}
				_ = c.SetDeadline(time.Time{})
				srv.ServeConn(tc, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	return srv
}

// hbonePool keeps one HBONE connection per source/destination identity
// and address, as ztunnel pools them: every call of the pod is a new
// CONNECT stream on it, so a capture that starts later sees TLS records on
// 15008 and no handshake.
type hbonePool struct {
	mu     sync.Mutex
	conns  map[string]*http2.ClientConn
	closed bool
	tr     *http2.Transport
}

func newHBONEPool() *hbonePool {
	return &hbonePool{conns: map[string]*http2.ClientConn{}, tr: &http2.Transport{ReadIdleTimeout: 30 * time.Second}}
}

// conn returns the pooled connection for key, or opens one with dial.
func (pl *hbonePool) conn(ctx context.Context, key string, dial func(context.Context) (net.Conn, error)) (*http2.ClientConn, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil, errors.New("ztunnel no longer carries this pod")
	}
	if cc := pl.conns[key]; cc != nil && cc.CanTakeNewRequest() {
		return cc, nil
	}
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	cc, err := pl.tr.NewClientConn(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if old := pl.conns[key]; old != nil {
		_ = old.Close()
	}
	pl.conns[key] = cc
	return cc, nil
}

// dropTo closes the pooled connections to addr (IP:15008).
func (pl *hbonePool) dropTo(addr string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for k, cc := range pl.conns {
		if strings.HasSuffix(k, " "+addr) {
			_ = cc.Close()
			delete(pl.conns, k)
		}
	}
}

func (pl *hbonePool) isClosed() bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.closed
}

// drop forgets cc if it is still the pooled connection for key.
func (pl *hbonePool) drop(key string, cc *http2.ClientConn) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.conns[key] == cc {
		delete(pl.conns, key)
		_ = cc.Close()
	}
}

func (pl *hbonePool) count() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.conns)
}

func (pl *hbonePool) close() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.closed = true
	for k, cc := range pl.conns {
		_ = cc.Close()
		delete(pl.conns, k)
	}
}

// dialHBONE opens the mTLS connection to a destination's 15008.
func dialHBONE(ctx context.Context, raw net.Conn, cfg *tls.Config) (net.Conn, error) {
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("HBONE handshake with %s: %w", raw.RemoteAddr(), err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != "h2" {
		tc.Close()
		return nil, fmt.Errorf("HBONE peer %s agreed on ALPN %q, not h2", raw.RemoteAddr(), got)
	}
	return tc, nil
}

// connect opens a CONNECT stream to target (IP:port) on cc: the returned
// connection is the tunnel's two directions.
func connect(ctx context.Context, cc *http2.ClientConn, target string) (net.Conn, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+target, pr)
	if err != nil {
		return nil, err
	}
	req.Host = target
	resp, err := cc.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("HBONE CONNECT %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		pw.Close()
		return nil, fmt.Errorf("HBONE CONNECT %s: %s: %s", target, resp.Status, strings.TrimSpace(string(b)))
	}
	return &tunnelConn{r: resp.Body, w: pw, target: target}, nil
}

// tunnelConn is one CONNECT stream as a net.Conn (deadlines come from the
// request's context).
type tunnelConn struct {
	r      io.ReadCloser
	w      *io.PipeWriter
	target string
}

func (c *tunnelConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *tunnelConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *tunnelConn) Close() error {
	_ = c.w.Close()
	return c.r.Close()
}
func (c *tunnelConn) LocalAddr() net.Addr              { return hboneAddr("hbone") }
func (c *tunnelConn) RemoteAddr() net.Addr             { return hboneAddr(c.target) }
func (c *tunnelConn) SetDeadline(time.Time) error      { return nil }
func (c *tunnelConn) SetReadDeadline(time.Time) error  { return nil }
func (c *tunnelConn) SetWriteDeadline(time.Time) error { return nil }

type hboneAddr string

func (a hboneAddr) Network() string { return "hbone" }
func (a hboneAddr) String() string  { return string(a) }

// hboneKey names a pooled HBONE connection: source and destination
// identities and the destination's address.
func hboneKey(src, dst, addr string) string { return src + " " + dst + " " + addr }

// callAmbient is a call from a pod in ztunnel's care. Without a waypoint
// ztunnel does no L7 routing: any ready endpoint of the Service, as
// kube-proxy picks. To a pod a ztunnel carries, the call is a CONNECT
// stream to IP:port on the pooled HBONE connection of the two identities
// to the pod's 15008, from the pod's own address; to other pods it is
// plaintext. A pod with BypassAnnotation calls the application port
// directly, around ztunnel.
func (d *daemon) callAmbient(ctx context.Context, p *pod, st *hboneState, req Request, method string, header http.Header) (Result, error) {
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+req.Host+req.Path, nil)
	if err != nil {
		return Result{}, err
	}
	for k, v := range header {
		hr.Header[k] = v
	}
	hr.Close = true
	if wt, ok := d.waypointFor(req); ok && !st.bypass.Load() {
		return d.callWaypoint(ctx, p, st, wt, hr)
	}
	t, err := d.pick(req, false)
	if err != nil {
		return Result{}, err
	}
	return d.hboneRoundTrip(ctx, p, st, t, hr)
}

// hboneRoundTrip sends hr from p to t: a CONNECT stream to IP:port on the
// pooled HBONE connection of the two identities when a ztunnel carries t,
// else (or when p bypasses ztunnel) plaintext to t's port.
func (d *daemon) hboneRoundTrip(ctx context.Context, p *pod, st *hboneState, t Target, hr *http.Request) (Result, error) {
	res := Result{Target: t}
	addr := net.JoinHostPort(t.IP.String(), strconv.Itoa(t.Port))
	dst := d.hboneDest(t)
	if dst == "" || st.bypass.Load() {
		conn, err := dialIn(ctx, p.net.NS, addr)
		if err != nil {
			return res, err
		}
		defer conn.Close()
		res.Status, res.Body, _, err = roundTrip(ctx, conn, bufio.NewReader(conn), hr)
		return res, err
	}
	res.HBONE = true
	tun, err := d.tunnel(ctx, p, st, net.JoinHostPort(t.IP.String(), strconv.Itoa(HBONEPort)), dst, addr)
	if err != nil {
		return res, err
	}
	defer tun.Close()
	res.Status, res.Body, _, err = roundTrip(ctx, tun, bufio.NewReader(tun), hr)
	return res, err
}

// tunnel opens a CONNECT stream to target on p's pooled HBONE connection
// to hboneTo (IP:15008), whose identity must be dst.
func (d *daemon) tunnel(ctx context.Context, p *pod, st *hboneState, hboneTo, dst, target string) (net.Conn, error) {
	key := hboneKey(st.id, dst, hboneTo)
	for attempt := 0; ; attempt++ {
		cc, err := st.pool.conn(ctx, key, func(ctx context.Context) (net.Conn, error) {
			raw, err := dialIn(ctx, p.net.NS, hboneTo)
			if err != nil {
				return nil, err
			}
			return dialHBONE(ctx, raw, hboneClientTLS(st.cert, st.roots, dst))
		})
		if err != nil {
			return nil, err
		}
		tun, err := connect(ctx, cc, target)
		if err == nil {
			return tun, nil
		}
		// A pooled connection the peer closed: once more on a new one.
		st.pool.drop(key, cc)
		if attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}
