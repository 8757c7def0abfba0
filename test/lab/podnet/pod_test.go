package podnet

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

func workloadCert(t *testing.T, ca *istioca.CA, ns, sa string) tls.Certificate {
	t.Helper()
	c, err := ca.Sign(istioca.SPIFFEID(ns, sa), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out := tls.Certificate{PrivateKey: c.Key, Leaf: c.Leaf()}
	for _, x := range c.Chain {
		out.Certificate = append(out.Certificate, x.Raw)
	}
	return out
}

// TestPermissiveListener serves plaintext and Istio mTLS on one port, as a
// sidecar in PERMISSIVE mode does, and refuses TLS without a mesh
// certificate.
func TestPermissiveListener(t *testing.T) {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, err := openCRILog(t.TempDir() + "/proxy.log")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	pl := newPermissiveListener(ln, &tls.Config{
		Certificates: []tls.Certificate{workloadCert(t, ca, "default", "backend")}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: roots, NextProtos: netlab.IstioALPN,
	}, log)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, Greeting("v1"))
	})}
	go func() { _ = srv.Serve(pl) }()
	defer srv.Close()

	get := func(c net.Conn) (string, error) {
		defer c.Close()
		if _, err := io.WriteString(c, "GET /greetings HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	mtls := func(cert tls.Certificate, wantPeer string) (net.Conn, error) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, &tls.Config{
			Certificates: []tls.Certificate{cert}, ServerName: Target{Host: backendFQDN, Port: 80}.SNI(), NextProtos: netlab.IstioALPN,
			InsecureSkipVerify: true, VerifyPeerCertificate: verifySPIFFE(roots, wantPeer),
		})
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		// The server does not ask the client to prove anything more after
		// the handshake in TLS 1.3: a read shows whether it accepted us.
		return tc, nil
	}

	t.Run("plaintext", func(t *testing.T) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if body, err := get(c); err != nil || body != netlab.Greeting {
			t.Fatalf("plaintext GET = %q, %v", body, err)
		}
	})
	t.Run("istio mTLS", func(t *testing.T) {
		c, err := mtls(workloadCert(t, ca, "default", "frontend"), istioca.SPIFFEID("default", "backend"))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "istio-peer-exchange" {
			t.Errorf("ALPN = %q, want istio-peer-exchange", got)
		}
		if body, err := get(c); err != nil || body != netlab.Greeting {
			t.Fatalf("mTLS GET = %q, %v", body, err)
		}
	})
	t.Run("wrong server identity", func(t *testing.T) {
		_, err := mtls(workloadCert(t, ca, "default", "frontend"), istioca.SPIFFEID("default", "reviews"))
		if err == nil || !strings.Contains(err.Error(), "peer identity is [spiffe://cluster.local/ns/default/sa/backend], want spiffe://cluster.local/ns/default/sa/reviews") {
			t.Fatalf("handshake error = %v", err)
		}
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		c, err := mtls(workloadCert(t, other, "default", "frontend"), istioca.SPIFFEID("default", "backend"))
		if err == nil {
			_, err = get(c)
		}
		if err == nil {
			t.Fatal("a client with a foreign certificate got an answer")
		}
	})
}
