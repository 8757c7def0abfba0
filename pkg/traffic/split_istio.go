package traffic

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
)

// findIstio returns the mesh VirtualService and the DestinationRule for the
// service's host in its namespace (nil when there is none). More than one
// of either is an error: which one Istio uses is not something to guess.
func findIstio(ctx context.Context, dyn dynamic.Interface, ns, svc string) (vs, dr *unstructured.Unstructured, err error) {
	vsList, err := dyn.Resource(VirtualServices).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, listErr(err, VirtualServices, ns)
	}
	var vss []*unstructured.Unstructured
	for i := range vsList.Items {
		item := &vsList.Items[i]
		if vsRoutesHost(item, svc, ns) && meshBound(item) {
			vss = append(vss, item)
		}
	}
	drList, err := dyn.Resource(DestinationRules).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, listErr(err, DestinationRules, ns)
	}
	var drs []*unstructured.Unstructured
	for i := range drList.Items {
		item := &drList.Items[i]
		if h, _, _ := unstructured.NestedString(item.Object, "spec", "host"); hostMatches(h, svc, ns) {
			drs = append(drs, item)
		}
	}
	if len(vss) > 1 {
		return nil, nil, fmt.Errorf("service %s/%s is routed by %d VirtualServices (%s); Istio uses only one of them for mesh traffic: merge them into one, then split again",
			ns, svc, len(vss), names(vss))
	}
	if len(drs) > 1 {
		return nil, nil, fmt.Errorf("service %s/%s has %d DestinationRules (%s); Istio uses only one of them: merge them into one, then split again",
			ns, svc, len(drs), names(drs))
	}
	if len(vss) == 1 {
		vs = vss[0]
	}
	if len(drs) == 1 {
		dr = drs[0]
	}
	return vs, dr, nil
}

func names(objs []*unstructured.Unstructured) string {
	n := make([]string, len(objs))
	for i, o := range objs {
		n[i] = o.GetName()
	}
	return strings.Join(n, ", ")
}

func vsRoutesHost(vs *unstructured.Unstructured, svc, ns string) bool {
	hosts, _, _ := unstructured.NestedStringSlice(vs.Object, "spec", "hosts")
	for _, h := range hosts {
		if hostMatches(h, svc, ns) {
			return true
		}
	}
	return false
}

// meshBound says whether a VirtualService applies to sidecars: no gateways
// means "mesh" only.
func meshBound(vs *unstructured.Unstructured) bool {
	gws, found, _ := unstructured.NestedStringSlice(vs.Object, "spec", "gateways")
	if !found || len(gws) == 0 {
		return true
	}
	for _, g := range gws {
		if g == "mesh" {
			return true
		}
	}
	return false
}

// drSubset is one DestinationRule subset.
type drSubset struct {
	name   string
	labels map[string]string
}

func subsetsOf(dr *unstructured.Unstructured) []drSubset {
	if dr == nil {
		return nil
	}
	list, _, _ := unstructured.NestedSlice(dr.Object, "spec", "subsets")
	var out []drSubset
	for _, s := range list {
		m, _ := s.(map[string]interface{})
		name, _ := m["name"].(string)
		lbls, _, _ := unstructured.NestedStringMap(m, "labels")
		out = append(out, drSubset{name: name, labels: lbls})
	}
	return out
}

// istioSubsets maps subset names to the labels they select: the
// DestinationRule's subsets first, then one per version found on pods.
type istioSubsets struct {
	b  *backend
	dr []drSubset
}

func (s istioSubsets) labels(name string) map[string]string {
	for _, d := range s.dr {
		if d.name == name {
			return d.labels
		}
	}
	for _, v := range s.b.versions {
		if v == name {
			return s.b.subsetLabels(v)
		}
	}
	return nil
}

// ordered names one subset per version, in version order: an existing
// subset selecting exactly that version keeps its name.
func (s istioSubsets) ordered() []string {
	out := make([]string, 0, len(s.b.versions))
	for _, v := range s.b.versions {
		name := v
		for _, d := range s.dr {
			if reflect.DeepEqual(d.labels, s.b.subsetLabels(v)) {
				name = d.name
				break
			}
		}
		out = append(out, name)
	}
	return out
}

