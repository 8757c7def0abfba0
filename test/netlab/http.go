package netlab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Mode is how the backend talks.
type Mode int

const (
	// Plaintext is HTTP/1.1 in clear, as before the mesh.
	Plaintext Mode = iota
	// IstioMTLS is TLS 1.3 with client certificates, Istio's ALPN
	// (istio-peer-exchange, istio) and its outbound SNI.
	IstioMTLS
	// HTTPS is ordinary TLS without client certificates or Istio ALPN.
	HTTPS
)

// Greeting is what the workshop's backend answers.
const Greeting = `{"greetings":"Hi TGN meetup"}`

// IstioSNI is the SNI a sidecar sends to the workshop's backend.
const IstioSNI = "outbound_.80_._.backend.default.svc.cluster.local"

// IstioALPN is what a sidecar offers to another sidecar.
var IstioALPN = []string{"istio-peer-exchange", "istio"}

// Backend is an HTTP server in a pod namespace.
type Backend struct {
	Pod  *Pod
	Port int
	Mode Mode
	// Requests counts the requests served.
	Requests atomic.Int64

	srv  *http.Server
	pki  *pki
	addr string
}

// StartBackend serves POST/GET /greetings on port 80 of p.
func (l *Lab) StartBackend(ctx context.Context, p *Pod, mode Mode) (*Backend, error) {
	b := &Backend{Pod: p, Port: 80, Mode: mode}
	b.addr = net.JoinHostPort(p.IP.String(), "80")
	var ln net.Listener
	if err := InNetNS(p.NS, func() (err error) {
		ln, err = net.Listen("tcp", b.addr)
		return err
	}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/greetings", func(w http.ResponseWriter, r *http.Request) {
		b.Requests.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, Greeting)
	})
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if mode != Plaintext {
		var err error
		if b.pki, err = newPKI(); err != nil {
			ln.Close()
			return nil, err
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{b.pki.server}, MinVersion: tls.VersionTLS12}
		if mode == IstioMTLS {
			cfg.NextProtos = IstioALPN
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = b.pki.pool
		} else {
			cfg.NextProtos = []string{"http/1.1"}
		}
		ln = &handshakeListener{Listener: ln, cfg: cfg}
	}
	go b.srv.Serve(ln)
	l.OnTeardown(func() { b.srv.Close() })
	return b, nil
}

// handshakeListener completes the TLS handshake and hands net/http a plain
// connection: net/http drops connections whose ALPN (Istio's) it does not
// know, while a sidecar would just carry HTTP/1.1 inside.
type handshakeListener struct {
	net.Listener
	cfg *tls.Config
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := tls.Server(c, l.cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			continue
		}
		tc.SetDeadline(time.Time{})
		return struct{ net.Conn }{tc}, nil
	}
}

// Client sends requests from a pod namespace to a backend.
type Client struct {
	http *http.Client
	url  string
	// OK and Failed count the requests made.
	OK, Failed atomic.Int64
	stop       chan struct{}
	done       chan struct{}
}

// NewClient returns a client in pod from that talks to b the way b expects:
// plain HTTP, mTLS with Istio's SNI/ALPN and a client certificate, or HTTPS.
func (l *Lab) NewClient(from *Pod, b *Backend) *Client {
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetNS(from.NS, func() (err error) {
			c, err = dialTCP(ctx, addr)
			return err
		})
		return c, err
	}
	tr := &http.Transport{DialContext: dialer, DisableKeepAlives: true}
	scheme := "http"
	if b.Mode != Plaintext {
		scheme = "https"
		cfg := &tls.Config{RootCAs: b.pki.pool, MinVersion: tls.VersionTLS12}
		if b.Mode == IstioMTLS {
			cfg.ServerName = IstioSNI
			cfg.NextProtos = IstioALPN
			cfg.Certificates = []tls.Certificate{b.pki.client}
		} else {
			cfg.ServerName = "backend.example"
			cfg.NextProtos = []string{"http/1.1"}
		}
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}
	}
	return &Client{
		http: &http.Client{Transport: tr, Timeout: 5 * time.Second},
		url:  fmt.Sprintf("%s://%s/greetings", scheme, b.addr),
	}
}

// Do makes one POST /greetings and returns the body.
func (c *Client) Do(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(""))
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.Failed.Add(1)
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.Failed.Add(1)
		return "", err
	}
	c.OK.Add(1)
	return string(body), nil
}

// Loop makes a request every interval until Stop; each on a new connection,
// so every capture window sees whole handshakes.
func (c *Client) Loop(interval time.Duration) {
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(c.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c.Do(ctx)
			cancel()
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Stop ends the loop.
func (c *Client) Stop() {
	if c.stop != nil {
		close(c.stop)
		<-c.done
		c.stop = nil
	}
}

func dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI() (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netlab CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	leaf := func(serial int64, names []string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, nil
	}
	if p.server, err = leaf(2, []string{IstioSNI, "backend.example"}, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.client, err = leaf(3, []string{"frontend"}, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}
