package verify

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

func TestCombine(t *testing.T) {
	const (
		plain = string(sniff.VerdictPlaintext)
		istio = string(sniff.VerdictEncryptedIstio)
		tls   = string(sniff.VerdictEncryptedTLS)
		unpr  = string(sniff.VerdictEncryptedUnproven)
		nod   = string(sniff.VerdictNoData)
		mixed = string(sniff.VerdictMixed)
		unk   = string(sniff.VerdictUnknown)
	)
	tests := []struct{ a, b, want string }{
		{istio, istio, istio},
		{istio, nod, istio},
		{nod, plain, plain},
		{istio, plain, mixed},
		{plain, tls, mixed},
		{istio, unpr, unpr},
		{unpr, istio, unpr},
		{tls, istio, tls},
		{istio, unk, unk},
		{mixed, istio, mixed},
	}
	for _, tc := range tests {
		if got := combine(tc.a, tc.b); got != tc.want {
			t.Errorf("combine(%s, %s) = %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
}

func testPod(ns, name, ip string, labels map[string]string, sidecar bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:   corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, HostIP: "10.243.0.2"}}
	if sidecar {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
	}
	return p
}

// testInventory: web (meshed, 10.0.0.1 and 10.0.0.2) behind Service web
// (port 80 → 8080), db (no sidecar, 10.0.0.3), a client outside the scope.
func testInventory() *inventory {
	web := &workload{row: WorkloadRow{Namespace: "shop", Workload: "web", Mesh: MeshSidecar, MTLS: "PERMISSIVE", MatchLabels: map[string]string{"app": "web"}},
		pods: []*corev1.Pod{testPod("shop", "web-1", "10.0.0.1", map[string]string{"app": "web"}, true), testPod("shop", "web-2", "10.0.0.2", map[string]string{"app": "web"}, true)}}
	db := &workload{row: WorkloadRow{Namespace: "shop", Workload: "db", Mesh: MeshNone, MTLS: "PERMISSIVE"},
		pods: []*corev1.Pod{testPod("shop", "db-1", "10.0.0.3", map[string]string{"app": "db"}, false)}}
	inv := &inventory{workloads: []*workload{web, db}, byPodIP: map[netip.Addr]*workload{}, byClusterIP: map[netip.Addr]*corev1.Service{},
		nodeIPs: map[netip.Addr]string{netip.MustParseAddr("10.243.0.2"): "node1"}}
	for _, w := range inv.workloads {
		for _, p := range w.pods {
			inv.byPodIP[netip.MustParseAddr(p.Status.PodIP)] = w
		}
	}
	inv.services = []corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}, {Port: 9090}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "db"}, ClusterIPs: []string{"10.96.0.11"},
			Ports: []corev1.ServicePort{{Port: 5432}}}},
	}
	for i := range inv.services {
		inv.byClusterIP[netip.MustParseAddr(inv.services[i].Spec.ClusterIPs[0])] = &inv.services[i]
	}
	inv.outside = func() map[netip.Addr]outsidePod {
		return map[netip.Addr]outsidePod{netip.MustParseAddr("10.0.1.5"): {name: "batch/cron"}}
	}
	return inv
}

func fl(src, dst string, v sniff.Verdict, packets int) sniff.FlowSummary {
	return sniff.FlowSummary{Src: src, Dst: dst, Transport: "tcp", Protocol: "TLS", Verdict: v, Packets: packets, Bytes: packets * 10, Evidence: fmt.Sprintf("%d packets", packets)}
}

