package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// trBackendApp deploys the workshop's backend in two versions behind service
// backend (port 80) in a fresh namespace.
func trBackendApp(t *testing.T, env *labtest.Env) string {
	t.Helper()
	ns := env.Namespace(t, nil)
	trService(t, env, ns, "backend", map[string]string{"app": "backend"})
	env.Deployment(t, ns, "backend-v1", map[string]string{"app": "backend", "version": "v1"}, 1)
	env.Deployment(t, ns, "backend-v2", map[string]string{"app": "backend", "version": "v2"}, 1)
	return ns
}

func trService(t *testing.T, env *labtest.Env, ns, name string, selector map[string]string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromInt32(80),
		}}},
	}
	if _, err := env.Kube.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating service %s/%s: %v", ns, name, err)
	}
}

// trObjects lists the VirtualServices and DestinationRules of ns as
// "kind/name@resourceVersion", to prove nothing was written.
func trObjects(t *testing.T, env *labtest.Env, ns string) string {
	t.Helper()
	var out []string
	for _, gvr := range []schema.GroupVersionResource{traffic.VirtualServices, traffic.DestinationRules, traffic.HTTPRoutes} {
		list, err := env.Dynamic.Resource(gvr).Namespace(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range list.Items {
			out = append(out, fmt.Sprintf("%s/%s@%s", gvr.Resource, item.GetName(), item.GetResourceVersion()))
		}
	}
	return strings.Join(out, " ")
}

func trApply(t *testing.T, env *labtest.Env, gvr schema.GroupVersionResource, ns, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	out, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s %s: %v", gvr.Resource, u.GetName(), err)
	}
	return out
}

