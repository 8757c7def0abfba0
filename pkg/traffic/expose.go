package traffic

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// GatewayPort is the port the ingress gateway listens on for exposed
// services: plain HTTP on the gateway Service's port 80.
const GatewayPort = 80

// DefaultGatewaySelector selects Istio's default ingress gateway.
var DefaultGatewaySelector = map[string]string{"istio": "ingressgateway"}

// ExposeConfig is one `kubectl mesh expose` run.
type ExposeConfig struct {
	Namespace string
	Service   string
	// Port is the Service port to send traffic to; 0 means its only port.
	Port int32
	// Host is the host name clients use; "*" accepts any.
	Host       string
	PathPrefix string
	// GatewaySelector picks the ingress gateway pods (Istio API only).
	GatewaySelector map[string]string
	API             API
	DryRun          DryRun
}

// ExposeResult is what Expose did (or would do).
type ExposeResult struct {
	Changes []Change
	Objects []*unstructured.Unstructured
	// URL is where the service can be reached, "" when not known yet.
	URL   string
	Notes []string
}

// GatewayName is the name of the Gateway expose creates for svc.
func GatewayName(svc string) string { return svc + "-gateway" }

// IngressRouteName is the name of the route expose creates for svc.
func IngressRouteName(svc string) string { return svc + "-ingress" }

// Expose makes a Service reachable through an ingress gateway. Existing
// objects are only added to (a gateway, a host, a parentRef), never
// rewritten, and writes retry on conflict from fresh reads.
func Expose(ctx context.Context, c Clients, cfg ExposeConfig) (*ExposeResult, error) {
	if cfg.Host == "" {
		cfg.Host = "*"
	}
	if cfg.PathPrefix == "" {
		cfg.PathPrefix = "/"
	}
	if cfg.API == "" {
		cfg.API = APIIstio
	}
	if cfg.DryRun == "" {
		cfg.DryRun = DryRunNone
	}
	if len(cfg.GatewaySelector) == 0 {
		cfg.GatewaySelector = DefaultGatewaySelector
	}
	if err := ValidateHost(cfg.Host); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.PathPrefix, "/") {
		return nil, fmt.Errorf("invalid --path-prefix %q: it must start with /", cfg.PathPrefix)
	}
	need := []schema.GroupVersionResource{IstioGateways, VirtualServices}
	if cfg.API == APIGateway {
		need = []schema.GroupVersionResource{Gateways, HTTPRoutes}
	}
	for _, gvr := range need {
		if err := RequireAPI(c.Discovery, gvr); err != nil {
			return nil, err
		}
	}
	svc, err := c.Kube.CoreV1().Services(cfg.Namespace).Get(ctx, cfg.Service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("service %q not found in namespace %q; list services with: kubectl get services -n %s", cfg.Service, cfg.Namespace, cfg.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("getting service %s/%s: %w", cfg.Namespace, cfg.Service, err)
	}
	port, err := servicePort(svc, cfg.Port)
	if err != nil {
		return nil, err
	}

	res := &ExposeResult{}
	urlPath := cfg.PathPrefix
	w := writer{dyn: c.Dynamic, dryRun: cfg.DryRun}
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err = retry.OnError(retry.DefaultRetry, retriable, func() error {
		var plan []planned
		var notes []string
		var err error
		if cfg.API == APIGateway {
			plan, notes, err = planExposeGateway(ctx, c, cfg, port)
		} else {
			plan, notes, err = planExposeIstio(ctx, c, cfg, port)
		}
		if err != nil {
			return err
		}
		// The path only applies when expose writes the route itself.
		urlPath = cfg.PathPrefix
		if len(plan) == 2 && !plan[1].create {
			urlPath = "/"
			if cfg.PathPrefix != "/" {
				notes = append(notes, fmt.Sprintf("--path-prefix %s is not applied: %s %s exists and its routes are kept", cfg.PathPrefix, strings.ToLower(plan[1].obj.GetKind()), plan[1].obj.GetName()))
			}
		}
		objs, changes, err := w.apply(ctx, plan)
		if err != nil {
			return err
		}
		res.Objects, res.Changes, res.Notes = objs, changes, notes
		return nil
	})
	if err != nil {
		return nil, err
	}
	urlCfg := cfg
	urlCfg.PathPrefix = urlPath
	url, hints := ingressURL(ctx, c, urlCfg)
	res.URL = url
	res.Notes = append(res.Notes, hints...)
	return res, nil
}

