package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestSplitKeepsOtherHost is the finding reproduced on the lab: a route
// sending 90 to backend and 10 to another host keeps the other host, and
// the versions share the 90. A route that sends nothing to backend is
// refused and left as it is.
func TestSplitKeepsOtherHost(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	trApply(t, env, traffic.VirtualServices, ns, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend}
      weight: 90
    - destination: {host: legacy.other.svc.cluster.local}
      weight: 10
`)
	res := env.Mesh(t, "split", "backend", "50/50", "-n", ns)
	wantOut := "ROUTE     SUBSET                           WEIGHT   READY PODS\nhttp[0]   legacy.other.svc.cluster.local   10       -\nhttp[0]   v1                               45       1/1\nhttp[0]   v2                               45       1/1\n"
	wantErr := fmt.Sprintf("destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend configured\nroute http[0] of virtualservice backend keeps legacy.other.svc.cluster.local (weight 10): the weights given divide the 90 of 100 that goes to service %s/backend (v1=45, v2=45)\n", ns)
	if res.Err != nil || res.Stdout != wantOut || res.Stderr != wantErr {
		t.Fatalf("%v\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, wantOut, res.Stderr, wantErr)
	}
	vs := trGet(t, env, traffic.VirtualServices, ns, "backend")
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	wantRoute := "- destination:\n    host: legacy.other.svc.cluster.local\n  weight: 10\n- destination:\n    host: backend\n    subset: v1\n  weight: 45\n- destination:\n    host: backend\n    subset: v2\n  weight: 45\n"
	if g := trYAML(t, http[0].(map[string]interface{})["route"]); g != wantRoute {
		t.Errorf("route:\n%s\nwant:\n%s", g, wantRoute)
	}

	// Undo puts the 90/10 back and deletes the DestinationRule it created.
	res = env.Mesh(t, "split", "backend", "--undo", "-n", ns)
	wantErr = "virtualservice.networking.istio.io/backend configured\ndestinationrule.networking.istio.io/backend deleted\n"
	if res.Err != nil || res.Stderr != wantErr {
		t.Fatalf("undo: %v\nstderr:\n%s\nwant:\n%s", res.Err, res.Stderr, wantErr)
	}
	vs = trGet(t, env, traffic.VirtualServices, ns, "backend")
	http, _, _ = unstructured.NestedSlice(vs.Object, "spec", "http")
	wantRoute = "- destination:\n    host: backend\n  weight: 90\n- destination:\n    host: legacy.other.svc.cluster.local\n  weight: 10\n"
	if g := trYAML(t, http[0].(map[string]interface{})["route"]); g != wantRoute {
		t.Errorf("route after undo:\n%s\nwant:\n%s", g, wantRoute)
	}

	// Refused: the default route sends everything elsewhere.
	ns2 := trBackendApp(t, env)
	trApply(t, env, traffic.VirtualServices, ns2, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: legacy.other.svc.cluster.local}
`)
	before := trObjects(t, env, ns2)
	res = env.Mesh(t, "split", "backend", "50/50", "-n", ns2)
	wantErr = fmt.Sprintf("error: route http[0] of virtualservice backend sends no traffic to service %s/backend: all of it goes to legacy.other.svc.cluster.local (weight 100); split divides only the service's own share, so give the service a weight in that route by hand (kubectl edit), or choose another route with --route\n", ns2)
	if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != wantErr {
		t.Errorf("exit %d\nstdout: %q\nstderr: %q\nwant:   %q", res.ExitCode, res.Stdout, res.Stderr, wantErr)
	}
	if after := trObjects(t, env, ns2); after != before {
		t.Errorf("refused split wrote: %s, was %s", after, before)
	}
}

