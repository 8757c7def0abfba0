package traffic

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// previous is the value of AnnotationPrevious: what the last change of
// split did to one route, so --undo can take it back.
type previous struct {
	// Route is the route's name, or http[i] / rules[i] when it has none.
	Route string `json:"route"`
	// Destinations is the route's destination (or backendRefs) list before
	// the change.
	Destinations []interface{} `json:"destinations,omitempty"`
	// Added says the split appended the route; undo removes it again.
	Added bool `json:"added,omitempty"`
	// Match and Written are the route's match conditions and the
	// destinations the change wrote. Together they find an unnamed route
	// again when routes were added or moved since, and tell whether its
	// destinations were edited since (then undo refuses rather than
	// overwrite that edit).
	Match   interface{}   `json:"match,omitempty"`
	Written []interface{} `json:"written,omitempty"`
	// Created lists the objects the change created, as kind/name
	// (virtualservice, destinationrule, httproute, service); undo deletes
	// them again when nothing else uses them.
	Created []string `json:"created,omitempty"`
}

func encodePrevious(p previous) (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("recording the previous split: %w", err)
	}
	return string(b), nil
}

func decodePrevious(obj *unstructured.Unstructured) (*previous, error) {
	v, ok := obj.GetAnnotations()[AnnotationPrevious]
	if !ok {
		return nil, nil
	}
	var p previous
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return nil, fmt.Errorf("reading annotation %s of %s %s/%s: %w; remove the annotation and set weights explicitly",
			AnnotationPrevious, strings.ToLower(obj.GetKind()), obj.GetNamespace(), obj.GetName(), err)
	}
	return &p, nil
}

// matchField is where a route keeps its match conditions.
func matchField(field string) string {
	if field == "rules" {
		return "matches"
	}
	return "match"
}

// routeMatch is a route's match conditions as compared for undo: Gateway
// API's server default (one PathPrefix "/") is the same as none.
func routeMatch(route map[string]interface{}, field string) interface{} {
	ms, _ := route[matchField(field)].([]interface{})
	if len(ms) == 0 || (field == "rules" && matchesAll(ms)) {
		return nil
	}
	return ms
}

// sameDests compares destination lists as JSON, leaving out the defaults
// the API server fills into Gateway API backendRefs (group "", kind
// Service).
func sameDests(a, b []interface{}, field string) bool {
	norm := func(l []interface{}) []interface{} {
		out := make([]interface{}, 0, len(l))
		for _, e := range l {
			m, _ := e.(map[string]interface{})
			m = runtime.DeepCopyJSON(m)
			if field == "rules" {
				if m["group"] == "" {
					delete(m, "group")
				}
				if m["kind"] == "Service" {
					delete(m, "kind")
				}
			}
			out = append(out, m)
		}
		return out
	}
	return jsonEqual(norm(a), norm(b))
}

// setRoute replaces the destinations (destField) of one route in
// spec.<field> with build(old), recording for undo what it changed and
// which objects this change creates. It appends a route when none fits.
// build gets the route's name (or field[i]) for messages.
// Only that one list changes.
func setRoute(obj *unstructured.Unstructured, field, destField, name string, created []string, build func(route string, old []interface{}) ([]interface{}, error)) (bool, error) {
	routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", field)
	owner := strings.ToLower(obj.GetKind()) + " " + obj.GetName()
	i, err := chooseRoute(routes, field, name, owner)
	if err != nil {
		return false, err
	}
	prev := previous{Route: fmt.Sprintf("%s[%d]", field, i), Created: created}
	var route map[string]interface{}
	if i == len(routes) {
		route = map[string]interface{}{}
		routes = append(routes, route)
		prev.Added = true
	} else {
		route, _ = routes[i].(map[string]interface{})
		prev.Route = routeKey(route, field, i)
		prev.Destinations, _ = route[destField].([]interface{})
	}
	old, _ := route[destField].([]interface{})
	next, err := build(routeKey(route, field, i), old)
	if err != nil {
		return false, err
	}
	if !prev.Added && len(created) == 0 && jsonEqual(old, next) {
		return false, nil
	}
	route[destField] = next
	prev.Match = routeMatch(route, field)
	prev.Written = next
	if err := unstructured.SetNestedSlice(obj.Object, routes, "spec", field); err != nil {
		return false, err
	}
	a, err := encodePrevious(prev)
	if err != nil {
		return false, err
	}
	setAnnotation(obj, AnnotationPrevious, a)
	return true, nil
}

