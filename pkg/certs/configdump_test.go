package certs

import (
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDump(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	leaf := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(time.Hour))
	good := configDump(t, []*x509.Certificate{leaf, ca.cert}, []*x509.Certificate{ca.cert}, false)

	tests := []struct {
		name string
		in   []byte
		// wantErr is a prefix: protobuf's own error text is deliberately
		// unstable, so only our part is compared.
		wantErr   string
		wantEmpty bool
		chain     int
	}{
		{name: "istio sidecar secrets, root repeated in chain", in: good, chain: 1},
		{name: "unknown fields from a newer envoy are ignored", in: []byte(strings.Replace(string(good), `"name": "default",`, `"name": "default", "future_field": 1,`, 1)), chain: 1},
		{name: "empty body", in: []byte("  \n"), wantErr: "config_dump has no secrets: the response is empty", wantEmpty: true},
		{name: "empty object", in: []byte("{}"), wantErr: "config_dump has no secrets: the proxy has not received any certificate over SDS yet", wantEmpty: true},
		{name: "empty secrets dump", in: []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}]}`), wantErr: "config_dump has no secrets: the proxy has not received any certificate over SDS yet", wantEmpty: true},
		{name: "only warming", in: configDump(t, []*x509.Certificate{leaf}, []*x509.Certificate{ca.cert}, true), wantErr: `config_dump has no secrets: secret "default" is still warming: the istio agent has not got a certificate from istiod yet; check the istio-proxy logs`, wantEmpty: true},
		{name: "not json", in: []byte("<html>404</html>"), wantErr: "malformed config_dump: "},
		{name: "truncated", in: good[:len(good)/2], wantErr: "malformed config_dump: "},
		{name: "other types are skipped unread", in: []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump","bootstrap":{"x":{"@type":"type.googleapis.com/acme.Nope"}}},{"@type":"type.googleapis.com/acme.Nope"}]}`), wantErr: "config_dump has no secrets: the dump has BootstrapConfigDump, type.googleapis.com/acme.Nope but no SecretsConfigDump; dump all of it (curl localhost:15000/config_dump) or only the secrets (?resource=dynamic_active_secrets)", wantEmpty: true},
		{name: "configs is not a list", in: []byte(`{"configs":{}}`), wantErr: "malformed config_dump: "},
		{name: "bad certificate bytes", in: []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump","dynamic_active_secrets":[{"name":"default","secret":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret","name":"default","tls_certificate":{"certificate_chain":{"inline_bytes":"bm90IGEgY2VydA=="}}}}]}]}`), wantErr: `secret "default": no PEM certificate found`},
		{name: "chain from a file", in: []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump","dynamic_active_secrets":[{"name":"default","secret":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret","name":"default","tls_certificate":{"certificate_chain":{"filename":"/etc/certs/cert-chain.pem"}}}}]}]}`), wantErr: `secret "default" has no certificate chain: it points at file /etc/certs/cert-chain.pem inside the proxy; use --source legacy or copy the file and use --file`},
		{name: "other secrets only", in: []byte(`{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump","dynamic_active_secrets":[{"name":"file-root:/etc/ssl/ca.pem"},{"name":"kubernetes://gw-cred"}]}]}`), wantErr: `config_dump has no secrets: no secret "default" among the secrets [file-root:/etc/ssl/ca.pem kubernetes://gw-cred]`, wantEmpty: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseConfigDump(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want prefix %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrEmptyConfigDump) != tt.wantEmpty {
					t.Errorf("errors.Is(ErrEmptyConfigDump) = %v, want %v", !tt.wantEmpty, tt.wantEmpty)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Chain) != tt.chain || !b.Chain[0].Equal(leaf) || len(b.Roots) != 1 || !b.Roots[0].Equal(ca.cert) {
				t.Errorf("bundle: %d chain, %d roots", len(b.Chain), len(b.Roots))
			}
		})
	}
}

// The committed sample is what an Istio sidecar's Envoy returns; it must keep
// parsing with the Envoy types we build against.
func TestParseConfigDumpSample(t *testing.T) {
	data, err := os.ReadFile("testdata/config_dump_secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseConfigDump(data)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := Evaluate(b, Expect{}, now)
	if len(certs) != 2 || certs[0].SPIFFEID != spiffeDefault || certs[1].Subject != "O=cluster.local" {
		t.Errorf("got %+v", certs)
	}
}

func FuzzParseConfigDump(f *testing.F) {
	for _, s := range []string{"", "{}", `{"configs":[]}`, `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.SecretsConfigDump"}]}`} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("testdata/config_dump_secrets.json"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseConfigDump(data)
		if err != nil {
			return
		}
		if len(b.Chain) == 0 || len(b.Roots) == 0 {
			t.Fatalf("no error but chain %d roots %d", len(b.Chain), len(b.Roots))
		}
		Evaluate(b, Expect{Namespace: "default", ServiceAccount: "default"}, now)
	})
}

func FuzzParsePEM(f *testing.F) {
	for _, s := range []string{"", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("testdata/outputcerts/cert-chain.pem"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParsePEM(data)
		if err != nil {
			return
		}
		for _, c := range certs {
			Describe(c, RoleLeaf, now)
		}
		again, err := ParsePEM(EncodePEM(certs))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("round trip: %v, %d != %d", err, len(again), len(certs))
		}
	})
}
