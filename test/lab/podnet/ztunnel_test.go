package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
)

// TestZtunnelDump is the node's ztunnel config_dump in ztunnel's format:
// one certificates[] entry per identity of the enrolled pods (two pods of
// one service account share it), sorted, PEM base64-encoded, serials in
// decimal, RFC 3339 times; an identity whose certificate is not there yet
// is Initializing. kubectl mesh certs reads it.
func TestZtunnelDump(t *testing.T) {
	ca, err := istioca.NewSelfSignedCA()
	if err != nil {
		t.Fatal(err)
	}
	nb := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	back, err := ca.Sign(istioca.SPIFFEID("shop", "backend"), nb, nb.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{amb: &ambient{certs: map[string]*istioca.Cert{istioca.SPIFFEID("shop", "backend"): back}, enrolled: map[netip.Addr]*pod{}}}
	for i, p := range []*pod{
		{namespace: "shop", name: "backend-app-2", sa: "backend"},
		{namespace: "shop", name: "backend-app-1", sa: "backend"},
		{namespace: "shop", name: "frontend-app-1", sa: "frontend"},
	} {
		d.amb.enrolled[netip.AddrFrom4([4]byte{10, 244, 0, byte(i + 1)})] = p
	}
	b, err := d.ztunnelDump("node1")
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Workloads []struct {
			Name        string   `json:"name"`
			WorkloadIPs []string `json:"workloadIps"`
			Protocol    string   `json:"protocol"`
		} `json:"workloads"`
		Certificates []struct {
			Identity  string `json:"identity"`
			State     string `json:"state"`
			CertChain []struct {
				SerialNumber, ValidFrom, ExpirationTime string
			} `json:"certChain"`
			RootCerts []struct{ SerialNumber string } `json:"rootCerts"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range raw.Workloads {
		got = append(got, fmt.Sprintf("workload %s %v %s", w.Name, w.WorkloadIPs, w.Protocol))
	}
	for _, c := range raw.Certificates {
		got = append(got, fmt.Sprintf("cert %s %s", c.Identity, c.State))
		for _, x := range c.CertChain {
			got = append(got, fmt.Sprintf("  chain %s %s %s", x.SerialNumber, x.ValidFrom, x.ExpirationTime))
		}
		for _, x := range c.RootCerts {
			got = append(got, "  root "+x.SerialNumber)
		}
	}
	want := []string{
		"workload backend-app-1 [10.244.0.2] HBONE",
		"workload backend-app-2 [10.244.0.1] HBONE",
		"workload frontend-app-1 [10.244.0.3] HBONE",
		"cert spiffe://cluster.local/ns/shop/sa/backend Available",
		"  chain " + back.Leaf().SerialNumber.String() + " 2026-01-02T03:04:05Z 2026-01-03T03:04:05Z",
		"  root " + ca.Cert.SerialNumber.String(),
		"cert spiffe://cluster.local/ns/shop/sa/frontend Initializing",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("dump:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	bundles, kind, err := certs.ParseDump(b)
	if err != nil {
		t.Fatal(err)
	}
	if kind != certs.DumpZtunnel || len(bundles) != 2 {
		t.Fatalf("certs read %d bundles of a %s dump", len(bundles), kind)
	}
	bb := bundles[0]
	if bb.Identity != istioca.SPIFFEID("shop", "backend") || len(bb.Chain) != 1 || !bb.Chain[0].Equal(back.Leaf()) || len(bb.Roots) != 1 || !bb.Roots[0].Equal(ca.Cert) {
		t.Errorf("certs read the backend's bundle as %s, %d chain, %d roots", bb.Identity, len(bb.Chain), len(bb.Roots))
	}
	if bundles[1].State != certs.ZtunnelInitializing || len(bundles[1].Chain) != 0 {
		t.Errorf("certs read the frontend's bundle as %s with %d certificates", bundles[1].State, len(bundles[1].Chain))
	}
}