// ValidateHost checks --host: "*", a DNS name, or a wildcard "*.example.com".
func ValidateHost(h string) error {
	if h == "*" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("invalid --host %q: %s; use a DNS name such as shop.example.com, or * for any host", h, errs[0])
	}
	return nil
}

func servicePort(svc *corev1.Service, want int32) (int32, error) {
	var ports []string
	for _, p := range svc.Spec.Ports {
		if want != 0 && p.Port == want {
			return want, nil
		}
		ports = append(ports, strconv.Itoa(int(p.Port)))
	}
	switch {
	case len(ports) == 0:
		return 0, fmt.Errorf("service %s/%s has no ports to expose", svc.Namespace, svc.Name)
	case want != 0:
		return 0, fmt.Errorf("service %s/%s has no port %d (ports: %s); choose one with --port", svc.Namespace, svc.Name, want, strings.Join(ports, ", "))
	case len(ports) > 1:
		return 0, fmt.Errorf("service %s/%s has several ports (%s); choose one with --port", svc.Namespace, svc.Name, strings.Join(ports, ", "))
	}
	return svc.Spec.Ports[0].Port, nil
}

func getOrNil(ctx context.Context, c Clients, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	obj, err := c.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, mesh.Forbidden("get", qualifiedResource(gvr), " in namespace "+ns, err)
	}
	return obj, nil
}

// addString appends s to the string list at path unless present.
func addString(obj map[string]interface{}, s string, path ...string) bool {
	list, _, _ := unstructured.NestedStringSlice(obj, path...)
	for _, x := range list {
		if x == s {
			return false
		}
	}
	l, _, _ := unstructured.NestedSlice(obj, path...)
	_ = unstructured.SetNestedSlice(obj, append(l, s), path...)
	return true
}

