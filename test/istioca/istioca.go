// Package istioca gets workload certificates from a real istiod the way the
// Istio agent in every sidecar does: a service-account token with audience
// istio-ca (TokenRequest), a CSR, and the IstioCertificateService
// CreateCertificate gRPC call on istiod's port 15012. It also signs
// certificates directly with the CA istiod created (for validity periods the
// CA API refuses, such as already expired ones) and serves them the way
// Envoy's admin API does.
package istioca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Defaults of an istiod installed as the lab does.
const (
	DefaultAddr        = "127.0.0.1:15012"
	DefaultServerName  = "istiod.istio-system.svc"
	DefaultClusterID   = "Kubernetes"
	DefaultTrustDomain = "cluster.local"
	// Audience the CA checks tokens for (istiod's TOKEN_AUDIENCES default).
	Audience = "istio-ca"
	// CASecretNamespace/CASecretName hold istiod's self-signed CA.
	CASecretNamespace = "istio-system"
	CASecretName      = "istio-ca-secret"
)

const createCertificate = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// Client talks to istiod's CA.
type Client struct {
	Kube kubernetes.Interface
	// Addr of istiod's secure gRPC port.
	Addr string
	// ServerName and Roots verify istiod's serving certificate.
	ServerName string
	Roots      *x509.CertPool
	ClusterID  string
}

// Cert is an issued workload certificate.
type Cert struct {
	// Chain is leaf first, as the CA returned it (Istio appends its root).
	Chain    []*x509.Certificate
	ChainPEM []byte
	Key      crypto.Signer
	KeyPEM   []byte
}

// Leaf is the workload certificate itself.
func (c *Cert) Leaf() *x509.Certificate { return c.Chain[0] }

// SPIFFEID is Istio's identity for a service account.
func SPIFFEID(namespace, serviceAccount string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", DefaultTrustDomain, namespace, serviceAccount)
}

// Issue asks istiod for a certificate for serviceAccount in namespace, valid
// for ttl (istiod caps it at its maximum workload TTL).
func (c *Client) Issue(ctx context.Context, namespace, serviceAccount string, ttl time.Duration) (*Cert, error) {
	expiry := int64(600)
	tr, err := c.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{Audience}, ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting an %s token for service account %s/%s: %w", Audience, namespace, serviceAccount, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id, _ := url.Parse(SPIFFEID(namespace, serviceAccount))
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	// IstioCertificateRequest{csr = 1, validity_duration = 3}.
	var msg []byte
	msg = protowire.AppendTag(msg, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, string(csrPEM))
	msg = protowire.AppendTag(msg, 3, protowire.VarintType)
	msg = protowire.AppendVarint(msg, uint64(ttl/time.Second))

	resp, err := c.unary(ctx, createCertificate, tr.Status.Token, msg)
	if err != nil {
		return nil, fmt.Errorf("CreateCertificate for %s: %w", id, err)
	}
	chainPEM, err := parseResponse(resp)
	if err != nil {
		return nil, fmt.Errorf("CreateCertificate for %s: %w", id, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := &Cert{ChainPEM: chainPEM, Key: key, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}
	if out.Chain, err = parsePEM(chainPEM); err != nil {
		return nil, err
	}
	return out, nil
}

// parseResponse reads IstioCertificateResponse{repeated string cert_chain = 1}.
func parseResponse(b []byte) ([]byte, error) {
	var chain bytes.Buffer
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			s, n := protowire.ConsumeString(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			chain.WriteString(s)
			if s != "" && s[len(s)-1] != '\n' {
				chain.WriteByte('\n')
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	if chain.Len() == 0 {
		return nil, errors.New("empty certificate chain in the response")
	}
	return chain.Bytes(), nil
}

// unary is one gRPC call over HTTP/2 (the wire format: a 5-byte frame
// header per message, status in the trailers).
func (c *Client) unary(ctx context.Context, method, token string, msg []byte) ([]byte, error) {
	addr, serverName, clusterID := c.Addr, c.ServerName, c.ClusterID
	if addr == "" {
		addr = DefaultAddr
	}
	if serverName == "" {
		serverName = DefaultServerName
	}
	if clusterID == "" {
		clusterID = DefaultClusterID
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+method, bytes.NewReader(frame))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("ClusterID", clusterID)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: c.Roots, ServerName: serverName, NextProtos: []string{"h2"}},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status") // trailers-only response
	}
	if resp.StatusCode != http.StatusOK || status != "0" {
		m := resp.Trailer.Get("Grpc-Message")
		if m == "" {
			m = resp.Header.Get("Grpc-Message")
		}
		if u, err := url.PathUnescape(m); err == nil {
			m = u
		}
		return nil, fmt.Errorf("HTTP %d, grpc-status %s: %s", resp.StatusCode, status, m)
	}
	if len(body) < 5 {
		return nil, fmt.Errorf("short gRPC response (%d bytes)", len(body))
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if body[0] != 0 || int(n) != len(body)-5 {
		return nil, fmt.Errorf("unexpected gRPC frame (compressed %d, length %d of %d)", body[0], n, len(body)-5)
	}
	return body[5:], nil
}

// CA is istiod's signing CA, read from its secret.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	Key     crypto.Signer
}

// LoadCA reads istiod's self-signed CA (PILOT_CERT_PROVIDER=istiod keeps it
// in istio-system/istio-ca-secret).
func LoadCA(ctx context.Context, kube kubernetes.Interface) (*CA, error) {
	s, err := kube.CoreV1().Secrets(CASecretNamespace).Get(ctx, CASecretName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading istiod's CA secret %s/%s: %w", CASecretNamespace, CASecretName, err)
	}
	certs, err := parsePEM(s.Data["ca-cert.pem"])
	if err != nil {
		return nil, fmt.Errorf("ca-cert.pem of %s: %w", CASecretName, err)
	}
	block, _ := pem.Decode(s.Data["ca-key.pem"])
	if block == nil {
		return nil, fmt.Errorf("ca-key.pem of %s is not PEM", CASecretName)
	}
	key, err := parseKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca-key.pem of %s: %w", CASecretName, err)
	}
	return &CA{Cert: certs[0], CertPEM: s.Data["ca-cert.pem"], Key: key}, nil
}

func parseKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

// NewSelfSignedCA makes a CA that looks like istiod's (O=cluster.local) but
// is not: for wrong-root cases.
func NewSelfSignedCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{Organization: []string{DefaultTrustDomain}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: key}, nil
}

// Sign issues a workload certificate shaped like istiod's (no subject, the
// SPIFFE ID as critical URI SAN, client and server auth) for any period.
func (ca *CA) Sign(spiffeID string, notBefore, notAfter time.Time) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := url.Parse(spiffeID)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), NotBefore: notBefore, NotAfter: notAfter, URIs: []*url.URL{id},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	chainPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.CertPEM...)
	return &Cert{Chain: []*x509.Certificate{leaf, ca.Cert}, ChainPEM: chainPEM, Key: key,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}, nil
}

func parsePEM(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// serial is random and 128-bit, as istiod's are.
func serial() *big.Int {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return new(big.Int).SetBytes(b)
}
