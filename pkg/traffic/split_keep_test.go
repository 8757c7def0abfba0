package traffic

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

// obj parses one YAML object as the API server would return it.
func obj(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

// writes lists the create/update/delete calls the fake dynamic client got.
func writes(f fakes) []string {
	var out []string
	for _, a := range f.dyn.Actions() {
		switch v := a.GetVerb(); v {
		case "create", "update", "delete":
			out = append(out, v+" "+a.GetResource().Resource)
		}
	}
	return out
}

func routeOf(t *testing.T, f fakes, name string, i int) string {
	t.Helper()
	vs := get(t, f, VirtualServices, "shop", name)
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	return toYAML(t, http[i].(map[string]interface{})["route"])
}

const legacyVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: backend
  namespace: shop
spec:
  hosts: [backend]
  http:
  - route:
`

// TestSplitKeepsOtherDestinations: destinations that are not versions of
// the service keep their weights; the weights given divide the rest.
func TestSplitKeepsOtherDestinations(t *testing.T) {
	tests := []struct {
		name    string
		route   string
		weights string
		want    string
		rows    []Row
		note    string
	}{
		{
			name: "other host keeps its 10, the service's 90 is split",
			route: `    - destination: {host: backend}
      weight: 90
    - destination: {host: legacy.other.svc.cluster.local}
      weight: 10
`,
			weights: "50/50",
			want: `- destination:
    host: legacy.other.svc.cluster.local
  weight: 10
- destination:
    host: backend
    subset: v1
  weight: 45
- destination:
    host: backend
    subset: v2
  weight: 45
`,
			rows: []Row{{"http[0]", "legacy.other.svc.cluster.local", 10, -1, -1}, {"http[0]", "v1", 45, 2, 2}, {"http[0]", "v2", 45, 0, 1}},
			note: "route http[0] of virtualservice backend keeps legacy.other.svc.cluster.local (weight 10): the weights given divide the 90 of 100 that goes to service shop/backend (v1=45, v2=45)",
		},
		{
			name: "a subset that is no version keeps its weight; rounding adds up",
			route: `    - destination: {host: backend, subset: v1}
      weight: 80
    - destination: {host: backend, subset: canary}
      weight: 10
    - destination: {host: backend, subset: v2}
      weight: 10
`,
			weights: "v1=33,v2=67",
			want: `- destination:
    host: backend
    subset: v1
  weight: 30
- destination:
    host: backend
    subset: canary
  weight: 10
- destination:
    host: backend
    subset: v2
  weight: 60
`,
			rows: []Row{{"http[0]", "v1", 30, 2, 2}, {"http[0]", "canary", 10, 0, 0}, {"http[0]", "v2", 60, 0, 1}},
			note: "route http[0] of virtualservice backend keeps backend subset canary (weight 10): the weights given divide the 90 of 100 that goes to service shop/backend (v1=30, v2=60)",
		},
		{
			name: "a version left out stays with weight 0",
			route: `    - destination: {host: backend, subset: v1}
      weight: 50
      headers: {request: {set: {x-v: "1"}}}
    - destination: {host: backend, subset: v2}
      weight: 50
`,
			weights: "v2=100",
			want: `- destination:
    host: backend
    subset: v1
  headers:
    request:
      set:
        x-v: "1"
  weight: 0
- destination:
    host: backend
    subset: v2
  weight: 100
`,
			rows: []Row{{"http[0]", "v1", 0, 2, 2}, {"http[0]", "v2", 100, 0, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes(shopBackend(), obj(t, legacyVS+tt.route))
			res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, tt.weights)})
			if err != nil {
				t.Fatal(err)
			}
			if g := routeOf(t, f, "backend", 0); g != tt.want {
				t.Errorf("route:\n%s\nwant:\n%s", g, tt.want)
			}
			if !reflect.DeepEqual(res.Rows, tt.rows) {
				t.Errorf("rows = %v, want %v", res.Rows, tt.rows)
			}
			var wantNotes []string
			if tt.note != "" {
				wantNotes = []string{tt.note}
			}
			if !reflect.DeepEqual(res.Notes, wantNotes) {
				t.Errorf("notes = %q\nwant %q", res.Notes, wantNotes)
			}
			// Undo brings back the route as it was.
			if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Undo: true}); err != nil {
				t.Fatal(err)
			}
			if g, w := routeOf(t, f, "backend", 0), toYAML(t, obj(t, legacyVS+tt.route).Object["spec"].(map[string]interface{})["http"].([]interface{})[0].(map[string]interface{})["route"]); g != w {
				t.Errorf("after undo:\n%s\nwant:\n%s", g, w)
			}
		})
	}
}

// TestSplitRefusesWhatItCannotKeep: exit with the reason, write nothing.
func TestSplitRefusesWhatItCannotKeep(t *testing.T) {
	tests := []struct {
		name, route, weights, err string
	}{
		{
			name:    "no share for the service",
			route:   "    - destination: {host: legacy.other.svc.cluster.local}\n",
			weights: "50/50",
			err:     "route http[0] of virtualservice backend sends no traffic to service shop/backend: all of it goes to legacy.other.svc.cluster.local (weight 100); split divides only the service's own share, so give the service a weight in that route by hand (kubectl edit), or choose another route with --route",
		},
		{
			name: "a weight would round to 0",
			route: `    - destination: {host: backend}
      weight: 10
    - destination: {host: legacy.other.svc.cluster.local}
      weight: 90
`,
			weights: "v1=99,v2=1",
			err:     "v2=1 cannot be kept: route http[0] of virtualservice backend also sends traffic to legacy.other.svc.cluster.local (weight 90), which stays, so the weights given divide only the 10 of 100 that goes to service shop/backend, and 1% of it rounds to 0; give v2 more, or change the route by hand (kubectl edit)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes(shopBackend(), obj(t, legacyVS+tt.route))
			_, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, tt.weights)})
			if err == nil || err.Error() != tt.err {
				t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
			}
			if w := writes(f); len(w) > 0 {
				t.Errorf("wrote %v", w)
			}
		})
	}
}

func TestSplitGatewayKeepsOtherBackends(t *testing.T) {
	route := obj(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: backend}]
  rules:
  - backendRefs:
    - {name: backend, port: 8080, weight: 80}
    - {name: legacy, port: 80, weight: 20}
`)
	f := newFakes(append(shopBackend(), service("shop", "backend-v1", nil, 8080), service("shop", "backend-v2", nil, 8080)), route)
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", API: APIGateway, Weights: mustWeights(t, "50/50")})
	if err != nil {
		t.Fatal(err)
	}
	got := get(t, f, HTTPRoutes, "shop", "backend")
	rules, _, _ := unstructured.NestedSlice(got.Object, "spec", "rules")
	want := "- name: legacy\n  port: 80\n  weight: 20\n- name: backend-v1\n  port: 8080\n  weight: 40\n- name: backend-v2\n  port: 8080\n  weight: 40\n"
	if g := toYAML(t, rules[0].(map[string]interface{})["backendRefs"]); g != want {
		t.Errorf("backendRefs:\n%s\nwant:\n%s", g, want)
	}
	wantRows := []Row{{"rules[0]", "legacy", 20, -1, -1}, {"rules[0]", "v1", 40, 2, 2}, {"rules[0]", "v2", 40, 0, 1}}
	if !reflect.DeepEqual(res.Rows, wantRows) {
		t.Errorf("rows = %v, want %v", res.Rows, wantRows)
	}
	wantNotes := []string{"route rules[0] of httproute backend keeps service legacy (weight 20): the weights given divide the 80 of 100 that goes to service shop/backend (v1=40, v2=40)"}
	if !reflect.DeepEqual(res.Notes, wantNotes) {
		t.Errorf("notes = %q", res.Notes)
	}
}

const wildcardDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: NAME, namespace: NS}
spec:
  host: "HOST"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    connectionPool: {tcp: {maxConnections: 10}}
`

func dr(t *testing.T, name, ns, host, extra string) *unstructured.Unstructured {
	t.Helper()
	return obj(t, strings.NewReplacer("NAME", name, "NS", ns, "HOST", host).Replace(wildcardDR)+extra)
}

// TestSplitRespectsWildcardAndRootRules: no new exact-host rule shadows a
// wildcard or root-namespace rule.
func TestSplitRespectsWildcardAndRootRules(t *testing.T) {
	subsets := "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"
	tests := []struct {
		name    string
		rules   []runtime.Object
		changes []Change
		err     string
		notes   []string
		// subsetsIn names the rule that must hold subsets v1 and v2 after.
		subsetsIn [2]string
	}{
		{
			name:  "wildcard rule in the namespace gets the subsets",
			rules: []runtime.Object{dr(t, "ns-wide", "shop", "*.shop.svc.cluster.local", "")},
			changes: []Change{
				{Resource: "destinationrule.networking.istio.io", Name: "ns-wide", Op: "configured"},
				{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
			},
			notes:     []string{"added subsets v1 (version=v1), v2 (version=v2) to destinationrule shop/ns-wide (host *.shop.svc.cluster.local), the rule Istio applies to service shop/backend: a new rule for the service alone would drop its trafficPolicy for it"},
			subsetsIn: [2]string{"shop", "ns-wide"},
		},
		{
			name:  "the more specific wildcard wins",
			rules: []runtime.Object{dr(t, "all", "shop", "*", ""), dr(t, "svc", "shop", "*.svc.cluster.local", ""), dr(t, "ns-wide", "shop", "*.shop.svc.cluster.local", subsets)},
			changes: []Change{
				{Resource: "destinationrule.networking.istio.io", Name: "ns-wide", Op: "unchanged"},
				{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
			},
			subsetsIn: [2]string{"shop", "ns-wide"},
		},
		{
			name:  "exact rule in the namespace is used as before",
			rules: []runtime.Object{dr(t, "ns-wide", "shop", "*.shop.svc.cluster.local", ""), dr(t, "backend-dr", "shop", "backend", "")},
			changes: []Change{
				{Resource: "destinationrule.networking.istio.io", Name: "backend-dr", Op: "configured"},
				{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
			},
			subsetsIn: [2]string{"shop", "backend-dr"},
		},
		{
			name:  "wildcard rule exported less widely than the VirtualService",
			rules: []runtime.Object{dr(t, "ns-wide", "shop", "*.shop.svc.cluster.local", "  exportTo: [.]\n")},
			err:   "destinationrule shop/ns-wide (host *.shop.svc.cluster.local) applies to service shop/backend and lacks subsets v1 (version=v1), v2 (version=v2), but it is exported to . while virtualservice backend (new) is exported to every namespace, where those subsets would not exist; a new DestinationRule for the service would drop that rule's trafficPolicy for it. Export the rule as widely as the VirtualService, or add the subsets to it yourself, then split again",
		},
		{
			name:  "root-namespace rule lacking the subsets",
			rules: []runtime.Object{dr(t, "mesh-default", "istio-system", "*.svc.cluster.local", "")},
			err:   "destinationrule istio-system/mesh-default (host *.svc.cluster.local) in the root namespace applies to service shop/backend and lacks subsets v1 (version=v1), v2 (version=v2); a DestinationRule for the service in shop would take its place for that host (Istio uses only the most specific rule), and its trafficPolicy would no longer apply there. Add the subsets to that rule, or create a DestinationRule for backend in shop with the subsets and a copy of its trafficPolicy, then split again",
		},
		{
			name:  "root-namespace rule for the host with the subsets is used unchanged",
			rules: []runtime.Object{dr(t, "backend", "istio-system", "backend.shop.svc.cluster.local", subsets)},
			changes: []Change{
				{Resource: "destinationrule.networking.istio.io", Name: "backend", Op: "unchanged"},
				{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
			},
			subsetsIn: [2]string{"istio-system", "backend"},
		},
		{
			name: "root-namespace rules not exported here, or for workloads only, do not apply",
			rules: []runtime.Object{
				dr(t, "private", "istio-system", "*.svc.cluster.local", "  exportTo: [.]\n"),
				dr(t, "pinned", "shop", "*.shop.svc.cluster.local", "  workloadSelector: {matchLabels: {app: frontend}}\n"),
				dr(t, "other", "istio-system", "backend", ""),
			},
			changes: []Change{
				{Resource: "destinationrule.networking.istio.io", Name: "backend", Op: "created"},
				{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
			},
			subsetsIn: [2]string{"shop", "backend"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes(shopBackend(), tt.rules...)
			res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")})
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
				if w := writes(f); len(w) > 0 {
					t.Errorf("wrote %v", w)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(res.Changes, tt.changes) {
				t.Errorf("changes = %v, want %v", res.Changes, tt.changes)
			}
			if !reflect.DeepEqual(res.Notes, tt.notes) {
				t.Errorf("notes = %q\nwant %q", res.Notes, tt.notes)
			}
			got := get(t, f, DestinationRules, tt.subsetsIn[0], tt.subsetsIn[1])
			if s := subsetsOf(got); len(s) != 2 || s[0].name != "v1" || s[1].name != "v2" {
				t.Errorf("subsets of %s/%s: %v", tt.subsetsIn[0], tt.subsetsIn[1], s)
			}
			if tp, _, _ := unstructured.NestedMap(got.Object, "spec", "trafficPolicy"); tt.subsetsIn[1] != "backend" && len(tp) != 2 {
				t.Errorf("trafficPolicy changed: %v", tp)
			}
		})
	}
}

func TestSplitRootNamespaceForbidden(t *testing.T) {
	f := newFakes(shopBackend())
	f.dyn.PrependReactor("list", "destinationrules", func(a clienttesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "istio-system" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.istio.io", Resource: "destinationrules"}, "", errors.New("no"))
		}
		return false, nil, nil
	})
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"could not read DestinationRules in the root namespace istio-system (forbidden): if one there applies to service shop/backend, the new destinationrule shop/backend takes its place for that host"}
	if !reflect.DeepEqual(res.Notes, want) {
		t.Errorf("notes = %q", res.Notes)
	}
}

func TestDRHostRank(t *testing.T) {
	for _, tt := range []struct {
		host, ns string
		want     int
	}{
		{"backend", "shop", exactHost}, {"backend.shop.svc.cluster.local", "shop", exactHost},
		{"backend.shop.svc.cluster.local", "istio-system", exactHost}, {"backend", "istio-system", 0},
		{"*.shop.svc.cluster.local", "shop", 24}, {"*.svc.cluster.local", "istio-system", 19}, {"*.local", "shop", 7},
		{"*", "shop", 1}, {"*.other.svc.cluster.local", "shop", 0}, {"backend.other.svc.cluster.local", "shop", 0},
	} {
		if got := drHostRank(tt.host, tt.ns, "backend", "shop"); got != tt.want {
			t.Errorf("drHostRank(%q in %s) = %d, want %d", tt.host, tt.ns, got, tt.want)
		}
	}
}

func undo(t *testing.T, f fakes) (*SplitResult, error) {
	t.Helper()
	return Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Undo: true})
}

// TestUndoFindsUnnamedRouteByContent: a route added in front of the one
// split changed does not mislead undo.
func TestUndoFindsUnnamedRouteByContent(t *testing.T) {
	vs := obj(t, legacyVS+"    - destination: {host: backend, subset: v1}\n")
	f := newFakes(shopBackend(), vs, dr(t, "backend", "shop", "backend", "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"))
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")}); err != nil {
		t.Fatal(err)
	}
	// Someone puts a route with a match in front.
	cur := get(t, f, VirtualServices, "shop", "backend")
	http, _, _ := unstructured.NestedSlice(cur.Object, "spec", "http")
	front := map[string]interface{}{
		"match": []interface{}{map[string]interface{}{"uri": map[string]interface{}{"prefix": "/beta"}}},
		"route": []interface{}{map[string]interface{}{"destination": map[string]interface{}{"host": "backend", "subset": "v2"}}},
	}
	_ = unstructured.SetNestedSlice(cur.Object, append([]interface{}{front}, http...), "spec", "http")
	if _, err := f.dyn.Resource(VirtualServices).Namespace("shop").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := undo(t, f); err != nil {
		t.Fatal(err)
	}
	want := "- match:\n  - uri:\n      prefix: /beta\n  route:\n  - destination:\n      host: backend\n      subset: v2\n- route:\n  - destination:\n      host: backend\n      subset: v1\n"
	got := get(t, f, VirtualServices, "shop", "backend")
	if g := toYAML(t, got.Object["spec"].(map[string]interface{})["http"]); g != want {
		t.Errorf("after undo:\n%s\nwant:\n%s", g, want)
	}
	// Someone edits the weights split wrote: undo will not overwrite it.
	if _, err := undo(t, f); err != nil { // redo
		t.Fatal(err)
	}
	cur = get(t, f, VirtualServices, "shop", "backend")
	http, _, _ = unstructured.NestedSlice(cur.Object, "spec", "http")
	dests := http[1].(map[string]interface{})["route"].([]interface{})
	dests[0].(map[string]interface{})["weight"] = int64(70)
	dests[1].(map[string]interface{})["weight"] = int64(30)
	_ = unstructured.SetNestedSlice(cur.Object, http, "spec", "http")
	if _, err := f.dyn.Resource(VirtualServices).Namespace("shop").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.dyn.ClearActions()
	_, err := undo(t, f)
	wantErr := "cannot undo the split of service shop/backend: route http[1] of virtualservice backend was changed since the last split (its destinations are no longer what split wrote), and undo would overwrite that change; set weights explicitly"
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error:\n got: %v\nwant: %s", err, wantErr)
	}
	if w := writes(f); len(w) > 0 {
		t.Errorf("wrote %v", w)
	}
}

// TestUndoDeletesWhatSplitCreated: undo of the first split leaves the
// namespace as it was, unless the objects were changed or are in use.
func TestUndoDeletesWhatSplitCreated(t *testing.T) {
	f := newFakes(shopBackend())
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")}); err != nil {
		t.Fatal(err)
	}
	res, err := undo(t, f)
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "deleted"},
		{Resource: "destinationrule.networking.istio.io", Name: "backend", Op: "deleted"},
	}
	if !reflect.DeepEqual(res.Changes, want) {
		t.Errorf("changes = %v, want %v", res.Changes, want)
	}
	for _, gvr := range []schema.GroupVersionResource{VirtualServices, DestinationRules} {
		if l, _ := f.dyn.Resource(gvr).Namespace("shop").List(context.Background(), metav1.ListOptions{}); len(l.Items) > 0 {
			t.Errorf("%s left: %s", gvr.Resource, l.Items[0].GetName())
		}
	}
	var nh *NoHistoryError
	if _, err := undo(t, f); !errors.As(err, &nh) {
		t.Errorf("second undo: %v, want nothing to undo", err)
	}

	// A DestinationRule changed since it was created stays.
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")}); err != nil {
		t.Fatal(err)
	}
	d := get(t, f, DestinationRules, "shop", "backend")
	d.SetGeneration(2)
	if _, err := f.dyn.Resource(DestinationRules).Namespace("shop").Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err = undo(t, f)
	if err != nil {
		t.Fatal(err)
	}
	wantNotes := []string{
		"kept destinationrule shop/backend, which the split created: it was changed since; delete it yourself when nothing needs it",
		"no VirtualService routes service shop/backend: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50",
	}
	if !reflect.DeepEqual(res.Notes, wantNotes) {
		t.Errorf("notes = %q", res.Notes)
	}
	get(t, f, DestinationRules, "shop", "backend")
}

func TestUndoDeletesCreatedServicesNotInUse(t *testing.T) {
	other := obj(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: frontend}]
  rules:
  - backendRefs: [{name: backend-v2, port: 8080}]
`)
	f := newFakes(shopBackend(), other)
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", API: APIGateway, CreateServices: true, Weights: mustWeights(t, "50/50")}); err != nil {
		t.Fatal(err)
	}
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", API: APIGateway, Undo: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{
		{Resource: "httproute.gateway.networking.k8s.io", Name: "backend", Op: "deleted"},
		{Resource: "service", Name: "backend-v1", Op: "deleted"},
	}
	if !reflect.DeepEqual(res.Changes, want) {
		t.Errorf("changes = %v, want %v", res.Changes, want)
	}
	if len(res.Notes) == 0 || res.Notes[0] != "kept service shop/backend-v2, which the split created: httproute other still sends traffic to it" {
		t.Errorf("notes = %q", res.Notes)
	}
}