func planExposeIstio(ctx context.Context, c Clients, cfg ExposeConfig, port int32) ([]planned, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	var notes []string
	gwName := GatewayName(svc)
	gw, err := getOrNil(ctx, c, IstioGateways, ns, gwName)
	if err != nil {
		return nil, nil, err
	}
	var gwPlan planned
	if gw == nil {
		gw = newObject(IstioGateways, ns, gwName)
		sel := map[string]interface{}{}
		for k, v := range cfg.GatewaySelector {
			sel[k] = v
		}
		gw.Object["spec"] = map[string]interface{}{
			"selector": sel,
			"servers": []interface{}{map[string]interface{}{
				"port":  map[string]interface{}{"number": int64(GatewayPort), "name": "http", "protocol": "HTTP"},
				"hosts": []interface{}{cfg.Host},
			}},
		}
		gwPlan = planned{gvr: IstioGateways, obj: gw, create: true, changed: true}
	} else {
		gw = gw.DeepCopy()
		gwPlan = planned{gvr: IstioGateways, obj: gw, changed: addGatewayHost(gw, cfg.Host)}
	}

	vs, err := getOrNil(ctx, c, VirtualServices, ns, IngressRouteName(svc))
	if err != nil {
		return nil, nil, err
	}
	if vs == nil {
		mesh, _, err := findIstio(ctx, c.Dynamic, ns, svc)
		if err != nil {
			return nil, nil, err
		}
		if mesh != nil {
			if cfg.Host == "*" {
				return nil, nil, fmt.Errorf("virtualservice %s already routes service %s/%s inside the mesh, and Istio does not allow host * on a VirtualService bound to the mesh; pass --host (e.g. --host %s.example.com) to bind it to the gateway under that name",
					mesh.GetName(), ns, svc, svc)
			}
			vs = mesh
		}
	}
	var vsPlan planned
	if vs == nil {
		vs = newObject(VirtualServices, ns, IngressRouteName(svc))
		route := map[string]interface{}{
			"route": []interface{}{map[string]interface{}{
				"destination": map[string]interface{}{"host": svc, "port": map[string]interface{}{"number": int64(port)}},
			}},
		}
		if cfg.PathPrefix != "/" {
			route["match"] = []interface{}{map[string]interface{}{"uri": map[string]interface{}{"prefix": cfg.PathPrefix}}}
		}
		vs.Object["spec"] = map[string]interface{}{
			"hosts":    []interface{}{cfg.Host},
			"gateways": []interface{}{gwName},
			"http":     []interface{}{route},
		}
		vsPlan = planned{gvr: VirtualServices, obj: vs, create: true, changed: true}
	} else {
		vs = vs.DeepCopy()
		changed := false
		// A VirtualService without gateways applies to the mesh; naming a
		// gateway would silently take that away, so keep "mesh" explicit.
		if gws, _, _ := unstructured.NestedStringSlice(vs.Object, "spec", "gateways"); len(gws) == 0 && vs.GetName() != IngressRouteName(svc) {
			changed = addString(vs.Object, "mesh", "spec", "gateways") || changed
		}
		changed = addString(vs.Object, gwName, "spec", "gateways") || changed
		hosts, _, _ := unstructured.NestedStringSlice(vs.Object, "spec", "hosts")
		if !hostCovered(hosts, cfg.Host) {
			if strings.HasPrefix(cfg.Host, "*") {
				// Istio rejects a wildcard next to names it covers as duplicate hosts.
				for _, h := range hosts {
					if hostCovered([]string{cfg.Host}, h) {
						return nil, nil, fmt.Errorf("virtualservice %s already has host %s, which --host %s would duplicate; pass a --host that does not cover it", vs.GetName(), h, cfg.Host)
					}
				}
			}
			changed = addString(vs.Object, cfg.Host, "spec", "hosts") || changed
		}
		vsPlan = planned{gvr: VirtualServices, obj: vs, changed: changed}
	}
	return []planned{gwPlan, vsPlan}, notes, nil
}

// hostCovered says whether a host list already matches host h: the same
// name, "*", or a wildcard "*.example.com" covering it.
func hostCovered(hosts []string, h string) bool {
	for _, x := range hosts {
		if x == h || x == "*" || (strings.HasPrefix(x, "*.") && strings.HasSuffix(h, x[1:])) {
			return true
		}
	}
	return false
}

// addGatewayHost makes the gateway's HTTP port-80 server accept host,
// adding a server when there is none.
func addGatewayHost(gw *unstructured.Unstructured, host string) bool {
	servers, _, _ := unstructured.NestedSlice(gw.Object, "spec", "servers")
	for _, s := range servers {
		m, _ := s.(map[string]interface{})
		num, _, _ := unstructured.NestedFieldNoCopy(m, "port", "number")
		if n, ok := num.(int64); !ok || n != GatewayPort {
			continue
		}
		hosts, _, _ := unstructured.NestedStringSlice(m, "hosts")
		for _, h := range hosts {
			if h == host || h == "*" || h == "*/*" {
				return false
			}
		}
		addString(m, host, "hosts")
		_ = unstructured.SetNestedSlice(gw.Object, servers, "spec", "servers")
		return true
	}
	servers = append(servers, map[string]interface{}{
		"port":  map[string]interface{}{"number": int64(GatewayPort), "name": "http-" + strconv.Itoa(GatewayPort), "protocol": "HTTP"},
		"hosts": []interface{}{host},
	})
	_ = unstructured.SetNestedSlice(gw.Object, servers, "spec", "servers")
	return true
}

