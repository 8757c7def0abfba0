package e2e

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// ambBackendApp is trBackendApp in a namespace enrolled in ambient mode.
// It returns the namespace and the first pod of the Service by name (the
// one split names as evidence).
func ambBackendApp(t *testing.T, env *labtest.Env) (string, string) {
	t.Helper()
	ns := env.Namespace(t, map[string]string{"istio.io/dataplane-mode": "ambient"})
	trService(t, env, ns, "backend", map[string]string{"app": "backend"})
	env.Deployment(t, ns, "backend-v1", map[string]string{"app": "backend", "version": "v1"}, 1)
	env.Deployment(t, ns, "backend-v2", map[string]string{"app": "backend", "version": "v2"}, 1)
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=backend"})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods of backend: %v (%d)", err, len(pods.Items))
	}
	names := []string{pods.Items[0].Name, pods.Items[1].Name}
	sort.Strings(names)
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			if c.Name == "istio-proxy" {
				t.Fatalf("pod %s got a sidecar in an ambient namespace", p.Name)
			}
		}
	}
	return ns, names[0]
}

// ambWaypoint creates waypoint Gateway name in ns, as istioctl waypoint
// apply writes it, with istio.io/waypoint-for set to forType.
func ambWaypoint(t *testing.T, env *labtest.Env, ns, name, forType string) {
	t.Helper()
	trApply(t, env, traffic.Gateways, ns, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: %s
  labels:
    istio.io/waypoint-for: %s
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`, name, forType))
}

func ambLabelNamespace(t *testing.T, env *labtest.Env, ns, waypoint string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"istio.io/use-waypoint":%q}}}`, waypoint)
	if _, err := env.Kube.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestSplitAmbient: in an ambient namespace split refuses until a waypoint
// serves the Service, and leaves the cluster untouched; --force writes
// with a warning; a waypoint label naming no Gateway, or a Gateway for
// workloads only, is refused with that reason; with a waypoint for
// services both the VirtualService and the Gateway API route (parent: the
// Service) are written.
func TestSplitAmbient(t *testing.T) {
	env := labtest.Get(t)
	ns, pod := ambBackendApp(t, env)
	ambient := fmt.Sprintf("namespace %s has istio.io/dataplane-mode=ambient and pod %s has no sidecar", ns, pod)
	refusal := func(reason, fix string) string {
		return fmt.Sprintf("error: service %s/backend is in ambient mode (%s), where only a waypoint applies L7 routes, and no waypoint serves it: %s; Istio would ignore this split. %s, then split again; or pass --force to write the route anyway\n",
			ns, ambient, reason, fix)
	}
	noLabel := fmt.Sprintf("neither the service nor namespace %s has the label istio.io/use-waypoint", ns)
	create := fmt.Sprintf("Create one with: kubectl mesh enable-injection %[1]s --ambient --waypoint (or: istioctl waypoint apply -n %[1]s --enroll-namespace)", ns)
	table5050 := "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/1\n"
	created := "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\n"

	refused := func(step string, args []string, stderr string) {
		t.Helper()
		res := env.Mesh(t, append(args, "-n", ns)...)
		if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != stderr {
			t.Errorf("%s: exit %d\nstdout %q\nstderr %q\nwant   %q", step, res.ExitCode, res.Stdout, res.Stderr, stderr)
		}
		if got := trObjects(t, env, ns); got != "" {
			t.Errorf("%s: refused split wrote objects: %s", step, got)
		}
	}

	// No waypoint at all.
	refused("no waypoint", []string{"split", "backend", "50/50"}, refusal(noLabel, create))
	refused("no waypoint, server dry run", []string{"split", "backend", "50/50", "--dry-run=server"}, refusal(noLabel, create))

	// --force writes, with the warning; undo takes it back.
	res := env.Mesh(t, "split", "backend", "50/50", "--force", "-n", ns)
	warning := fmt.Sprintf("warning: service %s/backend is in ambient mode and no waypoint serves it (%s): Istio ignores this route until one does. %s\n", ns, noLabel, create)
	if res.ExitCode != 0 || res.Stdout != table5050 || res.Stderr != created+warning {
		t.Errorf("--force: exit %d\nstdout %q\nstderr %q\nwant   %q", res.ExitCode, res.Stdout, res.Stderr, created+warning)
	}
	vs := trGet(t, env, traffic.VirtualServices, ns, "backend")
	if got, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http"); len(got) != 1 {
		t.Errorf("--force wrote http routes %v", got)
	}
	if res = env.Mesh(t, "split", "backend", "--undo", "-n", ns); res.ExitCode != 0 {
		t.Fatalf("undo: %v\n%s", res.Err, res.Stderr)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Fatalf("undo left objects: %s", got)
	}

	// The namespace names a waypoint that does not exist.
	ambLabelNamespace(t, env, ns, "waypoint")
	via := fmt.Sprintf("namespace %s has istio.io/use-waypoint=waypoint", ns)
	refused("missing gateway", []string{"split", "backend", "50/50"}, refusal(
		fmt.Sprintf("%s, and no Gateway %s/waypoint exists", via, ns),
		fmt.Sprintf("Create it with: kubectl mesh enable-injection %[1]s --ambient --waypoint=waypoint (or: istioctl waypoint apply -n %[1]s --name waypoint)", ns)))

	// A waypoint for workloads only serves no Service traffic.
	ambWaypoint(t, env, ns, "waypoint", "workload")
	refused("workload waypoint", []string{"split", "backend", "50/50"}, refusal(
		fmt.Sprintf("%s, and Gateway %s/waypoint sets istio.io/waypoint-for=workload, so it serves no traffic addressed to services", via, ns),
		fmt.Sprintf("Label it for services: kubectl label gateway waypoint -n %s istio.io/waypoint-for=service --overwrite", ns)))

	// Relabelled for services: split writes as in a sidecar namespace.
	patch := []byte(`{"metadata":{"labels":{"istio.io/waypoint-for":"service"}}}`)
	if _, err := env.Dynamic.Resource(traffic.Gateways).Namespace(ns).Patch(context.Background(), "waypoint", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Until istiod has programmed the waypoint split notes it (the unit
	// tests compare those notes); once it has, split writes and says nothing.
	trEventually(t, func() bool {
		gw := trGet(t, env, traffic.Gateways, ns, "waypoint")
		addrs, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses")
		ok, _ := mesh.WaypointProgrammed(gw)
		return ok && len(addrs) > 0
	})
	res = env.Mesh(t, "split", "backend", "50/50", "-n", ns)
	wantErr := created
	if res.ExitCode != 0 || res.Stdout != table5050 || res.Stderr != wantErr {
		t.Errorf("with waypoint: exit %d\nstdout %q\nstderr %q\nwant   %q", res.ExitCode, res.Stdout, res.Stderr, wantErr)
	}
	if res = env.Mesh(t, "split", "backend", "--undo", "-n", ns); res.ExitCode != 0 {
		t.Fatalf("undo: %v\n%s", res.Err, res.Stderr)
	}

	// Gateway API: the HTTPRoute's parent is the Service, which the
	// waypoint serves (GAMMA).
	res = env.Mesh(t, "split", "backend", "90/10", "--api", "gateway", "--create-services", "-n", ns)
	if res.ExitCode != 0 {
		t.Fatalf("--api gateway: %v\n%s", res.Err, res.Stderr)
	}
	route := trGet(t, env, traffic.HTTPRoutes, ns, "backend")
	refs, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
	want := []interface{}{map[string]interface{}{"group": "", "kind": "Service", "name": "backend"}}
	if !reflect.DeepEqual(refs, want) {
		t.Errorf("httproute parentRefs = %v, want %v", refs, want)
	}
	if want := "ROUTE      SUBSET   WEIGHT   READY PODS\nrules[0]   v1       90       1/1\nrules[0]   v2       10       1/1\n"; res.Stdout != want {
		t.Errorf("--api gateway table:\n%s\nwant:\n%s", res.Stdout, want)
	}
}

// TestSplitAmbientGatewayForbidden: a user who may not read Gateways
// cannot have the waypoint checked, so split refuses (naming the
// permission) unless --force.
func TestSplitAmbientGatewayForbidden(t *testing.T) {
	env := labtest.Get(t)
	ns, pod := ambBackendApp(t, env)
	ambLabelNamespace(t, env, ns, "waypoint")
	ambWaypoint(t, env, ns, "waypoint", "service")
	user := "amb-" + ns[len(ns)-4:]
	env.Grant(t, ns, "split-no-gateways", user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"networking.istio.io"}, Resources: []string{"virtualservices", "destinationrules"}, Verbs: []string{"get", "list", "create", "update"}},
	})
	env.Grant(t, "", "split-ns-read-"+ns, user, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}})
	kc := env.UserKubeconfig(t, user, nil)

	want := fmt.Sprintf("error: service %[1]s/backend is in ambient mode (namespace %[1]s has istio.io/dataplane-mode=ambient and pod %[2]s has no sidecar), where only a waypoint applies L7 routes, and no waypoint serves it: "+
		"namespace %[1]s has istio.io/use-waypoint=waypoint, and Gateway %[1]s/waypoint could not be read to check that it exists and serves services (forbidden); Istio would ignore this split. "+
		`Ask a cluster admin for "get" on gateways.gateway.networking.k8s.io in namespace %[1]s, then split again; or pass --force to write the route anyway`+"\n", ns, pod)
	var res labtest.Result
	trEventually(t, func() bool {
		res = env.Mesh(t, "split", "backend", "50/50", "--kubeconfig", kc, "-n", ns)
		return res.Stderr == want
	})
	if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != want {
		t.Errorf("exit %d\nstdout %q\nstderr %q\nwant   %q", res.ExitCode, res.Stdout, res.Stderr, want)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("refused split wrote objects: %s", got)
	}
	res = env.Mesh(t, "split", "backend", "50/50", "--force", "--kubeconfig", kc, "-n", ns)
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stderr, "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\nwarning: ") {
		t.Errorf("--force: exit %d\nstderr %q", res.ExitCode, res.Stderr)
	}
}