// TestSplitRichVirtualServiceRoundTrip: every field split was not asked
// to change comes out byte-for-byte the same, and undo restores the spec.
func TestSplitRichVirtualServiceRoundTrip(t *testing.T) {
	vs := readYAML(t, "testdata/rich-vs.yaml")
	f := newFakes(shopBackend(), vs.DeepCopy(), dr(t, "backend", "shop", "backend", "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n"))
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "v1=25,v2=75")}); err != nil {
		t.Fatal(err)
	}
	want := vs.DeepCopy()
	http, _, _ := unstructured.NestedSlice(want.Object, "spec", "http")
	dests := http[3].(map[string]interface{})["route"].([]interface{})
	dests[0].(map[string]interface{})["weight"] = int64(25)
	dests[1].(map[string]interface{})["weight"] = int64(75)
	_ = unstructured.SetNestedSlice(want.Object, http, "spec", "http")
	got := get(t, f, VirtualServices, "shop", "backend-rich")
	removeAnnotation(got, AnnotationPrevious)
	if g, w := toYAML(t, got.Object), toYAML(t, want.Object); g != w {
		t.Errorf("after split:\n%s\nwant:\n%s", g, w)
	}
	if _, err := undo(t, f); err != nil {
		t.Fatal(err)
	}
	got = get(t, f, VirtualServices, "shop", "backend-rich")
	if g, w := toYAML(t, got.Object["spec"]), toYAML(t, vs.Object["spec"]); g != w {
		t.Errorf("after undo:\n%s\nwant:\n%s", g, w)
	}
}
