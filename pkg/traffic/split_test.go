package traffic

import (
	"context"
	"errors"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func mustWeights(t *testing.T, s string) *Weights {
	t.Helper()
	w, err := ParseWeights(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func get(t *testing.T, f fakes, gvr interface{ String() string }, ns, name string) *unstructured.Unstructured {
	t.Helper()
	var obj *unstructured.Unstructured
	var err error
	switch gvr {
	case VirtualServices:
		obj, err = f.dyn.Resource(VirtualServices).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	case DestinationRules:
		obj, err = f.dyn.Resource(DestinationRules).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	case HTTPRoutes:
		obj, err = f.dyn.Resource(HTTPRoutes).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	case Services:
		obj, err = f.dyn.Resource(Services).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func TestSplitCreatesObjects(t *testing.T) {
	f := newFakes(shopBackend())
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "80/20")})
	if err != nil {
		t.Fatal(err)
	}
	wantChanges := []Change{
		{Resource: "destinationrule.networking.istio.io", Name: "backend", Op: "created"},
		{Resource: "virtualservice.networking.istio.io", Name: "backend", Op: "created"},
	}
	if !reflect.DeepEqual(res.Changes, wantChanges) {
		t.Errorf("changes = %v, want %v", res.Changes, wantChanges)
	}
	wantRows := []Row{{"http[0]", "v1", 80, 2, 2}, {"http[0]", "v2", 20, 0, 1}}
	if !reflect.DeepEqual(res.Rows, wantRows) {
		t.Errorf("rows = %v, want %v", res.Rows, wantRows)
	}
	dr := get(t, f, DestinationRules, "shop", "backend")
	wantDR := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: backend
  namespace: shop
spec:
  host: backend
  subsets:
  - labels:
      version: v1
    name: v1
  - labels:
      version: v2
    name: v2
`
	if got := toYAML(t, dr.Object); got != wantDR {
		t.Errorf("destination rule:\n%s\nwant:\n%s", got, wantDR)
	}
	vs := get(t, f, VirtualServices, "shop", "backend")
	wantVS := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  annotations:
    traffic.kubectl-mesh.io/previous-split: '{"route":"http[0]","added":true,"written":[{"destination":{"host":"backend","subset":"v1"},"weight":80},{"destination":{"host":"backend","subset":"v2"},"weight":20}],"created":["virtualservice/backend","destinationrule/backend"]}'
  name: backend
  namespace: shop
spec:
  hosts:
  - backend
  http:
  - route:
    - destination:
        host: backend
        subset: v1
      weight: 80
    - destination:
        host: backend
        subset: v2
      weight: 20
`
	if got := toYAML(t, vs.Object); got != wantVS {
		t.Errorf("virtual service:\n%s\nwant:\n%s", got, wantVS)
	}
}

// An existing VirtualService comes out identical except for the weights of
// the default route (and the undo annotation); --undo brings it back.
func TestSplitKeepsEverythingElse(t *testing.T) {
	vs := readYAML(t, "testdata/complex-vs.yaml")
	dr := readYAML(t, "testdata/complex-dr.yaml")
	f := newFakes(shopBackend(), vs.DeepCopy(), dr.DeepCopy())
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Route: "main", Weights: mustWeights(t, "v1=50,v2=50")})
	if err != nil {
		t.Fatal(err)
	}
	wantChanges := []Change{
		{Resource: "destinationrule.networking.istio.io", Name: "backend-policy", Op: "unchanged"},
		{Resource: "virtualservice.networking.istio.io", Name: "backend-routes", Op: "configured"},
	}
	if !reflect.DeepEqual(res.Changes, wantChanges) {
		t.Errorf("changes = %v, want %v", res.Changes, wantChanges)
	}

	want := vs.DeepCopy()
	http, _, _ := unstructured.NestedSlice(want.Object, "spec", "http")
	dests := http[2].(map[string]interface{})["route"].([]interface{})
	dests[0].(map[string]interface{})["weight"] = int64(50)
	dests[1].(map[string]interface{})["weight"] = int64(50)
	_ = unstructured.SetNestedSlice(want.Object, http, "spec", "http")
	a := want.GetAnnotations()
	a[AnnotationPrevious] = `{"route":"main","destinations":[{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":90},{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v2"},"weight":10}],"written":[{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":50},{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v2"},"weight":50}]}`
	want.SetAnnotations(a)
	got := get(t, f, VirtualServices, "shop", "backend-routes")
	if g, w := toYAML(t, got.Object), toYAML(t, want.Object); g != w {
		t.Errorf("virtual service:\n%s\nwant:\n%s", g, w)
	}
	if g, w := toYAML(t, get(t, f, DestinationRules, "shop", "backend-policy").Object), toYAML(t, dr.Object); g != w {
		t.Errorf("destination rule changed:\n%s\nwant:\n%s", g, w)
	}

	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Undo: true}); err != nil {
		t.Fatal(err)
	}
	got = get(t, f, VirtualServices, "shop", "backend-routes")
	if g, w := toYAML(t, got.Object["spec"]), toYAML(t, vs.Object["spec"]); g != w {
		t.Errorf("after undo:\n%s\nwant:\n%s", g, w)
	}
	wantPrev := `{"route":"main","destinations":[{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":50},{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v2"},"weight":50}],"written":[{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v1"},"headers":{"response":{"add":{"x-version":"v1"}}},"weight":90},{"destination":{"host":"backend.shop.svc.cluster.local","port":{"number":8080},"subset":"v2"},"weight":10}]}`
	if g := got.GetAnnotations()[AnnotationPrevious]; g != wantPrev {
		t.Errorf("annotation after undo = %s, want %s", g, wantPrev)
	}
}

