package traffic

import (
	"context"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// planExposeGateway plans the Gateway API objects expose writes: a
// Gateway with an HTTP listener and an HTTPRoute to the Service.
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