func planIstio(ctx context.Context, c Clients, cfg SplitConfig, b *backend) ([]planned, []Row, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	vs, dr, err := findIstio(ctx, c.Dynamic, ns, svc)
	if err != nil {
		return nil, nil, nil, err
	}
	subs := istioSubsets{b: b, dr: subsetsOf(dr)}
	if !cfg.Undo && cfg.Weights == nil {
		rows, notes := istioRows(vs, subs, b, svc, ns)
		return nil, rows, notes, nil
	}
	if cfg.Undo {
		return undoIstio(vs, subs, b, cfg)
	}

	weights, err := cfg.Weights.Resolve(subs.ordered())
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkSubsets(b, weights, subs.labels, cfg.AllowEmpty); err != nil {
		return nil, nil, nil, err
	}

	var plan []planned
	drPlan, err := planDestinationRule(dr, subs, weights, b, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	plan = append(plan, drPlan)

	vsPlan, err := planVirtualService(vs, weights, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	plan = append(plan, vsPlan)
	// Rows come from the object as it will be, with the subsets as they will be.
	rows, notes := istioRows(vsPlan.obj, istioSubsets{b: b, dr: subsetsOf(drPlan.obj)}, b, svc, ns)
	return plan, rows, notes, nil
}

// planDestinationRule adds the subsets the split needs and nothing else:
// existing subsets, trafficPolicy and every other field stay as they are.
func planDestinationRule(dr *unstructured.Unstructured, subs istioSubsets, weights []SubsetWeight, b *backend, cfg SplitConfig) (planned, error) {
	want := make([]string, 0, len(weights))
	for _, w := range weights {
		want = append(want, w.Subset)
	}
	if dr == nil {
		// A new rule gets a subset per version, so later splits need no
		// DestinationRule change.
		dr = newObject(DestinationRules, cfg.Namespace, cfg.Service)
		if err := unstructured.SetNestedField(dr.Object, cfg.Service, "spec", "host"); err != nil {
			return planned{}, err
		}
		for _, v := range b.versions {
			if len(validation.IsDNS1123Label(v)) == 0 && !contains(want, v) {
				want = append(want, v)
			}
		}
		sortVersions(want)
		var list []interface{}
		for _, name := range want {
			s, err := newSubset(name, subs.labels(name), b)
			if err != nil {
				return planned{}, err
			}
			list = append(list, s)
		}
		if err := unstructured.SetNestedSlice(dr.Object, list, "spec", "subsets"); err != nil {
			return planned{}, err
		}
		return planned{gvr: DestinationRules, obj: dr, create: true, changed: true}, nil
	}
	dr = dr.DeepCopy()
	list, _, _ := unstructured.NestedSlice(dr.Object, "spec", "subsets")
	have := map[string]bool{}
	for _, s := range subsetsOf(dr) {
		have[s.name] = true
	}
	changed := false
	for _, name := range want {
		if have[name] {
			continue
		}
		s, err := newSubset(name, subs.labels(name), b)
		if err != nil {
			return planned{}, err
		}
		list = append(list, s)
		changed = true
	}
	if changed {
		if err := unstructured.SetNestedSlice(dr.Object, list, "spec", "subsets"); err != nil {
			return planned{}, err
		}
	}
	return planned{gvr: DestinationRules, obj: dr, changed: changed}, nil
}

func newSubset(name string, lbls map[string]string, b *backend) (map[string]interface{}, error) {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return nil, fmt.Errorf("%q cannot be an Istio subset name (%s); relabel the pods or name the subsets in a DestinationRule yourself", name, errs[0])
	}
	if lbls == nil {
		lbls = b.subsetLabels(name)
	}
	l := map[string]interface{}{}
	for k, v := range lbls {
		l[k] = v
	}
	return map[string]interface{}{"name": name, "labels": l}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// planVirtualService sets the destinations of one HTTP route. Everything
// else in the object (other routes, matches, retries, timeouts, fault,
// headers, mirrors, tcp/tls routes, gateways, unknown fields) is kept.
func planVirtualService(vs *unstructured.Unstructured, weights []SubsetWeight, cfg SplitConfig) (planned, error) {
	if vs == nil {
		if cfg.Route != "" {
			return planned{}, fmt.Errorf("route %q not found: no VirtualService routes service %s/%s yet; leave out --route to create one", cfg.Route, cfg.Namespace, cfg.Service)
		}
		vs = newObject(VirtualServices, cfg.Namespace, cfg.Service)
		route := map[string]interface{}{"route": destinations(nil, cfg.Service, cfg.Namespace, weights)}
		vs.Object["spec"] = map[string]interface{}{
			"hosts": []interface{}{cfg.Service},
			"http":  []interface{}{route},
		}
		return planned{gvr: VirtualServices, obj: vs, create: true, changed: true}, nil
	}
	vs = vs.DeepCopy()
	changed, err := setRoute(vs, "http", "route", cfg.Route, func(old []interface{}) []interface{} {
		return destinations(old, cfg.Service, cfg.Namespace, weights)
	})
	if err != nil {
		return planned{}, err
	}
	return planned{gvr: VirtualServices, obj: vs, changed: changed}, nil
}

// destinations builds a route's destination list for weights. Entries for
// subsets already in old keep all their fields (port, headers, the host as
// written) and order; only the weight changes. New subsets are appended,
// copying host and port from an existing entry for the same service.
func destinations(old []interface{}, svc, ns string, weights []SubsetWeight) []interface{} {
	want := map[string]int{}
	for _, w := range weights {
		want[w.Subset] = w.Weight
	}
	host := svc
	var port interface{}
	var out []interface{}
	done := map[string]bool{}
	for _, e := range old {
		d, _ := e.(map[string]interface{})
		dest, _ := d["destination"].(map[string]interface{})
		h, _ := dest["host"].(string)
		if !hostMatches(h, svc, ns) {
			continue
		}
		if port == nil {
			host, port = h, dest["port"]
		}
		subset, _ := dest["subset"].(string)
		n, ok := want[subset]
		if !ok || done[subset] {
			continue
		}
		done[subset] = true
		d = runtime.DeepCopyJSON(d)
		d["weight"] = int64(n)
		out = append(out, d)
	}
	for _, w := range weights {
		if done[w.Subset] {
			continue
		}
		dest := map[string]interface{}{"host": host, "subset": w.Subset}
		if port != nil {
			dest["port"] = runtime.DeepCopyJSONValue(port)
		}
		out = append(out, map[string]interface{}{"destination": dest, "weight": int64(w.Weight)})
	}
	return out
}

func undoIstio(vs *unstructured.Unstructured, subs istioSubsets, b *backend, cfg SplitConfig) ([]planned, []Row, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	if vs == nil {
		return nil, nil, nil, &NoHistoryError{Reason: fmt.Sprintf("nothing to undo for service %s/%s: no VirtualService routes it", ns, svc)}
	}
	prev, err := decodePrevious(vs)
	if err != nil {
		return nil, nil, nil, err
	}
	if prev == nil {
		return nil, nil, nil, noHistory(vs, ns, svc)
	}
	vs = vs.DeepCopy()
	if err := undoRoute(vs, prev, "http", "route"); err != nil {
		return nil, nil, nil, fmt.Errorf("cannot undo the split of service %s/%s: %w", ns, svc, err)
	}
	rows, notes := istioRows(vs, subs, b, svc, ns)
	return []planned{{gvr: VirtualServices, obj: vs, changed: true}}, rows, notes, nil
}

// istioRows describes every HTTP route of vs that sends traffic to svc.
func istioRows(vs *unstructured.Unstructured, subs istioSubsets, b *backend, svc, ns string) ([]Row, []string) {
	var rows []Row
	if vs != nil {
		http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
		for i, r := range http {
			route, _ := r.(map[string]interface{})
			dests, _ := route["route"].([]interface{})
			for _, e := range dests {
				d, _ := e.(map[string]interface{})
				dest, _ := d["destination"].(map[string]interface{})
				if h, _ := dest["host"].(string); !hostMatches(h, svc, ns) {
					continue
				}
				subset, _ := dest["subset"].(string)
				w, ok := weightOf(d)
				if !ok {
					w = -1
					if len(dests) == 1 {
						w = 100
					}
				}
				row := Row{Route: routeKey(route, "http", i), Subset: subset, Weight: w}
				if subset == "" {
					row.Subset = "(all)"
					row.Ready, row.Pods = b.podCounts(b.svc.Spec.Selector)
				} else {
					row.Ready, row.Pods = b.podCounts(mergeLabels(b.svc.Spec.Selector, subs.labels(subset)))
				}
				rows = append(rows, row)
			}
		}
	}
	if len(rows) > 0 {
		return rows, nil
	}
	var note string
	if vs == nil {
		note = fmt.Sprintf("no VirtualService routes service %s/%s: traffic goes to all its pods; set a split with: kubectl mesh split %s 50/50", ns, svc, svc)
	} else {
		note = fmt.Sprintf("virtualservice %s has no HTTP route to service %s/%s", vs.GetName(), ns, svc)
	}
	for _, v := range subs.ordered() {
		ready, pods := b.podCounts(mergeLabels(b.svc.Spec.Selector, subs.labels(v)))
		rows = append(rows, Row{Route: "<none>", Subset: v, Weight: -1, Ready: ready, Pods: pods})
	}
	return rows, []string{note}
}

// mergeLabels returns a∪b; nil when b is nil (the subset selects nothing
// this command knows).
func mergeLabels(a, b map[string]string) map[string]string {
	if b == nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