func TestEdges(t *testing.T) {
	inv := testInventory()
	seen := map[string]int{}
	// node1 and node2 both see web-1 → web-2 (one flow, kept once, the
	// bigger view); the Service address resolves to web:8080.
	flows := mergeFlows(nil, []sniff.FlowSummary{
		fl("10.0.0.1:4000", "10.0.0.2:8080", sniff.VerdictEncryptedIstio, 10),
		fl("10.0.1.5:5000", "10.96.0.10:80", sniff.VerdictPlaintext, 4),
		fl("10.0.0.2:4001", "10.0.0.3:5432", sniff.VerdictPlaintext, 6),
		fl("10.243.0.2:6000", "10.0.0.1:8080", sniff.VerdictPlaintext, 2),
		fl("192.0.2.7:7000", "10.0.0.2:8080", sniff.VerdictNoData, 1),
	}, seen, "a")
	flows = mergeFlows(flows, []sniff.FlowSummary{
		fl("10.0.0.1:4000", "10.0.0.2:8080", sniff.VerdictEncryptedIstio, 12),
		fl("10.0.0.1:4002", "10.0.0.2:8080", sniff.VerdictEncryptedUnproven, 3),
	}, seen, "a")
	edges := inv.edges(flows)
	captured := map[*workload]bool{inv.workloads[0]: true, inv.workloads[1]: true}
	edges = append(edges, inv.predicted(edges, captured)...)
	sortEdges(edges)
	var got []string
	for _, e := range edges {
		got = append(got, fmt.Sprintf("%s → %s %s %d/%d flows=%d meshed=%t,%t", e.Src, e.DstName(), e.Verdict, e.Packets, e.Bytes, e.Flows, e.SrcMeshed, e.DstMeshed))
	}
	want := []string{
		"* → shop/web:9090 (service shop/web) unproven 0/0 flows=0 meshed=false,true",
		"batch/cron → shop/web:8080 (service shop/web) plaintext 4/40 flows=1 meshed=false,true",
		"external 192.0.2.7 → shop/web:8080 no-data 1/10 flows=1 meshed=false,true",
		"node node1 → shop/web:8080 plaintext 2/20 flows=1 meshed=false,true",
		"shop/web → shop/db:5432 plaintext 6/60 flows=1 meshed=true,false",
		"shop/web → shop/web:8080 encrypted-unproven 15/150 flows=2 meshed=true,true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	strict := strictReadiness(inv, "", edges)
	if len(strict) != 1 || strict[0].Ready || len(strict[0].Clients) != 2 {
		t.Fatalf("strict readiness: %+v, want web with two clients", strict)
	}
	var clients []string
	for _, c := range strict[0].Clients {
		clients = append(clients, c.String(strict[0].Workload))
	}
	wantClients := "batch/cron → shop/web:8080, no sidecar\nnode node1 → shop/web:8080, from the node, not a probe Istio rewrites"
	if strings.Join(clients, "\n") != wantClients {
		t.Errorf("clients:\n%s\nwant:\n%s", strings.Join(clients, "\n"), wantClients)
	}
}

func TestStrictYAML(t *testing.T) {
	res := &Result{Strict: []StrictWorkload{
		{Workload: "shop/web", Ready: true, namespace: "shop", matchLabels: map[string]string{"app": "web"}},
		{Workload: "shop/api", Ready: false, namespace: "shop", matchLabels: map[string]string{"app": "api"}},
		{Workload: "blog/cms", Ready: true, namespace: "blog", matchLabels: map[string]string{"app": "cms"}},
	}}
	got, err := StrictYAML(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: blog
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: web-strict
  namespace: shop
spec:
  mtls:
    mode: STRICT
  selector:
    matchLabels:
      app: web
`
	if got != want {
		t.Errorf("StrictYAML:\n%s\nwant:\n%s", got, want)
	}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name string
		res  Result
		want string
	}{
		{"proven", Result{Wire: WireSection{Edges: []Edge{{Src: "a/x", Dst: "a/y", Port: 80, Verdict: "encrypted-istio", SrcMeshed: true, DstMeshed: true}}}}, "PROVEN 0"},
		{"plaintext between meshed", Result{Wire: WireSection{Edges: []Edge{{Src: "a/x", Dst: "a/y", Port: 80, Verdict: "plaintext", SrcMeshed: true, DstMeshed: true}}}},
			"FAILED 2 a/x → a/y:80 is plaintext between meshed workloads"},
		{"plaintext from outside is no failure", Result{Wire: WireSection{Edges: []Edge{{Src: "b/z", Dst: "a/y", Port: 80, Verdict: "plaintext", DstMeshed: true}}}}, "PROVEN 0"},
		{"unmeshed", Result{Workloads: []WorkloadRow{{Namespace: "a", Workload: "x", Mesh: MeshNone}, {Namespace: "kube-system", Workload: "dns", Mesh: MeshNone, System: true}}},
			"FAILED 2 a/x is not in the mesh (no sidecar, not ambient)"},
		{"idle edge", Result{Wire: WireSection{Edges: []Edge{{Src: "*", Dst: "a/y", Port: 80, Verdict: EdgeUnproven}}}},
			"UNPROVEN 3 no traffic to a/y:80 during the capture: make a client call it, or widen --duration"},
		{"unknown between meshed is unproven", Result{Wire: WireSection{Edges: []Edge{{Src: "a/x", Dst: "a/y", Port: 80, Verdict: "unknown", Evidence: "unrecognised payload", SrcMeshed: true, DstMeshed: true}}}},
			"UNPROVEN 3 a/x → a/y:80 is unknown, not proven to be Istio mTLS (unrecognised payload): capture again, or longer (--duration)"},
		{"TLS that is not Istio's between meshed is unproven", Result{Wire: WireSection{Edges: []Edge{{Src: "a/x", Dst: "a/y", Port: 443, Verdict: "encrypted-tls", Evidence: "ClientHello SNI example.com", SrcMeshed: true, DstMeshed: true}}}},
			"UNPROVEN 3 a/x → a/y:443 is encrypted-tls, not proven to be Istio mTLS (ClientHello SNI example.com): capture again, or longer (--duration)"},
		{"node not captured", Result{Wire: WireSection{Nodes: []NodeRow{{Node: "n2", Error: "no SSH"}}}}, "UNPROVEN 3 node n2 not captured: no SSH"},
		{"unread identity", Result{Identities: IdentitySection{Rows: []IdentityRow{{Workload: "a/x", Problem: "unreachable"}}}}, "UNPROVEN 3 identity of a/x not read: unreachable"},
		{"bad identity wins", Result{Identities: IdentitySection{Rows: []IdentityRow{{Workload: "a/x", Read: true, Problem: "expired"}}}, Wire: WireSection{Skipped: "--no-capture"}},
			"FAILED 2 identity of a/x: expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.res
			r.judge()
			got := fmt.Sprintf("%s %d", r.Verdict, r.ExitCode)
			if len(r.Failures) > 0 {
				got += " " + strings.Join(r.Failures, "; ")
			} else if len(r.Unproven) > 0 {
				got += " " + strings.Join(r.Unproven, "; ")
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPredictedAmbient: an ambient workload's Service ports travel inside
// HBONE to its 15008, so Istio HBONE reaching it covers them and its
// absence leaves them unproven; a waypoint's status port predicts nothing.
func TestPredictedAmbient(t *testing.T) {
	api := &workload{row: WorkloadRow{Namespace: "shop", Workload: "api", Mesh: MeshAmbient}, pods: []*corev1.Pod{testPod("shop", "api-1", "10.0.0.5", map[string]string{"app": "api"}, false)}}
	wp := &workload{row: WorkloadRow{Namespace: "shop", Workload: "waypoint", Mesh: MeshGateway}, pods: []*corev1.Pod{testPod("shop", "waypoint-1", "10.0.0.6", map[string]string{"gw": "waypoint"}, true)}}
	inv := &inventory{workloads: []*workload{api, wp}, services: []corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "waypoint"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"gw": "waypoint"}, Ports: []corev1.ServicePort{{Port: 15021}, {Port: 15008}}}},
	}}
	captured := map[*workload]bool{api: true, wp: true}
	names := func(es []Edge) string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s:%d", e.Dst, e.Port))
		}
		return strings.Join(out, " ")
	}
	hbone := []Edge{
		{Src: "shop/web", Dst: "shop/waypoint", Port: 15008, Verdict: string(sniff.VerdictEncryptedIstio)},
		{Src: "shop/waypoint", Dst: "shop/api", Port: 15008, Verdict: string(sniff.VerdictEncryptedIstio)},
	}
	if got := names(inv.predicted(hbone, captured)); got != "" {
		t.Errorf("with HBONE to both: predicted %q, want none", got)
	}
	if got := names(inv.predicted(hbone[:1], captured)); got != "shop/api:80" {
		t.Errorf("without HBONE to api: predicted %q, want shop/api:80", got)
	}
	unproven := []Edge{hbone[0], {Src: "shop/waypoint", Dst: "shop/api", Port: 15008, Verdict: string(sniff.VerdictUnknown)}}
	if got := names(inv.predicted(unproven, captured)); got != "shop/api:80" {
		t.Errorf("with unknown bytes to api's 15008: predicted %q, want shop/api:80", got)
	}
}
