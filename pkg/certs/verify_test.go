package certs

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"reflect"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	other := newCA(t, "cluster.local", 2)
	rootFP := short(Fingerprint(ca.cert))
	valid := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(23*time.Hour+30*time.Minute))
	stuck := ca.leaf(t, spiffeDefault, now.Add(-20*time.Hour), now.Add(4*time.Hour))
	long := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(48*time.Hour))
	expired := ca.leaf(t, spiffeDefault, now.Add(-48*time.Hour), now.Add(-3*time.Hour))
	future := ca.leaf(t, spiffeDefault, now.Add(2*time.Hour), now.Add(26*time.Hour))
	foreign := other.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(48*time.Hour))
	// Expired before the root was (re-)created: no instant when both are valid.
	longGone := ca.leaf(t, spiffeDefault, now.Add(-96*time.Hour), now.Add(-72*time.Hour))
	wrongID := ca.leaf(t, "spiffe://cluster.local/ns/shop/sa/cart", now.Add(-time.Hour), now.Add(48*time.Hour))
	notIstio := ca.leaf(t, "https://example.com/x", now.Add(-time.Hour), now.Add(48*time.Hour))
	expect := Expect{Namespace: "default", ServiceAccount: "default"}
	chainOKMsg := fmt.Sprintf("chain verifies to root %q (SHA-256 %s)", "O=cluster.local", rootFP)
	identityOK := "identity " + spiffeDefault + " matches the pod's namespace and service account"

	tests := []struct {
		name     string
		leaf     *x509.Certificate
		expect   Expect
		want     []Check
		warnings []string
	}{
		{
			name:   "valid for two days",
			leaf:   long,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "a fresh 24h certificate does not warn",
			leaf:   valid,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 23h more (not after 2026-01-03T02:34:05Z)"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "under 24h and past its rotation point warns",
			leaf:   stuck,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 4h more (not after 2026-01-02T07:04:05Z)"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
			warnings: []string{"leaf certificate " + spiffeDefault + " expires in 4h (not after 2026-01-02T07:04:05Z)"},
		},
		{
			name:   "expired",
			leaf:   expired,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: false, Message: "leaf certificate " + spiffeDefault + " expired 3h ago (not after 2026-01-02T00:04:05Z); the proxy is not rotating it: check the istio-proxy logs and istiod"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "expired before the root began",
			leaf:   longGone,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: false, Message: "leaf certificate " + spiffeDefault + " expired 3d ago (not after 2025-12-30T03:04:05Z); the proxy is not rotating it: check the istio-proxy logs and istiod"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "not yet valid",
			leaf:   future,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: false, Message: "leaf certificate " + spiffeDefault + " is not valid until 2026-01-02T05:04:05Z (in 120m); check the clocks of the node and istiod"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "wrong root",
			leaf:   foreign,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: false, Message: fmt.Sprintf("chain does not verify to the trust root %q (SHA-256 %s): leaf issued by %q is signed by a different CA; the workload got its certificate from another CA than the one its peers trust (check the istio-ca-root-cert ConfigMap and istiod's cacerts)", "O=cluster.local", rootFP, "O=cluster.local")},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, OK: true, Message: identityOK},
			},
		},
		{
			name:   "wrong SPIFFE ID",
			leaf:   wrongID,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, OK: false, Message: `identity spiffe://cluster.local/ns/shop/sa/cart does not match the pod: expected namespace "default" and service account "default" (spiffe://cluster.local/ns/default/sa/default); the proxy is serving another workload's certificate`},
			},
		},
		{
			name:   "no SPIFFE ID",
			leaf:   notIstio,
			expect: expect,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, OK: false, Message: "leaf certificate has no SPIFFE ID (no spiffe:// URI SAN); it is not an Istio workload certificate"},
			},
		},
		{
			name: "no pod skips the identity check",
			leaf: wrongID,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, Skipped: true, Message: "no pod to compare; the leaf is spiffe://cluster.local/ns/shop/sa/cart (namespace shop, service account cart)"},
			},
		},
		{
			name: "no pod and no SPIFFE ID",
			leaf: notIstio,
			want: []Check{
				{Name: CheckChain, OK: true, Message: chainOKMsg},
				{Name: CheckValidity, OK: true, Message: "leaf valid now, for 2d more (not after 2026-01-04T03:04:05Z)"},
				{Name: CheckIdentity, Skipped: true, Message: "no pod to compare; the leaf has no SPIFFE ID (no spiffe:// URI SAN)"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &Bundle{Chain: []*x509.Certificate{tt.leaf}, Roots: []*x509.Certificate{ca.cert}}
			certs, v := Evaluate(b, tt.expect, now)
			if !reflect.DeepEqual(v.Checks, tt.want) {
				t.Errorf("checks:\n got %#v\nwant %#v", v.Checks, tt.want)
			}
			wantOK := true
			for _, c := range tt.want {
				wantOK = wantOK && (c.OK || c.Skipped)
			}
			if v.OK != wantOK {
				t.Errorf("OK = %v, want %v", v.OK, wantOK)
			}
			if !reflect.DeepEqual(v.Warnings, tt.warnings) {
				t.Errorf("warnings:\n got %q\nwant %q", v.Warnings, tt.warnings)
			}
			if len(certs) != 2 || certs[0].Role != RoleLeaf || certs[1].Role != RoleRoot {
				t.Errorf("roles: got %d certificates %v", len(certs), certs)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	leaf := ca.leaf(t, "spiffe://td.example/ns/shop/sa/cart", now.Add(-3*time.Hour), now.Add(time.Hour))
	got := Describe(leaf, RoleLeaf, now)
	want := Certificate{
		Role:               RoleLeaf,
		Subject:            "",
		Issuer:             "O=cluster.local",
		SPIFFEID:           "spiffe://td.example/ns/shop/sa/cart",
		Identity:           &SPIFFEID{TrustDomain: "td.example", Namespace: "shop", ServiceAccount: "cart"},
		Serial:             "0ABCDEF0123456789A",
		KeyType:            "ECDSA P-256",
		SignatureAlgorithm: "SHA256-RSA",
		NotBefore:          now.Add(-3 * time.Hour),
		NotAfter:           now.Add(time.Hour),
		TimeLeft:           time.Hour,
		TimeLeftSeconds:    3600,
		Status:             StatusExpiring,
		SHA256:             Fingerprint(leaf),
		cert:               leaf,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Describe:\n got %+v\nwant %+v", got, want)
	}
	root := Describe(ca.cert, RoleRoot, now)
	if root.KeyType != "RSA 2048" || !root.IsCA || root.Serial != "01" || root.Status != StatusValid {
		t.Errorf("root: %+v", root)
	}
}

func TestSerial(t *testing.T) {
	for _, tt := range []struct {
		in   *big.Int
		want string
	}{
		{big.NewInt(0), "00"},
		{big.NewInt(1), "01"},
		{big.NewInt(0xabc), "0ABC"},
		{big.NewInt(-0x1f), "-1F"},
		{nil, ""},
	} {
		if got := Serial(tt.in); got != tt.want {
			t.Errorf("Serial(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCompare(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	other := newCA(t, "cluster.local", 2)
	a := &Report{Workload: &Workload{Namespace: "default", Pod: "a"}, bundle: &Bundle{Chain: []*x509.Certificate{ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(time.Hour))}, Roots: []*x509.Certificate{ca.cert}}}
	b := &Report{Workload: &Workload{Namespace: "shop", Pod: "b"}, bundle: &Bundle{Chain: []*x509.Certificate{ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(time.Hour))}, Roots: []*x509.Certificate{ca.cert}}}
	c := &Report{Workload: &Workload{Namespace: "east", Pod: "c"}, bundle: &Bundle{Chain: []*x509.Certificate{other.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(time.Hour))}, Roots: []*x509.Certificate{other.cert}}}

	same := Compare(a, b)
	if !same.OK || !same.SharedRoot || same.Message != fmt.Sprintf(`default/a and shop/b share the root "O=cluster.local" (SHA-256 %s): mTLS between them can succeed`, short(Fingerprint(ca.cert))) {
		t.Errorf("same root: %+v", same)
	}
	diff := Compare(a, c)
	want := fmt.Sprintf("default/a and east/c do not share a root (%s vs %s): neither verifies the other's chain; mTLS between them will fail — give both meshes the same root (plug-in CA certificates in istio-system/cacerts)", short(Fingerprint(ca.cert)), short(Fingerprint(other.cert)))
	if diff.OK || diff.SharedRoot || diff.Message != want {
		t.Errorf("different roots:\n got %+v\nwant message %s", diff, want)
	}
}