func TestSplitDefaultRouteAndNewSubset(t *testing.T) {
	vs := readYAML(t, "testdata/complex-vs.yaml")
	dr := readYAML(t, "testdata/complex-dr.yaml")
	objs := append(shopBackend(), pod("shop", "backend-v3-a", map[string]string{"app": "backend", "version": "v3"}, true))
	f := newFakes(objs, vs, dr)
	// No --route: the first route without match conditions is "main".
	// v2, left out, stays in the route with no traffic.
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "v1=70,v3=30")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changes[0].Op != "configured" {
		t.Errorf("destination rule: %v, want configured", res.Changes[0])
	}
	gotDR := get(t, f, DestinationRules, "shop", "backend-policy")
	subsets, _, _ := unstructured.NestedSlice(gotDR.Object, "spec", "subsets")
	if g, w := toYAML(t, subsets[2]), "labels:\n  version: v3\nname: v3\n"; g != w {
		t.Errorf("new subset:\n%s\nwant:\n%s", g, w)
	}
	if g, w := toYAML(t, gotDR.Object["spec"].(map[string]interface{})["trafficPolicy"]), toYAML(t, dr.Object["spec"].(map[string]interface{})["trafficPolicy"]); g != w {
		t.Errorf("traffic policy changed:\n%s", g)
	}
	gotVS := get(t, f, VirtualServices, "shop", "backend-routes")
	http, _, _ := unstructured.NestedSlice(gotVS.Object, "spec", "http")
	wantRoute := `- destination:
    host: backend.shop.svc.cluster.local
    port:
      number: 8080
    subset: v1
  headers:
    response:
      add:
        x-version: v1
  weight: 70
- destination:
    host: backend.shop.svc.cluster.local
    port:
      number: 8080
    subset: v2
  weight: 0
- destination:
    host: backend.shop.svc.cluster.local
    port:
      number: 8080
    subset: v3
  weight: 30
`
	if g := toYAML(t, http[2].(map[string]interface{})["route"]); g != wantRoute {
		t.Errorf("route:\n%s\nwant:\n%s", g, wantRoute)
	}
	wantRows := []Row{
		{"canary-header", "v2", 100, 0, 1},
		{"reviews-fault", "v1", 100, 2, 2},
		{"main", "v1", 70, 2, 2},
		{"main", "v2", 0, 0, 1},
		{"main", "v3", 30, 1, 1},
	}
	if !reflect.DeepEqual(res.Rows, wantRows) {
		t.Errorf("rows = %v, want %v", res.Rows, wantRows)
	}
}

func TestSplitAppendsRouteWhenAllHaveMatches(t *testing.T) {
	vs := readYAML(t, "testdata/complex-vs.yaml")
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	_ = unstructured.SetNestedSlice(vs.Object, http[:2], "spec", "http")
	f := newFakes(shopBackend(), vs)
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")}); err != nil {
		t.Fatal(err)
	}
	got := get(t, f, VirtualServices, "shop", "backend-routes")
	gotHTTP, _, _ := unstructured.NestedSlice(got.Object, "spec", "http")
	if len(gotHTTP) != 3 || toYAML(t, gotHTTP[:2]) != toYAML(t, http[:2]) {
		t.Fatalf("routes:\n%s", toYAML(t, gotHTTP))
	}
	if g := got.GetAnnotations()[AnnotationPrevious]; g != `{"route":"http[2]","added":true,"written":[{"destination":{"host":"backend","subset":"v1"},"weight":50},{"destination":{"host":"backend","subset":"v2"},"weight":50}],"created":["destinationrule/backend"]}` {
		t.Errorf("annotation = %s", g)
	}
	// Undo removes the added route and leaves nothing to redo.
	if _, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Undo: true}); err != nil {
		t.Fatal(err)
	}
	got = get(t, f, VirtualServices, "shop", "backend-routes")
	if g, w := toYAML(t, got.Object["spec"]), toYAML(t, vs.Object["spec"]); g != w {
		t.Errorf("after undo:\n%s\nwant:\n%s", g, w)
	}
	_, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Undo: true})
	var nh *NoHistoryError
	if !errors.As(err, &nh) {
		t.Fatalf("second undo: %v, want NoHistoryError", err)
	}
}