func trGet(t *testing.T, env *labtest.Env, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := env.Dynamic.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func trYAML(t *testing.T, v interface{}) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSplitWorkshop is the workshop step: split backend 50/50, show it,
// change it, undo, and the table is right each time.
func TestSplitWorkshop(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)

	steps := []struct {
		args           []string
		stdout, stderr string
	}{
		{
			args:   []string{"split", "backend"},
			stdout: "ROUTE    SUBSET   WEIGHT   READY PODS\n<none>   v1       -        1/1\n<none>   v2       -        1/1\n",
			stderr: fmt.Sprintf("no VirtualService routes service %s/backend: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50\n", ns),
		},
		{
			args:   []string{"split", "backend", "50/50"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/1\n",
			stderr: "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\n",
		},
		{
			args:   []string{"split", "backend", "--v1", "80", "--v2", "20"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       80       1/1\nhttp[0]   v2       20       1/1\n",
			stderr: "destinationrule.networking.istio.io/backend unchanged\nvirtualservice.networking.istio.io/backend configured\n",
		},
		{
			args:   []string{"split", "backend"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       80       1/1\nhttp[0]   v2       20       1/1\n",
		},
		{
			args:   []string{"split", "backend", "--undo"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/1\n",
			stderr: "virtualservice.networking.istio.io/backend configured\n",
		},
		{
			args:   []string{"split", "backend", "v1=0,v2=100"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       0        1/1\nhttp[0]   v2       100      1/1\n",
			stderr: "destinationrule.networking.istio.io/backend unchanged\nvirtualservice.networking.istio.io/backend configured\n",
		},
	}
	for _, s := range steps {
		res := env.Mesh(t, append(s.args, "-n", ns)...)
		if res.Err != nil {
			t.Fatalf("%v: %v\n%s", s.args, res.Err, res.Stderr)
		}
		if res.Stdout != s.stdout || res.Stderr != s.stderr {
			t.Fatalf("%v:\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", s.args, res.Stdout, s.stdout, res.Stderr, s.stderr)
		}
	}
	vs := trGet(t, env, traffic.VirtualServices, ns, "backend")
	for _, mf := range vs.GetManagedFields() {
		if mf.Manager != traffic.FieldManager {
			t.Errorf("managedFields manager %q, want %q", mf.Manager, traffic.FieldManager)
		}
	}
}

// TestSplitBadInput: every bad input fails with its exact message, exit
// code 1, and nothing is written.
func TestSplitBadInput(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	trService(t, env, ns, "plain", map[string]string{"app": "plain"})
	env.Deployment(t, ns, "plain", nil, 1)

	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"split", "backend", "60/60"}, `invalid weights "60/60": weights must add up to 100, got 120`},
		{[]string{"split", "backend", "-5/105"}, `invalid weights "-5/105": weight -5 is out of range; weights are whole numbers 0-100`},
		{[]string{"split", "backend", "a/b"}, `invalid weights "a/b": "a" is not a whole number; weights are whole numbers 0-100`},
		{[]string{"split", "backend", "v1=50"}, `invalid weights "v1=50": weights must add up to 100, got 50`},
		{[]string{"split", "backend", "--v1", "50", "--v2", "60"}, `invalid weights "--v1 50 --v2 60": weights must add up to 100, got 110`},
		{[]string{"split", "backend", "v1=50,v3=50"}, fmt.Sprintf(`subset "v3" not found: no pods behind service %s/backend have version=v3 (versions found: v1, v2); deploy it first or pass --allow-empty`, ns)},
		{[]string{"split", "nope", "50/50"}, fmt.Sprintf(`service "nope" not found in namespace %q; list services with: kubectl get services -n %s`, ns, ns)},
		{[]string{"split", "plain", "100"}, fmt.Sprintf(`no pods behind service %s/plain have a "version" label (1 pod matches app=plain); label the pod templates (e.g. version=v1) or name the label with --subset-label`, ns)},
		{[]string{"split", "backend", "--undo"}, fmt.Sprintf(`nothing to undo for service %s/backend: no VirtualService routes it`, ns)},
		{[]string{"split", "backend", "50/50", "--route", "main"}, fmt.Sprintf(`route "main" not found: no VirtualService routes service %s/backend yet; leave out --route to create one`, ns)},
	}
	for _, tt := range tests {
		res := env.Mesh(t, append(tt.args, "-n", ns)...)
		if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != "error: "+tt.err+"\n" {
			t.Errorf("%v: exit %d\nstdout: %q\nstderr: %q\nwant:   %q", tt.args, res.ExitCode, res.Stdout, res.Stderr, "error: "+tt.err+"\n")
		}
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("bad input wrote objects: %s", got)
	}

	// --undo with history absent on an existing VirtualService.
	env.Mesh(t, "split", "backend", "50/50", "-n", ns)
	vs := trGet(t, env, traffic.VirtualServices, ns, "backend")
	unstructured.RemoveNestedField(vs.Object, "metadata", "annotations")
	if _, err := env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Update(context.Background(), vs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := trObjects(t, env, ns)
	res := env.Mesh(t, "split", "backend", "--undo", "-n", ns)
	want := fmt.Sprintf("error: nothing to undo for service %s/backend: virtualservice backend has no traffic.kubectl-mesh.io/previous-split annotation (kubectl mesh split records one each time it changes weights)\n", ns)
	if res.ExitCode != 1 || res.Stderr != want {
		t.Errorf("undo without history: exit %d, stderr %q, want %q", res.ExitCode, res.Stderr, want)
	}
	if after := trObjects(t, env, ns); after != before {
		t.Errorf("undo without history changed objects: %s -> %s", before, after)
	}
}

// TestSplitIstioAbsent checks the CRD detection against the lab's own API
// server for group versions and resources it does not serve (the lab has
// Istio's CRDs); TestSplitIstioAbsentAPIServer runs the commands against a
// server that has none.
func TestSplitIstioAbsent(t *testing.T) {
	env := labtest.Get(t)
	disc, err := discovery.NewDiscoveryClientForConfig(env.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := traffic.RequireAPI(disc, traffic.VirtualServices); err != nil {
		t.Fatalf("the lab serves VirtualServices, got: %v", err)
	}
	tests := []struct {
		gvr schema.GroupVersionResource
		err string
	}{
		{schema.GroupVersionResource{Group: "networking.istio.io", Version: "v9", Resource: "virtualservices"},
			"istio CRDs are not installed in this cluster (no networking.istio.io/v9 virtualservices); install Istio first"},
		{schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "trafficsplits"},
			"istio CRDs are not installed in this cluster (no networking.istio.io/v1 trafficsplits); install Istio first"},
		{schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v0", Resource: "httproutes"},
			"Gateway API CRDs are not installed in this cluster (no gateway.networking.k8s.io/v0 httproutes); install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"},
	}
	for _, tt := range tests {
		err := traffic.RequireAPI(disc, tt.gvr)
		var missing *traffic.MissingAPIError
		if !errors.As(err, &missing) || err.Error() != tt.err {
			t.Errorf("%v:\n got: %v\nwant: %s", tt.gvr, err, tt.err)
		}
	}
}

// TestSplitForbidden: a user who may only read gets an error naming the
// verb and resource, and nothing changes.
func TestSplitForbidden(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := trBackendApp(t, env)
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "read-istio"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"networking.istio.io", "gateway.networking.k8s.io"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}}},
	}
	if _, err := env.Kube.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []rbacv1.RoleRef{{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"}, {APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "read-istio"}} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-" + strings.ToLower(ref.Name)},
			RoleRef:    ref,
			Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"}},
		}
		if _, err := env.Kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kc := env.UserKubeconfig(t, "alice", nil)

	// RBAC changes reach the authorizer's cache asynchronously.
	var res labtest.Result
	trEventually(t, func() bool {
		res = env.Mesh(t, "split", "backend", "--kubeconfig", kc, "-n", ns)
		return res.Err == nil
	})
	if res.Err != nil {
		t.Fatalf("alice can read the split: %v", res.Err)
	}
	res = env.Mesh(t, "split", "backend", "50/50", "--kubeconfig", kc, "-n", ns)
	want := fmt.Sprintf(`error: creating destinationrule %[1]s/backend: destinationrules.networking.istio.io is forbidden: User "alice" cannot create resource "destinationrules" in API group "networking.istio.io" in the namespace "%[1]s"; ask a cluster admin for "create" on destinationrules.networking.istio.io in namespace %[1]s`+"\n", ns)
	if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != want {
		t.Errorf("exit %d\nstdout %q\nstderr %q\nwant   %q", res.ExitCode, res.Stdout, res.Stderr, want)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("forbidden split wrote objects: %s", got)
	}

	// Only the built-in "view" role, which in this lab does not cover
	// Istio's resources: the first read fails, naming verb and resource.
	bob := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bob-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "bob"}},
	}
	if _, err := env.Kube.RbacV1().RoleBindings(ns).Create(ctx, bob, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bobKC := env.UserKubeconfig(t, "bob", nil)
	want = fmt.Sprintf(`error: listing virtualservices.networking.istio.io in namespace %[1]s: virtualservices.networking.istio.io is forbidden: User "bob" cannot list resource "virtualservices" in API group "networking.istio.io" in the namespace "%[1]s"; ask a cluster admin for "list" on virtualservices.networking.istio.io`+"\n", ns)
	trEventually(t, func() bool {
		res = env.Mesh(t, "split", "backend", "50/50", "--kubeconfig", bobKC, "-n", ns)
		return res.Stderr == want
	})
	if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != want {
		t.Errorf("view only: exit %d\nstdout %q\nstderr %q\nwant   %q", res.ExitCode, res.Stdout, res.Stderr, want)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("view-only split wrote objects: %s", got)
	}

	// Allowed to write DestinationRules but not VirtualServices: the dry
	// run of the VirtualService fails before the DestinationRule is written.
	role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{"networking.istio.io"}, Resources: []string{"destinationrules"}, Verbs: []string{"create", "update"}})
	if _, err := env.Kube.RbacV1().Roles(ns).Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprintf(`error: creating virtualservice %[1]s/backend: virtualservices.networking.istio.io is forbidden: User "alice" cannot create resource "virtualservices" in API group "networking.istio.io" in the namespace "%[1]s"; ask a cluster admin for "create" on virtualservices.networking.istio.io in namespace %[1]s`+"\n", ns)
	trEventually(t, func() bool {
		res = env.Mesh(t, "split", "backend", "50/50", "--kubeconfig", kc, "-n", ns)
		return res.Stderr == want
	})
	if res.ExitCode != 1 || res.Stderr != want {
		t.Errorf("exit %d\nstderr %q\nwant   %q", res.ExitCode, res.Stderr, want)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("half-allowed split wrote objects: %s", got)
	}
}

