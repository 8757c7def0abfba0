package traffic

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
)

// findVirtualService returns the mesh VirtualService for the service's
// host in its namespace (nil when there is none). More than one is an
// error: which one Istio uses is not something to guess.
func findVirtualService(ctx context.Context, dyn dynamic.Interface, ns, svc string) (*unstructured.Unstructured, error) {
	vsList, err := dyn.Resource(VirtualServices).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr(err, VirtualServices, ns)
	}
	var vss []*unstructured.Unstructured
	for i := range vsList.Items {
		item := &vsList.Items[i]
		if vsRoutesHost(item, svc, ns) && meshBound(item) {
			vss = append(vss, item)
		}
	}
	switch len(vss) {
	case 0:
		return nil, nil
	case 1:
		return vss[0], nil
	}
	return nil, fmt.Errorf("service %s/%s is routed by %d VirtualServices (%s); Istio uses only one of them for mesh traffic: merge them into one, then split again",
		ns, svc, len(vss), names(vss))
}

// findIstio returns the mesh VirtualService of the service and the
// DestinationRule in its namespace whose host names it (nil when there is
// none).
func findIstio(ctx context.Context, dyn dynamic.Interface, ns, svc string) (vs, dr *unstructured.Unstructured, err error) {
	if vs, err = findVirtualService(ctx, dyn, ns, svc); err != nil {
		return nil, nil, err
	}
	d, err := findDestinationRule(ctx, dyn, ns, svc, "")
	if err != nil || !d.exact {
		return vs, nil, err
	}
	return vs, d.obj, nil
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
	vs, err := findVirtualService(ctx, c.Dynamic, ns, svc)
	if err != nil {
		return nil, nil, nil, err
	}
	d, err := findDestinationRule(ctx, c.Dynamic, ns, svc, cfg.RootNamespace)
	if err != nil {
		return nil, nil, nil, err
	}
	subs := istioSubsets{b: b, dr: subsetsOf(d.obj)}
	if !cfg.Undo && cfg.Weights == nil {
		rows, notes := istioRows(vs, subs, b, svc, ns)
		return nil, rows, notes, nil
	}
	if cfg.Undo {
		return undoIstio(ctx, c, vs, d, subs, b, cfg)
	}

	weights, err := cfg.Weights.Resolve(subs.ordered())
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkSubsets(b, weights, subs.labels, cfg.AllowEmpty); err != nil {
		return nil, nil, nil, err
	}
	drPlan, notes, err := planDestinationRule(d, vs, subs, weights, b, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var created []string
	if drPlan.create {
		created = append(created, createdRef(drPlan.obj))
	}
	versions := map[string]bool{}
	for _, v := range subs.ordered() {
		versions[v] = true
	}
	for _, w := range weights {
		versions[w.Subset] = true
	}
	vsPlan, note, err := planVirtualService(vs, weights, versions, created, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	if note != "" {
		notes = append(notes, note)
	}
	// Rows come from the object as it will be, with the subsets as they will be.
	rows, rowNotes := istioRows(vsPlan.obj, istioSubsets{b: b, dr: subsetsOf(drPlan.obj)}, b, svc, ns)
	return []planned{drPlan, vsPlan}, rows, append(notes, rowNotes...), nil
}

// planVirtualService sets the destinations of one HTTP route (creating the
// VirtualService when there is none). Everything else in the object (other
// routes, matches, retries, timeouts, fault, headers, mirrors, tcp/tls
// routes, gateways, unknown fields) is kept, and so are destinations that
// are not versions of the service (see destList.reweight).
func planVirtualService(vs *unstructured.Unstructured, weights []SubsetWeight, versions map[string]bool, created []string, cfg SplitConfig) (planned, string, error) {
	p := planned{gvr: VirtualServices}
	if vs == nil {
		if cfg.Route != "" {
			return planned{}, "", fmt.Errorf("route %q not found: no VirtualService routes service %s/%s yet; leave out --route to create one", cfg.Route, cfg.Namespace, cfg.Service)
		}
		vs = newObject(VirtualServices, cfg.Namespace, cfg.Service)
		vs.Object["spec"] = map[string]interface{}{"hosts": []interface{}{cfg.Service}}
		created = append([]string{createdRef(vs)}, created...)
		p.create = true
	} else {
		vs = vs.DeepCopy()
	}
	p.obj = vs
	var note string
	changed, err := setRoute(vs, "http", "route", cfg.Route, created, func(route string, old []interface{}) ([]interface{}, error) {
		out, n, err := istioDests(cfg.Service, cfg.Namespace, versions).reweight(old, weights, route+" of virtualservice "+vs.GetName(), cfg.Namespace+"/"+cfg.Service)
		note = n
		return out, err
	})
	if err != nil {
		return planned{}, "", err
	}
	p.changed = changed
	return p, note, nil
}

func undoIstio(ctx context.Context, c Clients, vs *unstructured.Unstructured, d destRule, subs istioSubsets, b *backend, cfg SplitConfig) ([]planned, []Row, []string, error) {
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
	vsPlan := planned{gvr: VirtualServices, obj: vs, changed: true, remove: prev.creates(vs) && !routesLeft(vs)}
	plan := []planned{vsPlan}
	var notes []string
	for _, ref := range prev.Created {
		kind, name, _ := strings.Cut(ref, "/")
		if kind != "destinationrule" {
			continue
		}
		dr := d.obj
		if dr == nil || dr.GetName() != name || dr.GetNamespace() != ns {
			if dr, err = c.Dynamic.Resource(DestinationRules).Namespace(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				continue
			} else if err != nil {
				return nil, nil, nil, fmt.Errorf("getting destinationrule %s/%s that the split created: %w", ns, name, err)
			}
		}
		what := fmt.Sprintf("kept destinationrule %s/%s, which the split created: ", ns, name)
		switch {
		case dr.GetGeneration() > 1:
			notes = append(notes, what+"it was changed since; delete it yourself when nothing needs it")
		case !vsPlan.remove && routesToSubsets(vs, svc, ns):
			notes = append(notes, what+"virtualservice "+vs.GetName()+" still routes to subsets of the service")
		default:
			plan = append(plan, planned{gvr: DestinationRules, obj: dr, changed: true, remove: true})
		}
	}
	var rows []Row
	var rowNotes []string
	if vsPlan.remove {
		rows, rowNotes = istioRows(nil, subs, b, svc, ns)
	} else {
		rows, rowNotes = istioRows(vs, subs, b, svc, ns)
	}
	return plan, rows, append(notes, rowNotes...), nil
}

// routesToSubsets says whether any HTTP route of vs sends traffic to a
// subset of the service.
func routesToSubsets(vs *unstructured.Unstructured, svc, ns string) bool {
	http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	for _, r := range http {
		route, _ := r.(map[string]interface{})
		dests, _ := route["route"].([]interface{})
		for _, e := range dests {
			d, _ := e.(map[string]interface{})
			dest, _ := d["destination"].(map[string]interface{})
			h, _ := dest["host"].(string)
			if s, _ := dest["subset"].(string); s != "" && hostMatches(h, svc, ns) {
				return true
			}
		}
	}
	return false
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
				h, _ := dest["host"].(string)
				subset, _ := dest["subset"].(string)
				w, ok := weightOf(d)
				if !ok {
					w = -1
					if len(dests) == 1 {
						w = 100
					}
				}
				row := Row{Route: routeKey(route, "http", i), Subset: subset, Weight: w}
				if !hostMatches(h, svc, ns) {
					if !routesService(dests, svc, ns) {
						continue
					}
					// Another host in a route of the service: shown, so
					// the weights add up, but it has no pods here.
					row.Subset, row.Ready, row.Pods = h, -1, -1
					if subset != "" {
						row.Subset = h + " subset " + subset
					}
					rows = append(rows, row)
					continue
				}
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

// routesService says whether a destination list sends anything to svc.
func routesService(dests []interface{}, svc, ns string) bool {
	for _, e := range dests {
		d, _ := e.(map[string]interface{})
		dest, _ := d["destination"].(map[string]interface{})
		if h, _ := dest["host"].(string); hostMatches(h, svc, ns) {
			return true
		}
	}
	return false
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
