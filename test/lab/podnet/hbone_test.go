package podnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
)

// recordingListener keeps the first bytes each accepted connection sent.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	first [][]byte
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.first = append(l.first, nil)
	i := len(l.first) - 1
	l.mu.Unlock()
	return &recordingConn{Conn: c, l: l, i: i}, nil
}

func (l *recordingListener) conns() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.first...)
}

type recordingConn struct {
	net.Conn
	l *recordingListener
	i int
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.l.mu.Lock()
	if len(c.l.first[c.i]) < 4096 {
		c.l.first[c.i] = append(c.l.first[c.i], b[:n]...)
	}
	c.l.mu.Unlock()
	return n, err
}

// clientHello is what a capture sees of a ClientHello: SNI, the offered
// ALPN protocols and supported_versions.
type clientHello struct {
	SNI      string
	ALPN     []string
	Versions []uint16
}

// parseClientHello reads the ClientHello in the first TLS record of b, by
// RFC 8446's layout.
func parseClientHello(b []byte) (clientHello, error) {
	var h clientHello
	if len(b) < 5 || b[0] != 0x16 {
		return h, fmt.Errorf("not a TLS handshake record: % x", b[:min(len(b), 5)])
	}
	rec := b[5:min(len(b), 5+int(binary.BigEndian.Uint16(b[3:5])))]
	if len(rec) < 4 || rec[0] != 1 {
		return h, fmt.Errorf("not a ClientHello")
	}
	p := rec[4:]
	take := func(n int) []byte {
		if n > len(p) {
			n = len(p)
		}
		out := p[:n]
		p = p[n:]
		return out
	}
	take(2 + 32)                                // legacy_version, random
	take(int(take(1)[0]))                       // session id
	take(int(binary.BigEndian.Uint16(take(2)))) // cipher suites
	take(int(take(1)[0]))                       // compression methods
	ext := take(int(binary.BigEndian.Uint16(take(2))))
	for len(ext) >= 4 {
		typ, n := binary.BigEndian.Uint16(ext), int(binary.BigEndian.Uint16(ext[2:]))
		body := ext[4 : 4+n]
		ext = ext[4+n:]
		switch typ {
		case 0: // server_name
			h.SNI = string(body[5:])
		case 16: // ALPN
			for l := body[2:]; len(l) > 0; l = l[1+int(l[0]):] {
				h.ALPN = append(h.ALPN, string(l[1:1+int(l[0])]))
			}
		case 43: // supported_versions
			for v := body[1:]; len(v) >= 2; v = v[2:] {
				h.Versions = append(h.Versions, binary.BigEndian.Uint16(v))
			}
		}
	}
	return h, nil
}

// TestHBONE carries HTTP calls as ztunnel does: mTLS with TLS 1.3 only,
// ALPN exactly h2 and no SNI, the source's certificate, one pooled
// connection for both calls, each call a CONNECT stream to the app's
// IP:port. The server refuses other targets, a peer of another CA, and a
// client refuses a server of the wrong identity.
func TestHBONE(t *testing.T) {
	ca, err := istioca.NewSelfSignedCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := istioca.NewSelfSignedCA()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	front, back := workloadCert(t, ca, "shop", "frontend"), workloadCert(t, ca, "shop", "backend")

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = appSrv.Serve(app) }()
	t.Cleanup(func() { _ = appSrv.Close() })

	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &recordingListener{Listener: raw}
	t.Cleanup(func() { _ = ln.Close() })
	var logs strings.Builder
	var logMu sync.Mutex
	serveHBONE(ln, hboneServerTLS(back, roots), func(target string) error {
		if target != app.Addr().String() {
			return fmt.Errorf("CONNECT to %s: not served here", target)
		}
		return nil
	}, func(ctx context.Context, target string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}, func(f string, a ...any) { logMu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); logMu.Unlock() })

	pool := newHBONEPool()
	t.Cleanup(pool.close)
	call := func(pool *hbonePool, cert tls.Certificate, peer, target, path string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cc, err := pool.conn(ctx, hboneKey("src", peer, raw.Addr().String()), func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", raw.Addr().String())
			if err != nil {
				return nil, err
			}
			return dialHBONE(ctx, c, hboneClientTLS(cert, roots, peer))
		})
		if err != nil {
			return "", err
		}
		tun, err := connect(ctx, cc, target)
		if err != nil {
			return "", err
		}
		defer tun.Close()
		hr, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://backend"+path, nil)
		hr.Close = true
		status, body, _, err := roundTrip(ctx, tun, bufio.NewReader(tun), hr)
		return fmt.Sprintf("%d %s", status, body), err
	}
	backID := istioca.SPIFFEID("shop", "backend")
	for _, path := range []string{"/one", "/two"} {
		got, err := call(pool, front, backID, app.Addr().String(), path)
		if want := "200 hello " + path; err != nil || got != want {
			t.Fatalf("call %s: %q, %v; want %q", path, got, err, want)
		}
	}
	if n := len(ln.conns()); n != 1 || pool.count() != 1 {
		t.Fatalf("two calls opened %d connections (pool holds %d), want one pooled", n, pool.count())
	}
	h, err := parseClientHello(ln.conns()[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("sni=%q alpn=%q versions=%x", h.SNI, h.ALPN, h.Versions), `sni="" alpn=["h2"] versions=[304]`; got != want {
		t.Errorf("ClientHello: %s, want %s", got, want)
	}

	// Another target on the same connection: refused by the server.
	if _, err := call(pool, front, backID, "127.0.0.1:1", "/"); err == nil || !strings.Contains(err.Error(), "400 Bad Request: CONNECT to 127.0.0.1:1: not served here") {
		t.Errorf("CONNECT to another target: %v", err)
	}
	// The server is not the identity the client wants.
	if _, err := call(pool, front, istioca.SPIFFEID("shop", "reviews"), app.Addr().String(), "/"); err == nil || !strings.Contains(err.Error(), "want spiffe://cluster.local/ns/shop/sa/reviews") {
		t.Errorf("wrong server identity: %v", err)
	}
	// A client certificate of another CA.
	if _, err := call(newHBONEPool(), workloadCert(t, other, "shop", "frontend"), backID, app.Addr().String(), "/"); err == nil {
		t.Error("a client of another CA got through")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		logMu.Lock()
		l := logs.String()
		logMu.Unlock()
		if strings.Contains(l, "certificate signed by unknown authority") || time.Now().After(deadline) {
			if !strings.Contains(l, "certificate signed by unknown authority") {
				t.Errorf("server log: %q, want the refused handshake", l)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}