func planExposeGateway(ctx context.Context, c Clients, cfg ExposeConfig, port int32) ([]planned, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	var notes []string
	gwName := GatewayName(svc)
	gw, err := getOrNil(ctx, c, Gateways, ns, gwName)
	if err != nil {
		return nil, nil, err
	}
	gwPlan := planned{gvr: Gateways, obj: gw}
	if gw == nil {
		gw = newObject(Gateways, ns, gwName)
		listener := map[string]interface{}{
			"name": "http", "port": int64(GatewayPort), "protocol": "HTTP",
			"allowedRoutes": map[string]interface{}{"namespaces": map[string]interface{}{"from": "Same"}},
		}
		if cfg.Host != "*" {
			listener["hostname"] = cfg.Host
		}
		gw.Object["spec"] = map[string]interface{}{
			"gatewayClassName": "istio",
			"listeners":        []interface{}{listener},
		}
		gwPlan = planned{gvr: Gateways, obj: gw, create: true, changed: true}
	}

	route, err := getOrNil(ctx, c, HTTPRoutes, ns, IngressRouteName(svc))
	if err != nil {
		return nil, nil, err
	}
	var routePlan planned
	if route == nil {
		route = newObject(HTTPRoutes, ns, IngressRouteName(svc))
		spec := map[string]interface{}{
			"parentRefs": []interface{}{map[string]interface{}{"name": gwName}},
			"rules": []interface{}{map[string]interface{}{
				"matches":     []interface{}{map[string]interface{}{"path": map[string]interface{}{"type": "PathPrefix", "value": cfg.PathPrefix}}},
				"backendRefs": []interface{}{map[string]interface{}{"name": svc, "port": int64(port)}},
			}},
		}
		if cfg.Host != "*" {
			spec["hostnames"] = []interface{}{cfg.Host}
		}
		route.Object["spec"] = spec
		routePlan = planned{gvr: HTTPRoutes, obj: route, create: true, changed: true}
	} else {
		route = route.DeepCopy()
		changed := false
		refs, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
		has := false
		for _, r := range refs {
			m, _ := r.(map[string]interface{})
			if n, _ := m["name"].(string); n == gwName {
				if k, _ := m["kind"].(string); k == "" || k == "Gateway" {
					has = true
				}
			}
		}
		if !has {
			refs = append(refs, map[string]interface{}{"name": gwName})
			_ = unstructured.SetNestedSlice(route.Object, refs, "spec", "parentRefs")
			changed = true
		}
		if hn, _, _ := unstructured.NestedStringSlice(route.Object, "spec", "hostnames"); cfg.Host != "*" && len(hn) > 0 {
			changed = addString(route.Object, cfg.Host, "spec", "hostnames") || changed
		}
		routePlan = planned{gvr: HTTPRoutes, obj: route, changed: changed}
	}
	return []planned{gwPlan, routePlan}, notes, nil
}

// ingressURL finds where the gateway is reachable. Failing to find it is
// not an error: the objects are in place, only the address is unknown.
func ingressURL(ctx context.Context, c Clients, cfg ExposeConfig) (string, []string) {
	var svc *corev1.Service
	var notes []string
	if cfg.API == APIGateway {
		gwName := GatewayName(cfg.Service)
		if gw, err := getOrNil(ctx, c, Gateways, cfg.Namespace, gwName); err == nil && gw != nil {
			addrs, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses")
			for _, a := range addrs {
				m, _ := a.(map[string]interface{})
				if v, _ := m["value"].(string); v != "" {
					return buildURL(v, GatewayPort, cfg), nil
				}
			}
		}
		// Istio deploys a Service named <gateway>-istio for each Gateway.
		s, err := c.Kube.CoreV1().Services(cfg.Namespace).Get(ctx, gwName+"-istio", metav1.GetOptions{})
		if err != nil {
			return "", []string{gatewayPending(ctx, c, cfg.Namespace, gwName)}
		}
		svc = s
	} else {
		sel := labels.SelectorFromSet(cfg.GatewaySelector).String()
		list, err := c.Kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return "", []string{fmt.Sprintf("cannot look up the ingress gateway Service (label %s) to print the URL: %v", sel, err)}
		}
		if len(list.Items) == 0 {
			return "", []string{fmt.Sprintf("no ingress gateway Service has label %s, so the URL is unknown; is the ingress gateway installed? (see --gateway-selector)", sel)}
		}
		items := list.Items
		sort.Slice(items, func(i, j int) bool {
			if items[i].Namespace != items[j].Namespace {
				return items[i].Namespace < items[j].Namespace
			}
			return items[i].Name < items[j].Name
		})
		svc = &items[0]
	}
	url, hint := serviceURL(ctx, c, svc, cfg)
	if hint != "" {
		notes = append(notes, hint)
	}
	if url != "" && cfg.Host != "*" {
		notes = append(notes, fmt.Sprintf("requests must carry Host: %s; until DNS points there, try: curl -H 'Host: %s' %s", cfg.Host, cfg.Host, url))
	}
	return url, notes
}

