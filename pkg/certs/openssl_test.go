package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// opensslFacts runs openssl on one PEM certificate and returns its answers
// keyed by openssl's own labels.
func opensslFacts(t *testing.T, c *x509.Certificate) map[string]string {
	t.Helper()
	cmd := exec.Command("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-serial", "-dates", "-subject", "-issuer", "-nameopt", "RFC2253")
	cmd.Stdin = bytes.NewReader(EncodePEM([]*x509.Certificate{c}))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl (installed by hack/install-deps.sh): %v: %s", err, stderr.String())
	}
	facts := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unexpected openssl line %q", line)
		}
		facts[k] = v
	}
	return facts
}

// opensslTime parses openssl's "Jan  2 03:04:05 2026 GMT".
func opensslTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse("Jan _2 15:04:05 2006 MST", s)
	if err != nil {
		t.Fatalf("parsing openssl date %q: %v", s, err)
	}
	return v.UTC()
}

// checkAgainstOpenSSL compares what certs shows (the -o json output and the
// -o wide table) with openssl's view of the same PEM.
func checkAgainstOpenSSL(t *testing.T, b *Bundle) {
	t.Helper()
	certs, v := Evaluate(b, Expect{}, now)
	r := &Report{Source: SourceFile, Origin: "test", Certificates: certs, Verdict: v, bundle: b}
	var js bytes.Buffer
	if err := Print(&js, "json", Result{Reports: []*Report{r}}); err != nil {
		t.Fatal(err)
	}
	var shown Report
	if err := json.Unmarshal(js.Bytes(), &shown); err != nil {
		t.Fatal(err)
	}
	var wide bytes.Buffer
	if err := Print(&wide, "wide", Result{Reports: []*Report{r}}); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(wide.String(), "\n")
	all := append(append([]*x509.Certificate{}, b.Chain...), b.Roots...)
	if len(shown.Certificates) != len(all) {
		t.Fatalf("shown %d certificates, bundle has %d", len(shown.Certificates), len(all))
	}
	for i, c := range all {
		o := opensslFacts(t, c)
		s := shown.Certificates[i]
		pairs := []struct{ field, shown, openssl string }{
			{"sha256 fingerprint", s.SHA256, o["sha256 Fingerprint"]},
			{"serial", s.Serial, o["serial"]},
			{"subject", s.Subject, o["subject"]},
			{"issuer", s.Issuer, o["issuer"]},
			{"not before", s.NotBefore.Format(time.RFC3339), opensslTime(t, o["notBefore"]).Format(time.RFC3339)},
			{"not after", s.NotAfter.Format(time.RFC3339), opensslTime(t, o["notAfter"]).Format(time.RFC3339)},
		}
		var row string
		for _, line := range rows {
			if strings.Contains(line, s.SHA256) {
				row = line
			}
		}
		for _, p := range pairs {
			if p.shown != p.openssl {
				t.Errorf("certificate %d (%s) %s: shown %q, openssl says %q", i, s.Role, p.field, p.shown, p.openssl)
			}
			cell := p.shown
			if cell == "" {
				cell = "-"
			}
			if !strings.Contains(row, cell) {
				t.Errorf("certificate %d (%s) %s %q not in the wide table row %q", i, s.Role, p.field, cell, row)
			}
		}
	}
}

func TestFieldsAgreeWithOpenSSL(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	leaf := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(24*time.Hour))

	// An intermediate with a multi-attribute subject and a serial whose top
	// bit is set (DER adds a zero byte; openssl does not print it).
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := new(big.Int).SetString("ff00112233445566778899aabbccddeeff", 16)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Intermediate CA", Organization: []string{"Example, Inc."}, OrganizationalUnit: []string{"mesh"}, Country: []string{"DE"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	interCA := &testCA{cert: inter, key: key}
	leaf2 := interCA.leaf(t, "spiffe://cluster.local/ns/shop/sa/cart", now.Add(-time.Minute), now.Add(time.Hour))

	t.Run("istio-style leaf and root", func(t *testing.T) {
		checkAgainstOpenSSL(t, &Bundle{Chain: []*x509.Certificate{leaf}, Roots: []*x509.Certificate{ca.cert}})
	})
	t.Run("with intermediate", func(t *testing.T) {
		checkAgainstOpenSSL(t, &Bundle{Chain: []*x509.Certificate{leaf2, inter}, Roots: []*x509.Certificate{ca.cert}})
	})
}
