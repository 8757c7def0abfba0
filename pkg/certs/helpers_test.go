package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// testCA is a CA shaped like istiod's self-signed one (O=cluster.local).
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newCA(t testing.TB, org string, serial int64) *testCA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{org}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

// leaf issues a workload certificate like istiod's: empty subject, the
// SPIFFE ID as the only (critical) SAN, ECDSA P-256.
func (ca *testCA) leaf(t testing.TB, spiffe string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(spiffe)
	if err != nil {
		t.Fatal(err)
	}
	serial := new(big.Int).SetBytes([]byte{0x0a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a})
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const spiffeDefault = "spiffe://cluster.local/ns/default/sa/default"

// configDump builds a /config_dump body as Envoy writes it with Istio's SDS
// secrets.
func configDump(t testing.TB, chain, roots []*x509.Certificate, warming bool) []byte {
	t.Helper()
	def := &tlsv3.Secret{Name: SecretWorkload, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: EncodePEM(chain)}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}},
	}}}
	root := &tlsv3.Secret{Name: SecretRoot, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: EncodePEM(roots)}},
	}}}
	var secrets []*adminv3.SecretsConfigDump_DynamicSecret
	for _, s := range []*tlsv3.Secret{def, root} {
		a, err := anypb.New(s)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: s.Name, VersionInfo: "2026-01-02T03:04:05Z", Secret: a})
	}
	dump := &adminv3.SecretsConfigDump{DynamicActiveSecrets: secrets}
	if warming {
		dump = &adminv3.SecretsConfigDump{DynamicWarmingSecrets: secrets[:1]}
	}
	a, err := anypb.New(dump)
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, Indent: " "}.Marshal(&adminv3.ConfigDump{Configs: []*anypb.Any{a}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