// complexVS is a VirtualService using most of the HTTP route API, plus TCP
// and TLS routes and gateways; only the weights of route "main" may change.
const complexVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend-routes
  annotations:
    team: payments
  labels:
    app: backend
spec:
  hosts:
  - backend
  - backend-alias.example.com
  gateways:
  - mesh
  - NS/shop-gateway
  exportTo:
  - "."
  http:
  - name: canary-header
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: backend
        subset: v2
    headers:
      request:
        set:
          x-routed: canary
  - name: slow
    match:
    - uri:
        prefix: /slow
    fault:
      delay:
        percentage:
          value: 10
        fixedDelay: 5s
      abort:
        percentage:
          value: 1
        httpStatus: 503
    route:
    - destination:
        host: backend
        subset: v1
  - name: main
    timeout: 3s
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: 5xx,connect-failure
    mirror:
      host: backend-shadow
    mirrorPercentage:
      value: 5
    corsPolicy:
      allowOrigins:
      - exact: https://shop.example.com
      allowMethods:
      - GET
    route:
    - destination:
        host: backend
        subset: v1
        port:
          number: 80
      weight: 90
      headers:
        response:
          add:
            x-version: v1
    - destination:
        host: backend
        subset: v2
        port:
          number: 80
      weight: 10
  tcp:
  - match:
    - port: 9000
    route:
    - destination:
        host: backend
        port:
          number: 9000
  tls:
  - match:
    - port: 8443
      sniHosts:
      - backend-alias.example.com
    route:
    - destination:
        host: backend
        port:
          number: 8443
