package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestStatusAmbient: a namespace moved from sidecars to ambient as Istio's
// migration guide does, with a pod still carrying its sidecar, a pod opted
// out, a captured pod, and a waypoint label naming a Gateway that does not
// exist and then does. Before a ztunnel runs on the node (when the lab runs
// none of its own) status names the node; once a ztunnel DaemonSet's pod
// is ready there, the captured pod shows it.
func TestStatusAmbient(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	env.Deployment(t, ns, "legacy", nil, 1) // injected by istiod: a sidecar
	patch := `{"metadata":{"labels":{"istio-injection":null,"istio.io/dataplane-mode":"ambient","istio.io/use-waypoint":"waypoint"}}}`
	if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Deployment(t, ns, "web", nil, 1)
	env.Deployment(t, ns, "batch", map[string]string{"istio.io/dataplane-mode": "none"}, 1)
	api := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", Labels: map[string]string{"istio.io/use-waypoint": "api-waypoint"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := env.Kube.CoreV1().Services(ns).Create(ctx, api, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	webPods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(webPods.Items) != 1 || webPods.Items[0].Spec.NodeName == "" {
		t.Fatalf("web pods: %v %v", webPods, err)
	}
	node := webPods.Items[0].Spec.NodeName

	status := func(args ...string) (inject.Report, labtest.Result) {
		t.Helper()
		res := env.Mesh(t, append([]string{"status", "-n", ns}, args...)...)
		if res.ExitCode != 0 || res.Stderr != "" {
			t.Fatalf("status %v: exit %d, %v\nstderr:\n%s", args, res.ExitCode, res.Err, res.Stderr)
		}
		var rep inject.Report
		if len(args) > 0 && args[len(args)-1] == "json" {
			if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
				t.Fatal(err)
			}
		}
		return rep, res
	}
	// pods is each pod as APP DATAPLANE ZTUNNEL? PROBLEM, sorted by name.
	pods := func(rep inject.Report) string {
		var out []string
		for _, p := range rep.AmbientPods {
			app := p.Name[:strings.Index(p.Name, "-")]
			out = append(out, fmt.Sprintf("%s %s ztunnel=%v %q", app, p.Dataplane, p.Ztunnel != "", p.Problem))
		}
		return strings.Join(out, "\n")
	}
	const sidecarRow = `batch opted-out ztunnel=false ""
legacy sidecar ztunnel=false "the sidecar takes precedence: Istio does not redirect a pod with a sidecar to ztunnel"
`
	sidecarProblem := "1 pod with a sidecar (the sidecar takes precedence over ambient)"

	// Another test's ztunnel may still be going away with its namespace.
	labZtunnel := true
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		labZtunnel = len(readyZtunnelOn(t, env, node)) > 0
		return !labZtunnel, nil
	})
	if labZtunnel {
		t.Logf("the lab runs a ztunnel on %s: the no-ztunnel case is covered by the unit tests only", node)
	} else {
		rep, _ := status("-o", "json")
		want := sidecarRow + `web ambient ztunnel=false "no ready ztunnel on node ` + node + `"`
		if got := pods(rep); got != want {
			t.Fatalf("pods without ztunnel:\n%s\nwant\n%s", got, want)
		}
		if got, want := fmt.Sprint(rep.Ambient[0].Problems), fmt.Sprint([]string{"no ztunnel on node " + node + " (1 pod not captured)",
			"waypoint " + ns + "/waypoint missing", "service api: waypoint " + ns + "/api-waypoint missing", sidecarProblem}); got != want {
			t.Fatalf("problems = %s, want %s", got, want)
		}
	}

	// A ztunnel DaemonSet, its pod run by the lab's node like any other.
	ztunnelNS := env.Namespace(t, nil)
	zero := int64(0)
	z := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ztunnelNS, Name: "ztunnel"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "istio-proxy", Image: "istio/ztunnel"}}}}}}
	if _, err := env.Kube.AppsV1().DaemonSets(ztunnelNS).Create(ctx, z, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := env.Kube.AppsV1().DaemonSets(ztunnelNS).Get(ctx, "ztunnel", metav1.GetOptions{})
		return err == nil && d.Status.NumberReady == 1, err
	}); err != nil {
		t.Fatal("ztunnel never ready:", err)
	}

	rep, _ := status("-o", "json")
	want := sidecarRow + `web ambient ztunnel=true ""`
	if got := pods(rep); got != want {
		t.Fatalf("pods with ztunnel:\n%s\nwant\n%s", got, want)
	}
	amb := rep.Ambient[0]
	if got, want := fmt.Sprint(amb.Problems), fmt.Sprint([]string{"waypoint " + ns + "/waypoint missing", "service api: waypoint " + ns + "/api-waypoint missing", sidecarProblem}); got != want {
		t.Fatalf("problems = %s, want %s", got, want)
	}
	if got := fmt.Sprint(amb.ServiceWaypoints); got != fmt.Sprintf("[{api {%s api-waypoint missing  <nil>}}]", ns) {
		t.Fatalf("service waypoints = %s", got)
	}
	_, res := status()
	row := strings.Fields(regexp.MustCompile(`(?m)^` + ns + `\s+namespace\s.*$`).FindString(res.Stdout))
	if got, want := strings.Join(row[:8], " "), ns+" namespace 1/3 1 1 waypoint (missing) 1"; got != want {
		t.Fatalf("ambient row = %q, want %q\n%s", got, want, res.Stdout)
	}

	// The waypoints appear.
	for _, name := range []string{"waypoint", "api-waypoint"} {
		gw := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
			"metadata": map[string]any{"namespace": ns, "name": name, "labels": map[string]any{"istio.io/waypoint-for": "service"}},
			"spec": map[string]any{"gatewayClassName": "istio-waypoint",
				"listeners": []any{map[string]any{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}}}}}
		if _, err := env.Dynamic.Resource(traffic.Gateways).Namespace(ns).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating gateway %s: %v", name, err)
		}
	}
	// istiod deploys and programs them: until then status says which part
	// is missing, then ok; their proxies are not workloads with a sidecar.
	var got string
	want = fmt.Sprintf("%[1]s/waypoint ok 1 [{api {%[1]s api-waypoint ok  <nil>}}] [%s]", ns, sidecarProblem)
	seen := map[string]bool{}
	trEventually(t, func() bool {
		rep, _ = status("-o", "json")
		amb = rep.Ambient[0]
		seen[amb.Waypoint.State] = true
		ready := -1
		if amb.Waypoint.ReadyPods != nil {
			ready = *amb.Waypoint.ReadyPods
		}
		for i := range amb.ServiceWaypoints {
			amb.ServiceWaypoints[i].Waypoint.ReadyPods = nil // printed as pointers otherwise
		}
		got = fmt.Sprint(amb.Waypoint, " ", amb.Waypoint.State, " ", ready, " ", amb.ServiceWaypoints, " ", amb.Problems)
		return got == want
	})
	if got != want {
		t.Fatalf("with the waypoints: %s\nwant %s", got, want)
	}
	for st := range seen {
		if st != "ok" && st != "not programmed" && st != "no ready pod" {
			t.Errorf("waypoint state on the way: %q", st)
		}
	}
	if ns := rep.Namespaces[0]; ns.Workloads != 3 || ns.WorkloadsWithSidecar != 1 {
		t.Errorf("workloads %d, with sidecar %d: want 3 and 1 (the waypoints are not workloads with a sidecar)", ns.Workloads, ns.WorkloadsWithSidecar)
	}
	_, res = status("-o", "wide")
	if n := len(regexp.MustCompile(`(?m)^`+ns+`/(api-)?waypoint-\S+\s+node\d\s+waypoint proxy\s`).FindAllString(res.Stdout, -1)); n != 2 {
		t.Errorf("%d waypoint proxy rows, want 2\n%s", n, res.Stdout)
	}
	var ztunnelRow []string
	for _, l := range strings.Split(res.Stdout, "\n") {
		if strings.HasPrefix(l, ns+"/web-") {
			ztunnelRow = strings.Fields(l)
		}
	}
	// POD NODE ambient (namespace label) ZTUNNEL PROBLEM
	if len(ztunnelRow) != 7 || ztunnelRow[1] != node || ztunnelRow[2] != "ambient" || !readyZtunnelOn(t, env, node)[ztunnelRow[5]] || ztunnelRow[6] != "-" {
		t.Fatalf("wide pod row = %q\n%s", ztunnelRow, res.Stdout)
	}

	// A namespace admin may list neither ztunnel's pods in other namespaces
	// nor Gateways: both are notes, and the table says what is unknown.
	_, kc := namespaceAdmin(t, env, ns)
	res = env.Mesh(t, "--kubeconfig", kc, "status", "-n", ns)
	wantNotes := unchecked + `note: could not check PeerAuthentications (mTLS modes are shown as unknown); a ClusterRole and ClusterRoleBinding granting "list" on peerauthentications.security.istio.io would let it
note: could not check the waypoint Gateways (waypoints named by istio.io/use-waypoint are shown as unchecked); a ClusterRole and ClusterRoleBinding granting "list" on gateways.gateway.networking.k8s.io would let it
note: could not check the ztunnel pods (whether a ready ztunnel runs on each ambient pod's node is not known); a ClusterRole and ClusterRoleBinding granting "list" on pods would let it
`
	if res.ExitCode != 0 || res.Stderr != wantNotes {
		t.Fatalf("status as namespace admin: exit %d, %v\nstderr:\n%s\nwant\n%s", res.ExitCode, res.Err, res.Stderr, wantNotes)
	}
	row = strings.Fields(regexp.MustCompile(`(?m)^` + ns + `\s+namespace\s.*$`).FindString(res.Stdout))
	if got, want := strings.Join(row, " "), ns+" namespace 1/3 1 1 waypoint (unchecked) 1 "+sidecarProblem; got != want {
		t.Fatalf("ambient row as namespace admin = %q, want %q\n%s", got, want, res.Stdout)
	}
}

// readyZtunnelOn is the set of ready ztunnel pods (NAMESPACE/NAME) on node:
// status names one of them.
func readyZtunnelOn(t *testing.T, env *labtest.Env, node string) map[string]bool {
	t.Helper()
	list, err := env.Kube.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{LabelSelector: "app=ztunnel", FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatalf("ztunnel pods on %s: %v", node, err)
	}
	out := map[string]bool{}
	for i := range list.Items {
		if p := &list.Items[i]; mesh.PodLive(p) && mesh.PodReady(p) {
			out[p.Namespace+"/"+p.Name] = true
		}
	}
	return out
}