// findRoute locates the route prev recorded. A named route is found by
// name; an unnamed one by its content (match conditions and the
// destinations split wrote), preferring the recorded index, so routes
// added or moved since do not mislead it. Records from before Written was
// kept are found by name or index only.
func findRoute(routes []interface{}, field string, prev *previous, destField, owner string) (int, error) {
	if prev.Written == nil {
		for i, r := range routes {
			m, _ := r.(map[string]interface{})
			if routeKey(m, field, i) == prev.Route {
				return i, nil
			}
		}
		return -1, fmt.Errorf("route %s recorded in %s no longer exists; set weights explicitly", prev.Route, owner)
	}
	unnamed := strings.HasPrefix(prev.Route, field+"[")
	found, edited := -1, -1
	for i, r := range routes {
		m, _ := r.(map[string]interface{})
		n, _ := m["name"].(string)
		if unnamed {
			if n != "" || !jsonEqual(routeMatch(m, field), prev.Match) {
				continue
			}
		} else if n != prev.Route {
			continue
		}
		dests, _ := m[destField].([]interface{})
		if !sameDests(dests, prev.Written, field) {
			if edited < 0 {
				edited = i
			}
			continue
		}
		if found < 0 || fmt.Sprintf("%s[%d]", field, i) == prev.Route {
			found = i
		}
	}
	switch {
	case found >= 0:
		return found, nil
	case edited >= 0:
		return -1, fmt.Errorf("route %s of %s was changed since the last split (its destinations are no longer what split wrote), and undo would overwrite that change; set weights explicitly",
			routeKey(routes[edited].(map[string]interface{}), field, edited), owner)
	}
	return -1, fmt.Errorf("route %s recorded in %s no longer exists; set weights explicitly", prev.Route, owner)
}

// undoRoute puts back the destinations recorded in prev and records the
// current ones, so a second undo redoes; a route the split added is
// removed. When the change created objects, undo deletes them (the caller
// does), so nothing is left to redo and the record goes.
func undoRoute(obj *unstructured.Unstructured, prev *previous, field, destField string) error {
	routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", field)
	owner := strings.ToLower(obj.GetKind()) + " " + obj.GetName()
	i, err := findRoute(routes, field, prev, destField, owner)
	if err != nil {
		return err
	}
	route, _ := routes[i].(map[string]interface{})
	cur, _ := route[destField].([]interface{})
	switch {
	case prev.Added:
		if len(routes) == 1 && !prev.creates(obj) {
			return fmt.Errorf("it would remove the only route of %s; delete the %s instead", owner, obj.GetKind())
		}
		routes = append(routes[:i:i], routes[i+1:]...)
		removeAnnotation(obj, AnnotationPrevious)
	case len(prev.Created) > 0:
		route[destField] = prev.Destinations
		removeAnnotation(obj, AnnotationPrevious)
	default:
		route[destField] = prev.Destinations
		a, err := encodePrevious(previous{Route: prev.Route, Destinations: cur, Match: routeMatch(route, field), Written: prev.Destinations})
		if err != nil {
			return err
		}
		setAnnotation(obj, AnnotationPrevious, a)
	}
	if len(routes) == 0 {
		unstructured.RemoveNestedField(obj.Object, "spec", field)
		return nil
	}
	return unstructured.SetNestedSlice(obj.Object, routes, "spec", field)
}

// creates says whether the recorded change created obj.
func (p *previous) creates(obj *unstructured.Unstructured) bool {
	return p.created(strings.ToLower(obj.GetKind()), obj.GetName())
}

func (p *previous) created(kind, name string) bool {
	for _, c := range p.Created {
		if c == kind+"/"+name {
			return true
		}
	}
	return false
}

// createdRef is the entry of previous.Created for an object.
func createdRef(obj *unstructured.Unstructured) string {
	return strings.ToLower(obj.GetKind()) + "/" + obj.GetName()
}

// routesLeft says whether a VirtualService or HTTPRoute still routes
// anything (HTTP, TCP or TLS routes; rules).
func routesLeft(obj *unstructured.Unstructured) bool {
	for _, f := range []string{"http", "tcp", "tls", "rules"} {
		if l, _, _ := unstructured.NestedSlice(obj.Object, "spec", f); len(l) > 0 {
			return true
		}
	}
	return false
}

func removeAnnotation(obj *unstructured.Unstructured, key string) {
	a := obj.GetAnnotations()
	delete(a, key)
	if len(a) == 0 {
		a = nil
	}
	obj.SetAnnotations(a)
}

func setAnnotation(obj *unstructured.Unstructured, key, val string) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[key] = val
	obj.SetAnnotations(a)
}

// jsonEqual compares as JSON, so int64(50) and float64(50) are equal.
func jsonEqual(a, b interface{}) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
