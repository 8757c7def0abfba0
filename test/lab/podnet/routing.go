package podnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	apinetworking "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// MeshGateway is the gateway name of sidecar routing in a VirtualService.
const MeshGateway = "mesh"

// tlsModeLabel is what Istio's injector puts on pods with a sidecar; a
// client proxy uses mTLS to endpoints that carry it (auto mTLS).
const tlsModeLabel = "security.istio.io/tlsMode"

// Endpoint is a ready pod behind a Service.
type Endpoint struct {
	Namespace      string
	Pod            string
	IP             netip.Addr
	Labels         map[string]string
	ServiceAccount string
}

// IstioMTLS says whether the endpoint's proxy takes Istio mTLS.
func (e Endpoint) IstioMTLS() bool { return e.Labels[tlsModeLabel] == "istio" }

// Target is where one request goes.
type Target struct {
	// Host is the destination Service's FQDN; Subset the DestinationRule
	// subset ("" for none); Port the Service port.
	Host   string
	Subset string
	Port   int
	Endpoint
}

// SNI is what a sidecar sends when it opens mTLS to the target:
// outbound_.PORT_.SUBSET_.HOST, as Istio names its clusters.
func (t Target) SNI() string {
	return fmt.Sprintf("outbound_.%d_.%s_.%s", t.Port, t.Subset, t.Host)
}

// Request is one HTTP request as a proxy sees it.
type Request struct {
	// Gateway is MeshGateway for a sidecar, or NAMESPACE/NAME of the
	// Gateway an ingress gateway serves.
	Gateway string
	// Namespace resolves short host names: the client's namespace.
	Namespace string
	// Host is the Host header (a Service name or FQDN in the mesh).
	Host string
	Path string
}

// Routes is the routing configuration a proxy sees.
type Routes struct {
	VirtualServices  []*networkingv1.VirtualService
	DestinationRules []*networkingv1.DestinationRule
	// Endpoints lists the ready endpoints of a Service by FQDN.
	Endpoints func(host string) []Endpoint
}

// RouteError is a request the proxy cannot route, with the HTTP status
// Envoy would answer.
type RouteError struct {
	Status int
	Reason string
}

func (e *RouteError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Reason) }

// Pick chooses the target of req the way Istio's proxies do: the oldest
// VirtualService for the host and gateway, its first HTTP route whose match
// fits, a weighted destination, the DestinationRule subset's endpoints,
// then any one of those. In the mesh, a host without a VirtualService goes
// straight to the Service.
func (r Routes) Pick(rnd *rand.Rand, req Request) (Target, error) {
	host := stripPort(req.Host)
	for _, vs := range sortedVirtualServices(r.VirtualServices) {
		if !boundTo(vs, req.Gateway) || !vsHostMatches(vs, req, host) {
			continue
		}
		for _, route := range vs.Spec.GetHttp() {
			if !routeMatches(route.GetMatch(), req.Path) {
				continue
			}
			dests := route.GetRoute()
			if len(dests) == 0 {
				return Target{}, &RouteError{Status: 404, Reason: "route has no destination"}
			}
			d := pickWeighted(rnd, dests)
			port := 80
			if p := d.GetDestination().GetPort().GetNumber(); p != 0 {
				port = int(p)
			}
			return r.pickEndpoint(rnd, fqdn(d.GetDestination().GetHost(), vs.Namespace), d.GetDestination().GetSubset(), port)
		}
		return Target{}, &RouteError{Status: 404, Reason: "no route matched"}
	}
	if req.Gateway != MeshGateway {
		return Target{}, &RouteError{Status: 404, Reason: "no VirtualService for host " + host}
	}
	return r.pickEndpoint(rnd, fqdn(host, req.Namespace), "", 80)
}

func (r Routes) pickEndpoint(rnd *rand.Rand, host, subset string, port int) (Target, error) {
	eps := r.Endpoints(host)
	if subset != "" {
		sel, ok := r.subsetSelector(host, subset)
		if !ok {
			return Target{}, &RouteError{Status: 503, Reason: fmt.Sprintf("no subset %q of %s in any DestinationRule", subset, host)}
		}
		var in []Endpoint
		for _, e := range eps {
			if sel.Matches(labels.Set(e.Labels)) {
				in = append(in, e)
			}
		}
		eps = in
	}
	if len(eps) == 0 {
		what := host
		if subset != "" {
			what = subset + " of " + host
		}
		return Target{}, &RouteError{Status: 503, Reason: "no healthy upstream for " + what}
	}
	return Target{Host: host, Subset: subset, Port: port, Endpoint: eps[rnd.IntN(len(eps))]}, nil
}

