package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

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

// TestAmbientCapture applies istio-cni's rules as podnet does: which pods
// get a network outside the workshop's namespaces, and which ztunnel
// carries (only while a Ready ztunnel pod runs on the node).
func TestAmbientCapture(t *testing.T) {
	nsIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		_ = nsIdx.Add(ns)
	}
	running := func(ns, name, app string, labels, annotations map[string]string, sidecar bool) *corev1.Pod {
		l := map[string]string{"app": app}
		for k, v := range labels {
			l[k] = v
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l, Annotations: annotations},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.9"}}
		if sidecar {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
			p.Annotations = map[string]string{"sidecar.istio.io/status": "{}"}
		}
		return p
	}
	pods := []*corev1.Pod{
		running("shop", "backend", AppBackend, nil, nil, false),
		running("shop", "legacy", AppBackend, nil, nil, true),
		running("shop", "batch", AppFrontend, map[string]string{"istio.io/dataplane-mode": "none"}, nil, false),
		running("plain", "frontend", AppFrontend, nil, nil, false),
		running("plain", "opted-in", AppFrontend, map[string]string{"istio.io/dataplane-mode": "ambient"}, nil, false),
		running("istio-system", "ztunnel-x", AppZtunnel, nil, nil, false),
	}
	podIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		_ = podIdx.Add(p)
	}
	d := &daemon{amb: &ambient{namespaces: corelisters.NewNamespaceLister(nsIdx)}, pods: corelisters.NewPodLister(podIdx)}
	var got []string
	for _, p := range pods {
		got = append(got, fmt.Sprintf("%s/%s wanted=%t captured=%t", p.Namespace, p.Name, d.wantedAmbient(p), d.captured(p)))
	}
	want := []string{
		"shop/backend wanted=true captured=true",
		"shop/legacy wanted=true captured=false",
		"shop/batch wanted=true captured=false",
		"plain/frontend wanted=false captured=false",
		"plain/opted-in wanted=true captured=true",
		"istio-system/ztunnel-x wanted=true captured=false",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The ztunnel pod is Running but not Ready yet: nothing is carried.
	if d.ztunnelReady() {
		t.Error("a ztunnel pod that is not Ready counts as ready")
	}
	z := pods[len(pods)-1].DeepCopy()
	z.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	_ = podIdx.Update(z)
	if !d.ztunnelReady() {
		t.Error("a Ready ztunnel pod does not count")
	}
	z.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	_ = podIdx.Update(z)
	if d.ztunnelReady() {
		t.Error("a terminating ztunnel pod counts as ready")
	}
}