func TestSplitUnchanged(t *testing.T) {
	f := newFakes(shopBackend())
	cfg := SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50")}
	if _, err := Split(context.Background(), f.Clients, cfg); err != nil {
		t.Fatal(err)
	}
	res, err := Split(context.Background(), f.Clients, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Changes {
		if c.Op != "unchanged" {
			t.Errorf("%v, want unchanged", c)
		}
	}
}

func TestSplitErrors(t *testing.T) {
	noVersion := []runtime.Object{
		service("shop", "backend", map[string]string{"app": "backend"}, 8080),
		pod("shop", "backend-a", map[string]string{"app": "backend"}, true),
	}
	twoVS := []runtime.Object{readYAML(t, "testdata/complex-vs.yaml"), func() runtime.Object {
		u := readYAML(t, "testdata/complex-vs.yaml")
		u.SetName("second")
		return u
	}()}
	tests := []struct {
		name    string
		kube    []runtime.Object
		dyn     []runtime.Object
		cfg     SplitConfig
		noIstio bool
		err     string
	}{
		{name: "unknown subset", kube: shopBackend(), cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "v1=50,v3=50")},
			err: `subset "v3" not found: no pods behind service shop/backend have version=v3 (versions found: v1, v2); deploy it first or pass --allow-empty`},
		{name: "missing service", kube: shopBackend(), cfg: SplitConfig{Service: "nope", Weights: mustWeights(t, "50/50")},
			err: `service "nope" not found in namespace "shop"; list services with: kubectl get services -n shop`},
		{name: "no version labels", kube: noVersion, cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "100")},
			err: `no pods behind service shop/backend have a "version" label (1 pod matches app=backend); label the pod templates (e.g. version=v1) or name the label with --subset-label`},
		{name: "no pods", kube: noVersion[:1], cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "100")},
			err: `no pods behind service shop/backend (selector app=backend); deploy the workload first`},
		{name: "count mismatch", kube: shopBackend(), cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "100")},
			err: `invalid weights "100": 1 weight for 2 subsets (v1, v2, in version order); give one weight per subset or name them, e.g. v1=100,v2=0`},
		{name: "istio absent", kube: shopBackend(), noIstio: true, cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "50/50")},
			err: `istio CRDs are not installed in this cluster (no networking.istio.io/v1 VirtualService); install Istio first`},
		{name: "gateway api absent", kube: shopBackend(), noIstio: true, cfg: SplitConfig{Service: "backend", API: APIGateway, Weights: mustWeights(t, "50/50")},
			err: `Gateway API CRDs are not installed in this cluster (no gateway.networking.k8s.io/v1 HTTPRoute); install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)`},
		{name: "two virtual services", kube: shopBackend(), dyn: twoVS, cfg: SplitConfig{Service: "backend", Weights: mustWeights(t, "50/50")},
			err: `service shop/backend is routed by 2 VirtualServices (backend-routes, second); Istio uses only one of them for mesh traffic: merge them into one, then split again`},
		{name: "unknown route", kube: shopBackend(), dyn: twoVS[:1], cfg: SplitConfig{Service: "backend", Route: "nope", Weights: mustWeights(t, "50/50")},
			err: `route "nope" not found in virtualservice backend-routes (routes: canary-header, reviews-fault, main); pass one of them to --route`},
		{name: "undo without history", kube: shopBackend(), dyn: twoVS[:1], cfg: SplitConfig{Service: "backend", Undo: true},
			err: `nothing to undo for service shop/backend: virtualservice backend-routes has no traffic.kubectl-mesh.io/previous-split annotation (kubectl mesh split records one each time it changes weights)`},
		{name: "undo without virtual service", kube: shopBackend(), cfg: SplitConfig{Service: "backend", Undo: true},
			err: `nothing to undo for service shop/backend: no VirtualService routes it`},
		{name: "gateway services missing", kube: shopBackend(), cfg: SplitConfig{Service: "backend", API: APIGateway, Weights: mustWeights(t, "50/50")},
			err: `--api gateway routes to one Service per version, and services backend-v1, backend-v2 are not found in namespace shop; pass --create-services to create them (each selects the service's pods plus version=<version>)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes(tt.kube, tt.dyn...)
			if tt.noIstio {
				f.kube.Resources = nil
			}
			tt.cfg.Namespace = "shop"
			_, err := Split(context.Background(), f.Clients, tt.cfg)
			if err == nil || err.Error() != tt.err {
				t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
			}
			if len(tt.dyn) > 0 {
				for _, a := range f.dyn.Actions() {
					if a.GetVerb() != "list" && a.GetVerb() != "get" {
						t.Errorf("unexpected write %s %s", a.GetVerb(), a.GetResource())
					}
				}
			}
		})
	}
}

func TestSplitDryRunClientWritesNothing(t *testing.T) {
	f := newFakes(shopBackend())
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50"), DryRun: DryRunClient})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 2 {
		t.Fatalf("objects: %d", len(res.Objects))
	}
	for _, a := range f.dyn.Actions() {
		if a.GetVerb() != "list" {
			t.Errorf("unexpected %s %s", a.GetVerb(), a.GetResource())
		}
	}
}

func TestSplitGatewayAPI(t *testing.T) {
	f := newFakes(shopBackend())
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", API: APIGateway, CreateServices: true, Weights: mustWeights(t, "90/10")})
	if err != nil {
		t.Fatal(err)
	}
	wantChanges := []Change{
		{Resource: "service", Name: "backend-v1", Op: "created"},
		{Resource: "service", Name: "backend-v2", Op: "created"},
		{Resource: "httproute.gateway.networking.k8s.io", Name: "backend", Op: "created"},
	}
	if !reflect.DeepEqual(res.Changes, wantChanges) {
		t.Errorf("changes = %v, want %v", res.Changes, wantChanges)
	}
	wantSvc := `apiVersion: v1
kind: Service
metadata:
  labels:
    traffic.kubectl-mesh.io/service: backend
    version: v2
  name: backend-v2
  namespace: shop
spec:
  ports:
  - name: http
    port: 8080
    targetPort: 8080
  selector:
    app: backend
    version: v2
`
	if g := toYAML(t, get(t, f, Services, "shop", "backend-v2").Object); g != wantSvc {
		t.Errorf("service:\n%s\nwant:\n%s", g, wantSvc)
	}
	wantRoute := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  annotations:
    traffic.kubectl-mesh.io/previous-split: '{"route":"rules[0]","added":true,"written":[{"name":"backend-v1","port":8080,"weight":90},{"name":"backend-v2","port":8080,"weight":10}],"created":["httproute/backend","service/backend-v1","service/backend-v2"]}'
  name: backend
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: backend
  rules:
  - backendRefs:
    - name: backend-v1
      port: 8080
      weight: 90
    - name: backend-v2
      port: 8080
      weight: 10
`
	if g := toYAML(t, get(t, f, HTTPRoutes, "shop", "backend").Object); g != wantRoute {
		t.Errorf("route:\n%s\nwant:\n%s", g, wantRoute)
	}
	wantRows := []Row{{"rules[0]", "v1", 90, 2, 2}, {"rules[0]", "v2", 10, 0, 1}}
	if !reflect.DeepEqual(res.Rows, wantRows) {
		t.Errorf("rows = %v, want %v", res.Rows, wantRows)
	}
}

func TestShowWithoutVirtualService(t *testing.T) {
	f := newFakes(shopBackend())
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend"})
	if err != nil {
		t.Fatal(err)
	}
	wantRows := []Row{{"<none>", "v1", -1, 2, 2}, {"<none>", "v2", -1, 0, 1}}
	if !reflect.DeepEqual(res.Rows, wantRows) {
		t.Errorf("rows = %v, want %v", res.Rows, wantRows)
	}
	wantNotes := []string{"no VirtualService routes service shop/backend: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50"}
	if !reflect.DeepEqual(res.Notes, wantNotes) {
		t.Errorf("notes = %q", res.Notes)
	}
}

func TestHostMatches(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"backend", true}, {"backend.shop", true}, {"backend.shop.svc", true}, {"backend.shop.svc.cluster.local", true},
		{"backend.other", false}, {"backend2", false}, {"*", false}, {"backend.shop.svc.example", true},
	} {
		if got := hostMatches(tt.host, "backend", "shop"); got != tt.want {
			t.Errorf("hostMatches(%q) = %v", tt.host, got)
		}
	}
}