func (r Routes) subsetSelector(host, subset string) (labels.Selector, bool) {
	drs := append([]*networkingv1.DestinationRule(nil), r.DestinationRules...)
	sort.SliceStable(drs, func(i, j int) bool {
		return older(drs[i].CreationTimestamp.Time, drs[j].CreationTimestamp.Time, drs[i].Name, drs[j].Name)
	})
	for _, dr := range drs {
		if fqdn(dr.Spec.GetHost(), dr.Namespace) != host {
			continue
		}
		for _, s := range dr.Spec.GetSubsets() {
			if s.GetName() == subset {
				return labels.SelectorFromSet(s.GetLabels()), true
			}
		}
	}
	return nil, false
}

func sortedVirtualServices(in []*networkingv1.VirtualService) []*networkingv1.VirtualService {
	out := append([]*networkingv1.VirtualService(nil), in...)
	sort.SliceStable(out, func(i, j int) bool {
		return older(out[i].CreationTimestamp.Time, out[j].CreationTimestamp.Time, out[i].Namespace+"/"+out[i].Name, out[j].Namespace+"/"+out[j].Name)
	})
	return out
}

func older(a, b interface{ UnixNano() int64 }, an, bn string) bool {
	if a.UnixNano() != b.UnixNano() {
		return a.UnixNano() < b.UnixNano()
	}
	return an < bn
}

// boundTo says whether vs applies to gateway: no gateways means the mesh;
// names without a namespace are in the VirtualService's.
func boundTo(vs *networkingv1.VirtualService, gateway string) bool {
	gws := vs.Spec.GetGateways()
	if len(gws) == 0 {
		return gateway == MeshGateway
	}
	for _, g := range gws {
		if g != MeshGateway && !strings.Contains(g, "/") {
			g = vs.Namespace + "/" + g
		}
		if g == gateway {
			return true
		}
	}
	return false
}

func vsHostMatches(vs *networkingv1.VirtualService, req Request, host string) bool {
	for _, h := range vs.Spec.GetHosts() {
		if req.Gateway == MeshGateway {
			if fqdn(h, vs.Namespace) == fqdn(host, req.Namespace) {
				return true
			}
			continue
		}
		switch {
		case h == "*", strings.EqualFold(h, host):
			return true
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(strings.ToLower(host), strings.ToLower(h[1:])):
			return true
		}
	}
	return false
}

// routeMatches evaluates URI matches; a match with conditions podnet does
// not model (headers, methods, ...) never fits, as its requests carry none.
func routeMatches(ms []*apinetworking.HTTPMatchRequest, path string) bool {
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if m.GetHeaders() != nil || m.GetMethod() != nil || m.GetAuthority() != nil || m.GetScheme() != nil ||
			m.GetQueryParams() != nil || m.GetPort() != 0 || m.GetSourceLabels() != nil || m.GetWithoutHeaders() != nil {
			continue
		}
		u := m.GetUri()
		switch {
		case u == nil:
			return true
		case u.GetExact() != "":
			if path == u.GetExact() {
				return true
			}
		case u.GetPrefix() != "":
			if strings.HasPrefix(path, u.GetPrefix()) {
				return true
			}
		case u.GetRegex() != "":
			if re, err := regexp.Compile("^(?:" + u.GetRegex() + ")$"); err == nil && re.MatchString(path) {
				return true
			}
		}
	}
	return false
}

func pickWeighted(rnd *rand.Rand, dests []*apinetworking.HTTPRouteDestination) *apinetworking.HTTPRouteDestination {
	total := 0
	for _, d := range dests {
		total += int(d.GetWeight())
	}
	if total <= 0 {
		return dests[rnd.IntN(len(dests))]
	}
	n := rnd.IntN(total)
	for _, d := range dests {
		if n < int(d.GetWeight()) {
			return d
		}
		n -= int(d.GetWeight())
	}
	return dests[len(dests)-1]
}

// fqdn resolves a Kubernetes host name relative to namespace ns.
func fqdn(host, ns string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch n := strings.Count(host, "."); {
	case n == 0:
		return host + "." + ns + ".svc.cluster.local"
	case n == 1:
		return host + ".svc.cluster.local"
	case strings.HasSuffix(host, ".svc"):
		return host + ".cluster.local"
	}
	return host
}

func stripPort(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.Contains(host[i:], "]") {
		return host[:i]
	}
	return host
}