`

const complexDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: backend-policy
spec:
  host: backend
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
  - name: v2
    labels:
      version: v2
`

// comparable drops what the server changes on every write.
func trComparable(u *unstructured.Unstructured) map[string]interface{} {
	c := u.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(c.Object, "metadata", "generation")
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	return c.Object
}

// TestSplitKeepsComplexVirtualService: the whole object comes out identical
// except for the two weights and the undo annotation; the DestinationRule is
// untouched; --undo restores the spec exactly.
func TestSplitKeepsComplexVirtualService(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	before := trApply(t, env, traffic.VirtualServices, ns, strings.ReplaceAll(complexVS, "NS/", ns+"/"))
	dr := trApply(t, env, traffic.DestinationRules, ns, complexDR)

	res := env.Mesh(t, "split", "backend", "v1=50,v2=50", "-n", ns)
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Stderr)
	}
	wantOut := "ROUTE           SUBSET   WEIGHT   READY PODS\ncanary-header   v2       100      1/1\nslow            v1       100      1/1\nmain            v1       50       1/1\nmain            v2       50       1/1\n"
	wantErr := "destinationrule.networking.istio.io/backend-policy unchanged\nvirtualservice.networking.istio.io/backend-routes configured\n"
	if res.Stdout != wantOut || res.Stderr != wantErr {
		t.Errorf("stdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", res.Stdout, wantOut, res.Stderr, wantErr)
	}

	want := before.DeepCopy()
	http, _, _ := unstructured.NestedSlice(want.Object, "spec", "http")
	dests := http[2].(map[string]interface{})["route"].([]interface{})
	dests[0].(map[string]interface{})["weight"] = int64(50)
	dests[1].(map[string]interface{})["weight"] = int64(50)
	if err := unstructured.SetNestedSlice(want.Object, http, "spec", "http"); err != nil {
		t.Fatal(err)
	}
	a := want.GetAnnotations()
	a[traffic.AnnotationPrevious] = `{"route":"main","destinations":[{"destination":{"host":"backend","port":{"number":80},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":90},{"destination":{"host":"backend","port":{"number":80},"subset":"v2"},"weight":10}],"written":[{"destination":{"host":"backend","port":{"number":80},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":50},{"destination":{"host":"backend","port":{"number":80},"subset":"v2"},"weight":50}]}`
	want.SetAnnotations(a)
	after := trGet(t, env, traffic.VirtualServices, ns, "backend-routes")
	if g, w := trYAML(t, trComparable(after)), trYAML(t, trComparable(want)); g != w {
		t.Errorf("virtual service after split:\n%s\nwant:\n%s", g, w)
	}
	if g := trGet(t, env, traffic.DestinationRules, ns, "backend-policy"); g.GetResourceVersion() != dr.GetResourceVersion() {
		t.Errorf("destination rule was written:\n%s", trYAML(t, g.Object))
	}

	if res := env.Mesh(t, "split", "backend", "--undo", "-n", ns); res.Err != nil {
		t.Fatalf("undo: %v", res.Err)
	}
	undone := trGet(t, env, traffic.VirtualServices, ns, "backend-routes")
	if g, w := trYAML(t, undone.Object["spec"]), trYAML(t, before.Object["spec"]); g != w {
		t.Errorf("spec after undo:\n%s\nwant:\n%s", g, w)
	}
}

