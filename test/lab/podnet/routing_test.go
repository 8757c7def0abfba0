package podnet

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	apinetworking "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const backendFQDN = "backend.default.svc.cluster.local"

func ep(pod, version string, sidecar bool) Endpoint {
	l := map[string]string{"app": "backend-app", "version": version}
	if sidecar {
		l[tlsModeLabel] = "istio"
	}
	return Endpoint{Namespace: "default", Pod: pod, IP: netip.MustParseAddr("10.244.0.9"), Labels: l, ServiceAccount: "backend"}
}

func vs(name string, created int, gateways []string, hosts []string, routes ...*apinetworking.HTTPRoute) *networkingv1.VirtualService {
	v := &networkingv1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(time.Unix(int64(created), 0))}}
	v.Spec.Hosts, v.Spec.Gateways, v.Spec.Http = hosts, gateways, routes
	return v
}

func route(match string, dests ...*apinetworking.HTTPRouteDestination) *apinetworking.HTTPRoute {
	r := &apinetworking.HTTPRoute{Route: dests}
	if match != "" {
		r.Match = []*apinetworking.HTTPMatchRequest{{Uri: &apinetworking.StringMatch{MatchType: &apinetworking.StringMatch_Prefix{Prefix: match}}}}
	}
	return r
}

func dest(host, subset string, weight int32) *apinetworking.HTTPRouteDestination {
	return &apinetworking.HTTPRouteDestination{Destination: &apinetworking.Destination{Host: host, Subset: subset}, Weight: weight}
}

func subsetsDR() *networkingv1.DestinationRule {
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "default"}}
	dr.Spec.Host = "backend"
	dr.Spec.Subsets = []*apinetworking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
	return dr
}

func routesWith(vss ...*networkingv1.VirtualService) Routes {
	eps := map[string][]Endpoint{
		backendFQDN:                          {ep("b1", "v1", true), ep("b2", "v2", true)},
		"frontend.default.svc.cluster.local": {{Namespace: "default", Pod: "f1", Labels: map[string]string{"app": "frontend-app"}}},
	}
	return Routes{VirtualServices: vss, DestinationRules: []*networkingv1.DestinationRule{subsetsDR()}, Endpoints: func(h string) []Endpoint { return eps[h] }}
}

func meshReq() Request {
	return Request{Gateway: MeshGateway, Namespace: "default", Host: "backend", Path: "/greetings"}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name    string
		routes  Routes
		req     Request
		want    map[string]bool // pods that may be picked
		wantSub string
		wantErr string
	}{
		{name: "no VirtualService: any endpoint", routes: routesWith(), req: meshReq(), want: map[string]bool{"b1": true, "b2": true}},
		{name: "all to v2", routes: routesWith(vs("backend", 1, nil, []string{"backend"}, route("", dest("backend", "v1", 0), dest("backend", "v2", 100)))),
			req: meshReq(), want: map[string]bool{"b2": true}, wantSub: "v2"},
		{name: "FQDN host, single destination without weight", routes: routesWith(vs("backend", 1, []string{"mesh"}, []string{backendFQDN}, route("", dest("backend.default", "v1", 0)))),
			req: meshReq(), want: map[string]bool{"b1": true}, wantSub: "v1"},
		{name: "gateway-only VirtualService does not apply to sidecars", routes: routesWith(vs("backend", 1, []string{"gw"}, []string{"backend"}, route("", dest("backend", "v2", 100)))),
			req: meshReq(), want: map[string]bool{"b1": true, "b2": true}},
		{name: "oldest VirtualService wins", routes: routesWith(
			vs("newer", 2, nil, []string{"backend"}, route("", dest("backend", "v1", 100))),
			vs("older", 1, nil, []string{"backend"}, route("", dest("backend", "v2", 100)))),
			req: meshReq(), want: map[string]bool{"b2": true}, wantSub: "v2"},
		{name: "first matching route", routes: routesWith(vs("backend", 1, nil, []string{"backend"},
			route("/admin", dest("backend", "v1", 100)), route("/greet", dest("backend", "v2", 100)))),
			req: meshReq(), want: map[string]bool{"b2": true}, wantSub: "v2"},
		{name: "no route matches", routes: routesWith(vs("backend", 1, nil, []string{"backend"}, route("/admin", dest("backend", "v1", 100)))),
			req: meshReq(), wantErr: "404 no route matched"},
		{name: "unknown subset", routes: routesWith(vs("backend", 1, nil, []string{"backend"}, route("", dest("backend", "v3", 100)))),
			req: meshReq(), wantErr: `503 no subset "v3" of backend.default.svc.cluster.local in any DestinationRule`},
		{name: "subset without pods", routes: func() Routes {
			r := routesWith(vs("backend", 1, nil, []string{"backend"}, route("", dest("backend", "v2", 100))))
			r.Endpoints = func(string) []Endpoint { return []Endpoint{ep("b1", "v1", true)} }
			return r
		}(), req: meshReq(), wantErr: "503 no healthy upstream for v2 of backend.default.svc.cluster.local"},
		{name: "Service without endpoints", routes: Routes{Endpoints: func(string) []Endpoint { return nil }}, req: meshReq(),
			wantErr: "503 no healthy upstream for backend.default.svc.cluster.local"},
		{name: "ingress gateway, any host", routes: routesWith(vs("frontend-ingress", 1, []string{"frontend-gateway"}, []string{"*"}, route("/", dest("frontend", "", 0)))),
			req: Request{Gateway: "default/frontend-gateway", Namespace: "istio-system", Host: "10.243.0.2:31080", Path: "/"}, want: map[string]bool{"f1": true}},
		{name: "ingress gateway, wildcard host", routes: routesWith(vs("shop", 1, []string{"default/frontend-gateway"}, []string{"*.example.com"}, route("/shop", dest("frontend", "", 0)))),
			req: Request{Gateway: "default/frontend-gateway", Namespace: "istio-system", Host: "www.example.com", Path: "/shop/cart"}, want: map[string]bool{"f1": true}},
		{name: "ingress gateway, other host", routes: routesWith(vs("shop", 1, []string{"frontend-gateway"}, []string{"shop.example.com"}, route("", dest("frontend", "", 0)))),
			req: Request{Gateway: "default/frontend-gateway", Namespace: "istio-system", Host: "10.243.0.2:31080", Path: "/"}, wantErr: "404 no VirtualService for host 10.243.0.2"},
		{name: "mesh VirtualService does not apply to the gateway", routes: routesWith(vs("backend", 1, nil, []string{"*"}, route("", dest("backend", "", 0)))),
			req: Request{Gateway: "default/frontend-gateway", Namespace: "istio-system", Host: "backend", Path: "/"}, wantErr: "404 no VirtualService for host backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 50; i++ {
				got, err := tt.routes.Pick(rnd, tt.req)
				if tt.wantErr != "" {
					if err == nil || err.Error() != tt.wantErr {
						t.Fatalf("error = %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !tt.want[got.Pod] || got.Subset != tt.wantSub {
					t.Fatalf("picked %s (subset %q), want one of %v (subset %q)", got.Pod, got.Subset, tt.want, tt.wantSub)
				}
			}
		})
	}
}

