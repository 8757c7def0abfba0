package traffic

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// findServiceRoute returns the HTTPRoute whose parentRef is the Service
// (Gateway API for meshes, "GAMMA"), or nil.
func findServiceRoute(ctx context.Context, c Clients, ns, svc string) (*unstructured.Unstructured, error) {
	list, err := c.Dynamic.Resource(HTTPRoutes).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, listErr(err, HTTPRoutes, ns)
	}
	var found []*unstructured.Unstructured
	for i := range list.Items {
		if hasServiceParent(&list.Items[i], ns, svc) {
			found = append(found, &list.Items[i])
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("service %s/%s is the parent of %d HTTPRoutes (%s); merge them into one, then split again", ns, svc, len(found), names(found))
}

func hasServiceParent(r *unstructured.Unstructured, ns, svc string) bool {
	refs, _, _ := unstructured.NestedSlice(r.Object, "spec", "parentRefs")
	for _, ref := range refs {
		m, _ := ref.(map[string]interface{})
		group, _ := m["group"].(string)
		kind, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		refNS, _ := m["namespace"].(string)
		if kind == "Service" && (group == "" || group == "core") && name == svc && (refNS == "" || refNS == ns) {
			return true
		}
	}
	return false
}

// versionService names the per-version Service of subset v.
func versionService(svc, v string) string { return svc + "-" + v }

func planGateway(ctx context.Context, c Clients, cfg SplitConfig, b *backend) ([]planned, []Row, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	route, err := findServiceRoute(ctx, c, ns, svc)
	if err != nil {
		return nil, nil, nil, err
	}
	labelsOf := func(name string) map[string]string {
		if slices.Contains(b.versions, name) {
			return b.subsetLabels(name)
		}
		return nil
	}
	if !cfg.Undo && cfg.Weights == nil {
		rows, notes := gatewayRows(route, b)
		return nil, rows, notes, nil
	}
	if cfg.Undo {
		return undoGateway(ctx, c, route, b, cfg)
	}

	weights, err := cfg.Weights.Resolve(b.versions)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkSubsets(b, weights, labelsOf, cfg.AllowEmpty); err != nil {
		return nil, nil, nil, err
	}
	var plan []planned
	var missing []string
	for _, w := range weights {
		name := versionService(svc, w.Subset)
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			return nil, nil, nil, fmt.Errorf("per-version service name %q is invalid (%s); relabel the pods with --subset-label values that make valid Service names", name, errs[0])
		}
		_, err := c.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			continue
		}
		if !apierrors.IsNotFound(err) {
			return nil, nil, nil, fmt.Errorf("getting service %s/%s: %w", ns, name, err)
		}
		if !cfg.CreateServices {
			missing = append(missing, name)
			continue
		}
		obj, err := newVersionService(b, w.Subset)
		if err != nil {
			return nil, nil, nil, err
		}
		plan = append(plan, planned{gvr: Services, obj: obj, create: true, changed: true})
	}
	if len(missing) > 0 {
		return nil, nil, nil, fmt.Errorf("--api gateway routes to one Service per version, and %s not found in namespace %s; pass --create-services to create them (each selects the service's pods plus %s=<version>)",
			quoteList(missing), ns, b.label)
	}

	port := int64(0)
	if len(b.svc.Spec.Ports) > 0 {
		port = int64(b.svc.Spec.Ports[0].Port)
	}
	versions := map[string]bool{}
	for _, v := range b.versions {
		versions[v] = true
	}
	var created []string
	for _, p := range plan {
		created = append(created, createdRef(p.obj))
	}
	for _, w := range weights {
		versions[w.Subset] = true
	}
	p := planned{gvr: HTTPRoutes}
	if route == nil {
		if cfg.Route != "" {
			return nil, nil, nil, fmt.Errorf("route %q not found: no HTTPRoute has service %s/%s as parent yet; leave out --route to create one", cfg.Route, ns, svc)
		}
		route = newObject(HTTPRoutes, ns, svc)
		route.Object["spec"] = map[string]interface{}{
			"parentRefs": []interface{}{map[string]interface{}{"group": "", "kind": "Service", "name": svc}},
		}
		created = append([]string{createdRef(route)}, created...)
		p.create = true
	} else {
		route = route.DeepCopy()
	}
	var notes []string
	changed, err := setRoute(route, "rules", "backendRefs", cfg.Route, created, func(key string, old []interface{}) ([]interface{}, error) {
		out, note, err := gatewayDests(svc, port, versions).reweight(old, weights, key+" of httproute "+route.GetName(), ns+"/"+svc)
		if note != "" {
			notes = append(notes, note)
		}
		return out, err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	p.obj, p.changed = route, changed
	plan = append(plan, p)
	rows, rowNotes := gatewayRows(route, b)
	return plan, rows, append(notes, rowNotes...), nil
}

// undoGateway takes back the last change to the HTTPRoute, and deletes
// the route and the per-version Services the split created when nothing
// uses them any more.
func undoGateway(ctx context.Context, c Clients, route *unstructured.Unstructured, b *backend, cfg SplitConfig) ([]planned, []Row, []string, error) {
	ns, svc := cfg.Namespace, cfg.Service
	if route == nil {
		return nil, nil, nil, &NoHistoryError{Reason: fmt.Sprintf("nothing to undo for service %s/%s: no HTTPRoute has it as parent", ns, svc)}
	}
	prev, err := decodePrevious(route)
	if err != nil {
		return nil, nil, nil, err
	}
	if prev == nil {
		return nil, nil, nil, noHistory(route, ns, svc)
	}
	route = route.DeepCopy()
	if err := undoRoute(route, prev, "rules", "backendRefs"); err != nil {
		return nil, nil, nil, fmt.Errorf("cannot undo the split of service %s/%s: %w", ns, svc, err)
	}
	routePlan := planned{gvr: HTTPRoutes, obj: route, changed: true, remove: prev.creates(route) && !routesLeft(route)}
	plan := []planned{routePlan}
	var notes []string
	var others *unstructured.UnstructuredList
	for _, ref := range prev.Created {
		kind, name, _ := strings.Cut(ref, "/")
		if kind != "service" {
			continue
		}
		obj, err := c.Dynamic.Resource(Services).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("getting service %s/%s that the split created: %w", ns, name, err)
		}
		if others == nil {
			if others, err = c.Dynamic.Resource(HTTPRoutes).Namespace(ns).List(ctx, metav1.ListOptions{}); err != nil {
				return nil, nil, nil, listErr(err, HTTPRoutes, ns)
			}
		}
		what := fmt.Sprintf("kept service %s/%s, which the split created: ", ns, name)
		user := ""
		if !routePlan.remove && refersTo(route, name) {
			user = route.GetName()
		}
		for i := range others.Items {
			if o := &others.Items[i]; o.GetName() != route.GetName() && refersTo(o, name) {
				user = o.GetName()
			}
		}
		switch {
		case obj.GetLabels()["traffic.kubectl-mesh.io/service"] != svc:
			notes = append(notes, what+"its labels were changed since; delete it yourself when nothing needs it")
		case user != "":
			notes = append(notes, what+"httproute "+user+" still sends traffic to it")
		default:
			plan = append(plan, planned{gvr: Services, obj: obj, changed: true, remove: true})
		}
	}
	if routePlan.remove {
		route = nil
	}
	rows, rowNotes := gatewayRows(route, b)
	return plan, rows, append(notes, rowNotes...), nil
}