// TestSplitConcurrentModification makes another writer change the
// VirtualService between split's read and its write. The update conflicts,
// split reads again and merges: both the other change and the weights are
// in the result.
func TestSplitConcurrentModification(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := trBackendApp(t, env)
	trApply(t, env, traffic.VirtualServices, ns, strings.ReplaceAll(complexVS, "NS/", ns+"/"))
	trApply(t, env, traffic.DestinationRules, ns, complexDR)

	clients := traffic.Clients{Kube: env.Kube, Dynamic: env.Dynamic, Discovery: env.Kube.Discovery()}
	weights, err := traffic.ParseWeights("v1=30,v2=70")
	if err != nil {
		t.Fatal(err)
	}
	hookCalls := 0
	res, err := traffic.Split(ctx, clients, traffic.SplitConfig{
		Namespace: ns, Service: "backend", Weights: weights,
		BeforeWrite: func(ctx context.Context, attempt int) error {
			hookCalls++
			if attempt != 1 {
				return nil
			}
			// Someone else changes the timeout of the same route meanwhile.
			vs, err := env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Get(ctx, "backend-routes", metav1.GetOptions{})
			if err != nil {
				return err
			}
			http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
			http[2].(map[string]interface{})["timeout"] = "7s"
			if err := unstructured.SetNestedSlice(vs.Object, http, "spec", "http"); err != nil {
				return err
			}
			vs.SetLabels(map[string]string{"app": "backend", "edited-by": "someone-else"})
			_, err = env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Update(ctx, vs, metav1.UpdateOptions{FieldManager: "someone-else"})
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 2 || hookCalls != 2 || !res.Merged {
		t.Errorf("attempts %d, hook calls %d, merged %t; want 2 and 2 (one conflict), merged", res.Attempts, hookCalls, res.Merged)
	}
	vs := trGet(t, env, traffic.VirtualServices, ns, "backend-routes")
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	main := http[2].(map[string]interface{})
	wantMain := `corsPolicy:
  allowMethods:
  - GET
  allowOrigins:
  - exact: https://shop.example.com
mirror:
  host: backend-shadow
mirrorPercentage:
  value: 5
name: main
retries:
  attempts: 3
  perTryTimeout: 1s
  retryOn: 5xx,connect-failure
route:
- destination:
    host: backend
    port:
      number: 80
    subset: v1
  headers:
    response:
      add:
        x-version: v1
  weight: 30
- destination:
    host: backend
    port:
      number: 80
    subset: v2
  weight: 70
timeout: 7s
`
	if g := trYAML(t, main); g != wantMain {
		t.Errorf("route main:\n%s\nwant:\n%s", g, wantMain)
	}
	if vs.GetLabels()["edited-by"] != "someone-else" {
		t.Errorf("the concurrent label edit was lost: %v", vs.GetLabels())
	}

	// Someone touching only the route's metadata (as a controller writing
	// its status does) conflicts too, but changes no route: nothing merged.
	weights, _ = traffic.ParseWeights("v1=40,v2=60")
	res, err = traffic.Split(ctx, clients, traffic.SplitConfig{
		Namespace: ns, Service: "backend", Weights: weights,
		BeforeWrite: func(ctx context.Context, attempt int) error {
			if attempt != 1 {
				return nil
			}
			vs, err := env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Get(ctx, "backend-routes", metav1.GetOptions{})
			if err != nil {
				return err
			}
			vs.SetAnnotations(map[string]string{"touched-by": "a-controller"})
			_, err = env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Update(ctx, vs, metav1.UpdateOptions{FieldManager: "a-controller"})
			return err
		},
	})
	if err != nil || res.Attempts != 2 || res.Merged {
		t.Errorf("metadata-only conflict: %v, attempts %d, merged %t; want 2 attempts, not merged", err, res.Attempts, res.Merged)
	}
}

// TestSplitDryRun: neither client nor server dry run writes anything, and
// both print the objects.
func TestSplitDryRun(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	for _, mode := range []string{"client", "server"} {
		res := env.Mesh(t, "split", "backend", "50/50", "--dry-run="+mode, "-o", "name", "-n", ns)
		suffix := " (dry run)"
		if mode == "server" {
			suffix = " (server dry run)"
		}
		wantErr := "destinationrule.networking.istio.io/backend created" + suffix + "\nvirtualservice.networking.istio.io/backend created" + suffix + "\n"
		wantOut := "destinationrule.networking.istio.io/backend\nvirtualservice.networking.istio.io/backend\n"
		if res.Err != nil || res.Stdout != wantOut || res.Stderr != wantErr {
			t.Errorf("--dry-run=%s: %v\nstdout %q want %q\nstderr %q want %q", mode, res.Err, res.Stdout, wantOut, res.Stderr, wantErr)
		}
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Fatalf("dry run wrote objects: %s", got)
	}

	// On existing objects too.
	env.Mesh(t, "split", "backend", "50/50", "-n", ns)
	before := trObjects(t, env, ns)
	for _, mode := range []string{"client", "server"} {
		res := env.Mesh(t, "split", "backend", "10/90", "--dry-run="+mode, "-n", ns)
		if res.Err != nil {
			t.Fatalf("--dry-run=%s: %v", mode, res.Err)
		}
		wantOut := "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       10       1/1\nhttp[0]   v2       90       1/1\n"
		if res.Stdout != wantOut {
			t.Errorf("--dry-run=%s stdout:\n%s\nwant:\n%s", mode, res.Stdout, wantOut)
		}
	}
	if after := trObjects(t, env, ns); after != before {
		t.Errorf("dry run changed objects: %s -> %s", before, after)
	}
}

// TestSplitIstioValidation: what split writes passes istiod's validating
// webhook, and the webhook is really there (it rejects a negative weight,
// which the CRD schema alone accepts).
func TestSplitIstioValidation(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	bad := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend, subset: v1}
      weight: -5
    - destination: {host: backend, subset: v2}
      weight: 105
`
	j, _ := yaml.YAMLToJSON([]byte(bad))
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	_, err := env.Dynamic.Resource(traffic.VirtualServices).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "weight -5 < 0") {
		t.Fatalf("istiod's webhook did not reject weight -5: %v", err)
	}
	for _, args := range [][]string{{"split", "backend", "50/50"}, {"split", "backend", "v1=100,v2=0"}, {"split", "backend", "--undo"}} {
		if res := env.Mesh(t, append(args, "-n", ns)...); res.Err != nil {
			t.Fatalf("%v: %v", args, res.Err)
		}
	}
}

// TestSplitGatewayAPI: HTTPRoute with the Service as parent and weighted
// per-version Services, created on request.
func TestSplitGatewayAPI(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	res := env.Mesh(t, "split", "backend", "50/50", "--api", "gateway", "-n", ns)
	wantErr := fmt.Sprintf("error: --api gateway routes to one Service per version, and services backend-v1, backend-v2 are not found in namespace %s; pass --create-services to create them (each selects the service's pods plus version=<version>)\n", ns)
	if res.ExitCode != 1 || res.Stderr != wantErr {
		t.Fatalf("without --create-services: exit %d, stderr %q, want %q", res.ExitCode, res.Stderr, wantErr)
	}
	res = env.Mesh(t, "split", "backend", "50/50", "--api", "gateway", "--create-services", "-n", ns)
	wantOut := "ROUTE      SUBSET   WEIGHT   READY PODS\nrules[0]   v1       50       1/1\nrules[0]   v2       50       1/1\n"
	wantErr = "service/backend-v1 created\nservice/backend-v2 created\nhttproute.gateway.networking.k8s.io/backend created\n"
	if res.Err != nil || res.Stdout != wantOut || res.Stderr != wantErr {
		t.Fatalf("%v\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, wantOut, res.Stderr, wantErr)
	}
	res = env.Mesh(t, "split", "backend", "--v1", "90", "--v2", "10", "--api", "gateway", "-n", ns)
	wantOut = "ROUTE      SUBSET   WEIGHT   READY PODS\nrules[0]   v1       90       1/1\nrules[0]   v2       10       1/1\n"
	if res.Err != nil || res.Stdout != wantOut || res.Stderr != "httproute.gateway.networking.k8s.io/backend configured\n" {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", res.Err, res.Stdout, res.Stderr)
	}
	route := trGet(t, env, traffic.HTTPRoutes, ns, "backend")
	rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
	refs := rules[0].(map[string]interface{})["backendRefs"]
	wantRefs := "- group: \"\"\n  kind: Service\n  name: backend-v1\n  port: 80\n  weight: 90\n- group: \"\"\n  kind: Service\n  name: backend-v2\n  port: 80\n  weight: 10\n"
	if g := trYAML(t, refs); g != wantRefs {
		t.Errorf("backendRefs:\n%s\nwant:\n%s", g, wantRefs)
	}
	res = env.Mesh(t, "split", "backend", "--undo", "--api", "gateway", "-n", ns)
	wantOut = "ROUTE      SUBSET   WEIGHT   READY PODS\nrules[0]   v1       50       1/1\nrules[0]   v2       50       1/1\n"
	if res.Err != nil || res.Stdout != wantOut {
		t.Fatalf("undo: %v\n%s", res.Err, res.Stdout)
	}
	svc, err := env.Kube.CoreV1().Services(ns).Get(context.Background(), "backend-v2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(svc.Spec.Selector); got != "map[app:backend version:v2]" {
		t.Errorf("backend-v2 selector %s", got)
	}
}

// trEventually polls cond for up to 10 seconds, for effects the API server
// applies asynchronously (RBAC caches).
func trEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSplitIstioAbsentAPIServer runs split and expose against a real API
// server that has never had Istio's or the Gateway API's CRDs: a second
// kube-apiserver of the lab's build, on its own port and its own etcd key
// prefix (so it shares nothing with the lab's cluster), stopped and its keys
// deleted when the test ends.
func TestSplitIstioAbsentAPIServer(t *testing.T) {
	env := labtest.Get(t)
	kc := trBareAPIServer(t, env)
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"split", "backend", "50/50"}, "istio CRDs are not installed in this cluster (no networking.istio.io/v1 VirtualService); install Istio first"},
		{[]string{"split", "backend"}, "istio CRDs are not installed in this cluster (no networking.istio.io/v1 VirtualService); install Istio first"},
		{[]string{"split", "backend", "50/50", "--api", "gateway"}, "Gateway API CRDs are not installed in this cluster (no gateway.networking.k8s.io/v1 HTTPRoute); install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"},
		{[]string{"expose", "frontend"}, "istio CRDs are not installed in this cluster (no networking.istio.io/v1 Gateway); install Istio first"},
		{[]string{"expose", "frontend", "--api", "gateway"}, "Gateway API CRDs are not installed in this cluster (no gateway.networking.k8s.io/v1 Gateway); install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"},
	}
	for _, tt := range tests {
		res := env.Mesh(t, append(tt.args, "--kubeconfig", kc, "-n", "default")...)
		if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != "error: "+tt.err+"\n" {
			t.Errorf("%v: exit %d\nstderr %q\nwant   %q", tt.args, res.ExitCode, res.Stderr, "error: "+tt.err+"\n")
		}
	}
}

// trBareAPIServer starts a kube-apiserver on a free port with a fresh etcd
// key prefix in the lab's etcd and returns an admin kubeconfig for it.
func trBareAPIServer(t *testing.T, env *labtest.Env) string {
	t.Helper()
	l := env.Lab
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	prefix := fmt.Sprintf("/kubectl-mesh-bare-%d/", port)
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ap, admin := l.PKI.Cert("apiserver"), l.PKI.Cert("admin")
	cmd := exec.Command(filepath.Join(l.BinDir, "kube-apiserver-"+lab.KubeVersion),
		"--etcd-servers=http://127.0.0.1:2379", "--etcd-prefix="+prefix,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file="+ap.CertFile, "--tls-private-key-file="+ap.KeyFile, "--client-ca-file="+l.PKI.CA.CertFile,
		"--service-account-key-file="+l.PKI.ServiceAccountPub, "--service-account-signing-key-file="+l.PKI.ServiceAccountKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC", "--endpoint-reconciler-type=none",
		"--profiling=false", "--cert-dir="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		trDeleteEtcdPrefix(t, prefix)
	})

	kc := filepath.Join(dir, "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bare"] = &clientcmdapi.Cluster{Server: fmt.Sprintf("https://127.0.0.1:%d", port), CertificateAuthority: l.PKI.CA.CertFile}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: admin.CertFile, ClientKey: admin.KeyFile}
	cfg.Contexts["bare"] = &clientcmdapi.Context{Cluster: "bare", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "bare"
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		_, err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
			t.Fatalf("second kube-apiserver not ready: %v\n%s", err, log)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return kc
}

// trDeleteEtcdPrefix removes every key under prefix through etcd's JSON
// gateway, so the second API server leaves nothing behind.
func trDeleteEtcdPrefix(t *testing.T, prefix string) {
	end := []byte(prefix)
	end[len(end)-1]++
	body := fmt.Sprintf(`{"key":%q,"range_end":%q}`, base64.StdEncoding.EncodeToString([]byte(prefix)), base64.StdEncoding.EncodeToString(end))
	resp, err := http.Post("http://127.0.0.1:2379/v3/kv/deleterange", "application/json", strings.NewReader(body))
	if err != nil {
		t.Errorf("deleting etcd keys %s: %v", prefix, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("deleting etcd keys %s: %s", prefix, resp.Status)
	}
}
