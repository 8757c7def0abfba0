package certs

import (
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseDump(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	leaf := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(time.Hour))
	pemOf := func(c *x509.Certificate) string { return string(EncodePEM([]*x509.Certificate{c})) }
	b64 := func(c *x509.Certificate) string {
		return base64.StdEncoding.EncodeToString(EncodePEM([]*x509.Certificate{c}))
	}
	secret := func(name, body string) string {
		return fmt.Sprintf(`{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret", "name": %q, "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": %q%s}}`, name, name, body)
	}
	chain := fmt.Sprintf(`, "tls_certificate": {"certificate_chain": {"inline_bytes": %q}, "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}}`, b64(leaf))
	root := fmt.Sprintf(`, "validation_context": {"trusted_ca": {"inline_bytes": %q}}`, b64(ca.cert))

	type want struct {
		identity, state string
		chain, roots    int
	}
	tests := []struct {
		name    string
		in      string
		kind    string
		want    []want
		wantErr string
	}{
		{
			name: "resource=dynamic_active_secrets",
			in:   `{"configs": [` + secret("default", chain) + `, ` + secret("ROOTCA", root) + `]}`,
			kind: DumpEnvoy, want: []want{{"", StateActive, 1, 1}},
		},
		{
			name: "resource=dynamic_warming_secrets: a secret without payload is warming",
			in:   `{"configs": [` + secret("default", "") + `, ` + secret("ROOTCA", root) + `]}`,
			kind: DumpEnvoy, want: []want{{"", StateWarming, 0, 1}},
		},
		{
			name: "bare SecretsConfigDump in camelCase",
			in:   fmt.Sprintf(`{"dynamicActiveSecrets": [{"name": "default", "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "tlsCertificate": {"certificateChain": {"inlineString": %q}, "privateKey": {"inlineString": "[redacted]"}}}}, {"name": "ROOTCA", "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "validationContext": {"trustedCa": {"inlineBytes": %q}}}}]}`, pemOf(leaf), b64(ca.cert)),
			kind: DumpEnvoy, want: []want{{"", StateActive, 1, 1}},
		},
		{
			name: "ztunnel: available, initializing and unavailable identities",
			in: fmt.Sprintf(`{"certificates": [
				{"identity": "spiffe://cluster.local/ns/a/sa/x", "state": "Available", "certChain": [{"pem": %q, "serialNumber": "1"}], "rootCerts": [{"pem": %q}]},
				{"identity": "spiffe://cluster.local/ns/a/sa/y", "state": "Initializing", "certChain": [], "rootCerts": []},
				{"identity": "spiffe://cluster.local/ns/a/sa/z", "state": "Unavailable: the identity is no longer needed", "certChain": [], "rootCerts": []}]}`, b64(leaf), b64(ca.cert)),
			kind: DumpZtunnel,
			want: []want{{"spiffe://cluster.local/ns/a/sa/x", ZtunnelAvailable, 1, 1}, {"spiffe://cluster.local/ns/a/sa/y", ZtunnelInitializing, 0, 0}, {"spiffe://cluster.local/ns/a/sa/z", "Unavailable: the identity is no longer needed", 0, 0}},
		},
		{
			name: "ztunnel before 1.22: snake_case, root at the end of the chain, plain PEM",
			in:   fmt.Sprintf(`{"certificates": [{"identity": "spiffe://cluster.local/ns/a/sa/x", "state": "Available", "cert_chain": [{"pem": %q}, {"pem": %q}]}]}`, pemOf(leaf), pemOf(ca.cert)),
			kind: DumpZtunnel, want: []want{{"spiffe://cluster.local/ns/a/sa/x", ZtunnelAvailable, 1, 1}},
		},
		{
			name: "istioctl ztunnel-config certificates -o json: the list alone",
			in:   fmt.Sprintf(`[{"identity": "spiffe://cluster.local/ns/a/sa/x", "state": "Available", "certChain": [{"pem": %q}], "rootCerts": [{"pem": %q}]}]`, b64(leaf), b64(ca.cert)),
			kind: DumpZtunnel, want: []want{{"spiffe://cluster.local/ns/a/sa/x", ZtunnelAvailable, 1, 1}},
		},
		{name: "ztunnel without certificates", in: `{"certificates": []}`, wantErr: "the ztunnel config_dump has no certificates: ztunnel has no workload on its node yet, or the dump was cut"},
		{name: "ztunnel pem that is neither", in: `{"certificates": [{"identity": "spiffe://td/ns/a/sa/x", "state": "Available", "certChain": [{"pem": "%%%"}]}]}`, wantErr: "ztunnel identity spiffe://td/ns/a/sa/x: certChain: entry 0: pem is neither PEM nor base64-encoded PEM: "},
		{name: "a number", in: `42`, wantErr: "JSON float64 is no dump this command reads; expected " + DumpFormats},
		{name: "not JSON", in: `{"configs": [`, wantErr: "not valid JSON (unexpected end of JSON input); expected " + DumpFormats},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs, kind, err := ParseDump([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.kind {
				t.Errorf("kind %q, want %q", kind, tt.kind)
			}
			var got []want
			for _, b := range bs {
				got = append(got, want{b.Identity, b.State, len(b.Chain), len(b.Roots)})
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("bundles %v, want %v", got, tt.want)
			}
		})
	}
}

// Bundles without certificates get a verdict line that says why.
func TestPendingVerdict(t *testing.T) {
	tests := []struct {
		b       *Bundle
		pending bool
		msg     string
	}{
		{&Bundle{State: StateWarming}, true, warmingMessage},
		{&Bundle{Identity: "spiffe://td/ns/a/sa/y", State: ZtunnelInitializing}, true, "ztunnel is still fetching the certificate of spiffe://td/ns/a/sa/y from the CA (state Initializing); if it stays so, check the ztunnel logs and istiod"},
		{&Bundle{Identity: "spiffe://td/ns/a/sa/z", State: "Unavailable: signing failed"}, false, `ztunnel has no certificate for spiffe://td/ns/a/sa/z (state "Unavailable: signing failed"); check the ztunnel logs and istiod`},
	}
	for _, tt := range tests {
		certs, v := Evaluate(tt.b, Expect{}, now)
		if len(certs) != 0 || v.OK || v.Pending != tt.pending || len(v.Checks) != 1 || v.Checks[0].Name != CheckState || v.Checks[0].Message != tt.msg {
			t.Errorf("%s: got %d certificates, verdict %+v", tt.b.State, len(certs), v)
		}
	}
}

func FuzzParseDump(f *testing.F) {
	for _, s := range []string{"{}", "[]", `{"certificates": [{"identity": "x", "state": "Available", "certChain": [{"pem": ""}]}]}`, `{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret", "name": "default"}]}`, `{"dynamicActiveSecrets": []}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		bs, _, err := ParseDump(data)
		if err != nil {
			return
		}
		for _, b := range bs {
			if len(b.Chain) > 0 && len(b.Roots) == 0 {
				t.Fatalf("chain without roots: %+v", b)
			}
			Evaluate(b, Expect{}, now)
		}
	})
}