// refersTo says whether an HTTPRoute has a backendRef to Service name.
func refersTo(route *unstructured.Unstructured, name string) bool {
	rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
	for _, r := range rules {
		rule, _ := r.(map[string]interface{})
		refs, _ := rule["backendRefs"].([]interface{})
		for _, e := range refs {
			ref, _ := e.(map[string]interface{})
			if n, _ := ref["name"].(string); n == name {
				if k, _ := ref["kind"].(string); k == "" || k == "Service" {
					return true
				}
			}
		}
	}
	return false
}

func noHistory(obj *unstructured.Unstructured, ns, svc string) error {
	return &NoHistoryError{Reason: fmt.Sprintf("nothing to undo for service %s/%s: %s %s has no %s annotation (kubectl mesh split records one each time it changes weights)",
		ns, svc, strings.ToLower(obj.GetKind()), obj.GetName(), AnnotationPrevious)}
}

func quoteList(names []string) string {
	if len(names) == 1 {
		return "service " + names[0] + " is"
	}
	return "services " + strings.Join(names, ", ") + " are"
}

// newVersionService is a Service selecting only version v's pods, with the
// parent Service's ports.
func newVersionService(b *backend, v string) (*unstructured.Unstructured, error) {
	s := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      versionService(b.svc.Name, v),
			Namespace: b.svc.Namespace,
			Labels:    map[string]string{"traffic.kubectl-mesh.io/service": b.svc.Name, b.label: v},
		},
		Spec: corev1.ServiceSpec{Selector: mergeLabels(b.svc.Spec.Selector, b.subsetLabels(v))},
	}
	for _, p := range b.svc.Spec.Ports {
		target := p.TargetPort
		if target.IntValue() == 0 && target.StrVal == "" {
			target = intstr.FromInt32(p.Port)
		}
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, AppProtocol: p.AppProtocol, Port: p.Port, TargetPort: target,
		})
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(s)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return u, nil
}

func gatewayRows(route *unstructured.Unstructured, b *backend) ([]Row, []string) {
	svc, ns := b.svc.Name, b.svc.Namespace
	var rows []Row
	if route != nil {
		rules, _, _ := unstructured.NestedSlice(route.Object, "spec", "rules")
		for i, r := range rules {
			rule, _ := r.(map[string]interface{})
			refs, _ := rule["backendRefs"].([]interface{})
			for _, e := range refs {
				ref, _ := e.(map[string]interface{})
				name, _ := ref["name"].(string)
				w, ok := weightOf(ref)
				if !ok {
					w = 1 // Gateway API's default weight
				}
				row := Row{Route: routeKey(rule, "rules", i), Subset: name, Weight: w}
				switch {
				case name == svc:
					row.Subset = "(all)"
					row.Ready, row.Pods = b.podCounts(b.svc.Spec.Selector)
				case strings.HasPrefix(name, svc+"-"):
					row.Subset = strings.TrimPrefix(name, svc+"-")
					row.Ready, row.Pods = b.podCounts(mergeLabels(b.svc.Spec.Selector, b.subsetLabels(row.Subset)))
				default:
					// Another backend: shown, so the weights add up.
					row.Ready, row.Pods = -1, -1
				}
				rows = append(rows, row)
			}
		}
	}
	if len(rows) > 0 {
		return rows, nil
	}
	note := fmt.Sprintf("no HTTPRoute has service %s/%s as parent: traffic goes to all its pods; set a split with: kubectl mesh split %s 50/50 --api gateway", ns, svc, svc)
	if route != nil {
		note = fmt.Sprintf("httproute %s has no backendRefs", route.GetName())
	}
	for _, v := range b.versions {
		ready, pods := b.podCounts(mergeLabels(b.svc.Spec.Selector, b.subsetLabels(v)))
		rows = append(rows, Row{Route: "<none>", Subset: v, Weight: -1, Ready: ready, Pods: pods})
	}
	return rows, []string{note}
}