// gatewayPending explains why a Gateway API Gateway has no address, from its
// Programmed condition when the controller has set one.
func gatewayPending(ctx context.Context, c Clients, ns, name string) string {
	hint := fmt.Sprintf("check later with: kubectl get gateway %s -n %s", name, ns)
	gw, err := getOrNil(ctx, c, Gateways, ns, name)
	if err == nil && gw != nil {
		conds, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
		for _, cond := range conds {
			m, _ := cond.(map[string]interface{})
			if m["type"] == "Programmed" && m["status"] == "False" {
				return fmt.Sprintf("gateway %s is not programmed yet (%v: %v); %s", name, m["reason"], m["message"], hint)
			}
		}
	}
	return fmt.Sprintf("gateway %s has no address yet; %s", name, hint)
}

func buildURL(addr string, port int32, cfg ExposeConfig) string {
	host := addr
	if port != 80 {
		host = net.JoinHostPort(addr, strconv.Itoa(int(port)))
	} else if strings.Contains(addr, ":") {
		host = "[" + addr + "]"
	}
	return "http://" + host + cfg.PathPrefix
}

// serviceURL is the gateway Service's address: its load balancer, else a
// NodePort on a node, else nothing (with a port-forward hint).
func serviceURL(ctx context.Context, c Clients, svc *corev1.Service, cfg ExposeConfig) (string, string) {
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == GatewayPort {
			sp = &svc.Spec.Ports[i]
		}
	}
	ref := svc.Namespace + "/" + svc.Name
	if sp == nil {
		return "", fmt.Sprintf("ingress gateway service %s has no port %d, so the URL is unknown", ref, GatewayPort)
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			return buildURL(in.IP, GatewayPort, cfg), ""
		}
		if in.Hostname != "" {
			return buildURL(in.Hostname, GatewayPort, cfg), ""
		}
	}
	if sp.NodePort != 0 {
		if addr := nodeAddress(ctx, c); addr != "" {
			hint := ""
			if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
				hint = fmt.Sprintf("the load balancer address of service %s is pending; using node port %d meanwhile (watch: kubectl get service -n %s %s -w)",
					ref, sp.NodePort, svc.Namespace, svc.Name)
			}
			return buildURL(addr, sp.NodePort, cfg), hint
		}
	}
	return "", fmt.Sprintf("service %s has no external address yet; meanwhile: kubectl port-forward -n %s service/%s 8080:%d, then open http://localhost:8080%s",
		ref, svc.Namespace, svc.Name, GatewayPort, cfg.PathPrefix)
}

// nodeAddress is the first node's external IP, else its internal IP.
func nodeAddress(ctx context.Context, c Clients) string {
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return ""
	}
	items := nodes.Items
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
		for _, n := range items {
			for _, a := range n.Status.Addresses {
				if a.Type == t && a.Address != "" {
					return a.Address
				}
			}
		}
	}
	return ""
}
