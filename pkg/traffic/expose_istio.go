package traffic

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// planExposeIstio plans the Istio API objects expose writes: an Istio
// Gateway on the ingress gateway and a VirtualService routing the host and
// path prefix to the Service, adding to existing ones where they allow it.
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