// TestSplitWildcardAndRootDestinationRules: the subsets go into the
// namespace's wildcard rule (whose TLS setting still applies to backend),
// and a root-namespace rule for the host is not shadowed.
func TestSplitWildcardAndRootDestinationRules(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	trApply(t, env, traffic.DestinationRules, ns, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ns-wide
spec:
  host: "*.%s.svc.cluster.local"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
`, ns))
	res := env.Mesh(t, "split", "backend", "50/50", "-n", ns)
	wantErr := fmt.Sprintf("destinationrule.networking.istio.io/ns-wide configured\nvirtualservice.networking.istio.io/backend created\nadded subsets v1 (version=v1), v2 (version=v2) to destinationrule %s/ns-wide (host *.%s.svc.cluster.local), the rule Istio applies to service %s/backend: a new rule for the service alone would drop its trafficPolicy for it\n", ns, ns, ns)
	if res.Err != nil || res.Stderr != wantErr {
		t.Fatalf("%v\nstderr:\n%s\nwant:\n%s", res.Err, res.Stderr, wantErr)
	}
	dr := trGet(t, env, traffic.DestinationRules, ns, "ns-wide")
	wantSpec := fmt.Sprintf("host: '*.%s.svc.cluster.local'\nsubsets:\n- labels:\n    version: v1\n  name: v1\n- labels:\n    version: v2\n  name: v2\ntrafficPolicy:\n  tls:\n    mode: ISTIO_MUTUAL\n", ns)
	if g := trYAML(t, dr.Object["spec"]); g != wantSpec {
		t.Errorf("ns-wide spec:\n%s\nwant:\n%s", g, wantSpec)
	}
	if got := trObjects(t, env, ns); strings.Contains(got, "destinationrules/backend@") {
		t.Errorf("a DestinationRule for backend alone was created: %s", got)
	}

	// A rule in the root namespace for this namespace's backend, without
	// the subsets: refused, nothing written.
	ns2 := trBackendApp(t, env)
	root := trApply(t, env, traffic.DestinationRules, "istio-system", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %s-backend
spec:
  host: backend.%s.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10}}
`, ns2, ns2))
	t.Cleanup(func() {
		_ = env.Dynamic.Resource(traffic.DestinationRules).Namespace("istio-system").Delete(context.Background(), root.GetName(), metav1.DeleteOptions{})
	})
	res = env.Mesh(t, "split", "backend", "50/50", "-n", ns2)
	wantErr = fmt.Sprintf("error: destinationrule istio-system/%s-backend (host backend.%s.svc.cluster.local) in the root namespace applies to service %s/backend and lacks subsets v1 (version=v1), v2 (version=v2); a DestinationRule for the service in %s would take its place for that host (Istio uses only the most specific rule), and its trafficPolicy would no longer apply there. Add the subsets to that rule, or create a DestinationRule for backend in %s with the subsets and a copy of its trafficPolicy, then split again\n", ns2, ns2, ns2, ns2, ns2)
	if res.ExitCode != 1 || res.Stderr != wantErr {
		t.Errorf("exit %d\nstderr: %q\nwant:   %q", res.ExitCode, res.Stderr, wantErr)
	}
	if got := trObjects(t, env, ns2); got != "" {
		t.Errorf("refused split wrote: %s", got)
	}
	if g := trGet(t, env, traffic.DestinationRules, "istio-system", root.GetName()); g.GetResourceVersion() != root.GetResourceVersion() {
		t.Errorf("root-namespace rule was written")
	}
}

// TestSplitUndoDeletesWhatItCreated: undo of a first split leaves the
// namespace as it was, with the Istio API and with Gateway API's
// per-version Services.
func TestSplitUndoDeletesWhatItCreated(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	if res := env.Mesh(t, "split", "backend", "80/20", "-n", ns); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Stderr)
	}
	before := trObjects(t, env, ns)
	res := env.Mesh(t, "split", "backend", "--undo", "--dry-run=server", "-n", ns)
	wantDry := "virtualservice.networking.istio.io/backend deleted (server dry run)\ndestinationrule.networking.istio.io/backend deleted (server dry run)\n"
	if res.Err != nil || !strings.HasPrefix(res.Stderr, wantDry) {
		t.Fatalf("undo --dry-run=server: %v\nstderr:\n%s\nwant first:\n%s", res.Err, res.Stderr, wantDry)
	}
	if after := trObjects(t, env, ns); after != before {
		t.Fatalf("dry-run undo changed objects: %s -> %s", before, after)
	}
	res = env.Mesh(t, "split", "backend", "--undo", "-n", ns)
	wantErr := fmt.Sprintf("virtualservice.networking.istio.io/backend deleted\ndestinationrule.networking.istio.io/backend deleted\nno VirtualService routes service %s/backend: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50\n", ns)
	if res.Err != nil || res.Stderr != wantErr {
		t.Fatalf("undo: %v\nstderr:\n%s\nwant:\n%s", res.Err, res.Stderr, wantErr)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("left after undo: %s", got)
	}

	if res := env.Mesh(t, "split", "backend", "50/50", "--api", "gateway", "--create-services", "-n", ns); res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Stderr)
	}
	res = env.Mesh(t, "split", "backend", "--undo", "--api", "gateway", "-n", ns)
	wantErr = fmt.Sprintf("httproute.gateway.networking.k8s.io/backend deleted\nservice/backend-v1 deleted\nservice/backend-v2 deleted\nno HTTPRoute has service %s/backend as parent: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50 --api gateway\n", ns)
	if res.Err != nil || res.Stderr != wantErr {
		t.Fatalf("gateway undo: %v\nstderr:\n%s\nwant:\n%s", res.Err, res.Stderr, wantErr)
	}
	svcs, err := env.Kube.CoreV1().Services(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs.Items) != 1 || svcs.Items[0].Name != "backend" {
		t.Errorf("services after undo: %d", len(svcs.Items))
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("left after undo: %s", got)
	}
}