// TestPickWeights checks the weighted choice over many requests. The
// random source is seeded, so the counts are the same on every run.
func TestPickWeights(t *testing.T) {
	for _, w := range []int32{0, 10, 50, 80, 100} {
		r := routesWith(vs("backend", 1, nil, []string{"backend"}, route("", dest("backend", "v1", 100-w), dest("backend", "v2", w))))
		rnd := rand.New(rand.NewPCG(3, 4))
		const n = 10000
		v2 := 0
		for i := 0; i < n; i++ {
			got, err := r.Pick(rnd, meshReq())
			if err != nil {
				t.Fatal(err)
			}
			if got.Subset == "v2" {
				v2++
			}
		}
		if pct := float64(v2) * 100 / n; pct < float64(w)-2 || pct > float64(w)+2 {
			t.Errorf("weight %d%% to v2: %.1f%% of %d requests went there", w, pct, n)
		}
	}
}

func TestTargetSNI(t *testing.T) {
	for _, tt := range []struct {
		t    Target
		want string
	}{
		{Target{Host: backendFQDN, Port: 80}, "outbound_.80_._.backend.default.svc.cluster.local"},
		{Target{Host: backendFQDN, Subset: "v2", Port: 80}, "outbound_.80_.v2_.backend.default.svc.cluster.local"},
	} {
		if got := tt.t.SNI(); got != tt.want {
			t.Errorf("SNI() = %q, want %q", got, tt.want)
		}
	}
}

func TestFQDN(t *testing.T) {
	for _, tt := range []struct{ host, ns, want string }{
		{"backend", "default", backendFQDN},
		{"backend.default", "shop", backendFQDN},
		{"backend.default.svc", "shop", backendFQDN},
		{"Backend.default.svc.cluster.local.", "shop", backendFQDN},
		{"example.com.", "default", "example.com.svc.cluster.local"},
		{"www.example.com", "default", "www.example.com"},
	} {
		if got := fqdn(tt.host, tt.ns); got != tt.want {
			t.Errorf("fqdn(%q, %q) = %q, want %q", tt.host, tt.ns, got, tt.want)
		}
	}
}

func TestLogLine(t *testing.T) {
	ok := Result{Target: Target{Endpoint: ep("backend-app-v2-abc", "v2", true)}, MTLS: true, Status: 200, Body: Greeting("v2") + "\n"}
	for _, tt := range []struct {
		r    Result
		err  error
		want string
	}{
		{ok, nil, `call backend: 200 v2 backend-app-v2-abc 10.244.0.9 mtls {"greetings":"Hi TGN meetup from v2"}`},
		{Result{}, &RouteError{Status: 503, Reason: "no healthy upstream for backend.default.svc.cluster.local"}, "call backend: 503 - - - - no healthy upstream for backend.default.svc.cluster.local"},
		{Result{Target: ok.Target}, errString("connecting to 10.244.0.9:80: connection refused"), "call backend: 503 v2 backend-app-v2-abc 10.244.0.9 plaintext connecting to 10.244.0.9:80: connection refused"},
	} {
		if got := LogLine(tt.r, tt.err); got != tt.want {
			t.Errorf("LogLine() =\n%s\nwant\n%s", got, tt.want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }
