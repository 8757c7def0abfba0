package traffic

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"
)

// AnnotationPrevious holds the route as it was before the last split, so
// `split --undo` can put it back. Each split or undo swaps it with the
// current state, like `kubectl rollout undo`.
const AnnotationPrevious = "traffic.kubectl-mesh.io/previous-split"

// DefaultSubsetLabel is the pod label whose values name the subsets.
const DefaultSubsetLabel = "version"

// SplitConfig is one `kubectl mesh split` run.
type SplitConfig struct {
	Namespace string
	Service   string
	// Weights is the split to set. Nil (and Undo false) only shows the
	// current split.
	Weights *Weights
	// Undo restores the route recorded in AnnotationPrevious.
	Undo bool
	// SubsetLabel is the pod label that tells versions apart.
	SubsetLabel string
	// Route names the HTTP route (Istio) or rule (Gateway API) to change;
	// empty means the default one: the first without match conditions.
	Route string
	// AllowEmpty permits subsets that no pod backs yet.
	AllowEmpty bool
	// CreateServices creates missing per-version Services (Gateway API).
	CreateServices bool
	API            API
	DryRun         DryRun
	// BeforeWrite, when set, runs on every attempt after the objects were
	// read and the change computed, before anything is written. Tests use
	// it to make a concurrent edit land exactly in that window.
	BeforeWrite func(ctx context.Context, attempt int) error
}

// Row is one line of the split table.
type Row struct {
	Route  string
	Subset string
	// Weight is the percentage, or -1 when the object leaves it unset
	// among several destinations.
	Weight int
	Ready  int
	Pods   int
}

// SplitResult is what Split did (or would do).
type SplitResult struct {
	Changes []Change
	// Objects are the objects as written (as returned by the server, or as
	// computed for --dry-run=client), for -o yaml|json.
	Objects []*unstructured.Unstructured
	// Rows are the split after the change (or the current one when only
	// showing).
	Rows []Row
	// Notes are remarks for the user (stderr).
	Notes []string
	// Attempts counts read-modify-write rounds (more than one after a
	// conflict).
	Attempts int
}

// NoHistoryError is returned by --undo when there is nothing to restore.
type NoHistoryError struct{ Reason string }

func (e *NoHistoryError) Error() string { return e.Reason }

// previous is the value of AnnotationPrevious.
type previous struct {
	// Route is the route's name, or http[i] / rules[i] when it has none.
	Route string `json:"route"`
	// Destinations is the route's destination (or backendRefs) list before
	// the change.
	Destinations []interface{} `json:"destinations,omitempty"`
	// Added says the split appended the route; undo removes it again.
	Added bool `json:"added,omitempty"`
}

// planned is one object to create or update.
type planned struct {
	gvr     schema.GroupVersionResource
	obj     *unstructured.Unstructured
	create  bool
	changed bool
}

// Split shows, sets or undoes the traffic split of a Service. Reads and
// writes happen in rounds: read everything, compute, write with the
// resourceVersions read; a conflict starts a new round from fresh reads, so
// a concurrent edit is merged, never overwritten.
func Split(ctx context.Context, c Clients, cfg SplitConfig) (*SplitResult, error) {
	if cfg.SubsetLabel == "" {
		cfg.SubsetLabel = DefaultSubsetLabel
	}
	if cfg.API == "" {
		cfg.API = APIIstio
	}
	if cfg.DryRun == "" {
		cfg.DryRun = DryRunNone
	}
	need := []schema.GroupVersionResource{VirtualServices, DestinationRules}
	if cfg.API == APIGateway {
		need = []schema.GroupVersionResource{HTTPRoutes}
	}
	for _, gvr := range need {
		if err := RequireAPI(c.Discovery, gvr); err != nil {
			return nil, err
		}
	}
	b, err := loadBackend(ctx, c.Kube, cfg.Namespace, cfg.Service, cfg.SubsetLabel)
	if err != nil {
		return nil, err
	}
	if !cfg.Undo && cfg.Weights == nil {
		return show(ctx, c, cfg, b)
	}
	if !cfg.Undo {
		if err := b.requireVersions(); err != nil {
			return nil, err
		}
	}
	res := &SplitResult{}
	w := writer{dyn: c.Dynamic, dryRun: cfg.DryRun}
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err = retry.OnError(retry.DefaultRetry, retriable, func() error {
		res.Attempts++
		var plan []planned
		var rows []Row
		var notes []string
		var err error
		if cfg.API == APIGateway {
			plan, rows, notes, err = planGateway(ctx, c, cfg, b)
		} else {
			plan, rows, notes, err = planIstio(ctx, c, cfg, b)
		}
		if err != nil {
			return err
		}
		if cfg.BeforeWrite != nil {
			if err := cfg.BeforeWrite(ctx, res.Attempts); err != nil {
				return err
			}
		}
		objs, changes, err := w.apply(ctx, plan)
		if err != nil {
			return err
		}
		res.Objects, res.Changes, res.Rows, res.Notes = objs, changes, rows, notes
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// apply writes the plan. Without --dry-run every write is first sent as a
// server dry run, so RBAC or validation errors on a later object leave the
// earlier ones untouched.
func (w writer) apply(ctx context.Context, plan []planned) ([]*unstructured.Unstructured, []Change, error) {
	var objs []*unstructured.Unstructured
	var changes []Change
	if w.dryRun == DryRunNone {
		for _, p := range plan {
			if p.changed {
				if _, err := w.write(ctx, p.gvr, p.obj, p.create, true); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	for _, p := range plan {
		op := "unchanged"
		out := p.obj
		if p.changed {
			op = "configured"
			if p.create {
				op = "created"
			}
			if w.dryRun != DryRunClient {
				var err error
				if out, err = w.write(ctx, p.gvr, p.obj, p.create, w.dryRun == DryRunServer); err != nil {
					return nil, nil, err
				}
			}
		}
		objs = append(objs, out)
		changes = append(changes, Change{Resource: resourceName(p.gvr), Name: p.obj.GetName(), Op: op})
	}
	return objs, changes, nil
}

// routeKey names route i of a list for the table and the undo record.
func routeKey(route map[string]interface{}, field string, i int) string {
	if n, _ := route["name"].(string); n != "" {
		return n
	}
	return fmt.Sprintf("%s[%d]", field, i)
}

// chooseRoute returns the index of the route to change: the one named, else
// the first without match conditions, else len(routes) (append one).
func chooseRoute(routes []interface{}, field, name, owner string) (int, error) {
	if name != "" {
		var names []string
		for i, r := range routes {
			m, _ := r.(map[string]interface{})
			k := routeKey(m, field, i)
			if k == name {
				return i, nil
			}
			names = append(names, k)
		}
		if len(names) == 0 {
			return 0, fmt.Errorf("route %q not found: %s has no %s routes; leave out --route to add a default route", name, owner, field)
		}
		return 0, fmt.Errorf("route %q not found in %s (routes: %s); pass one of them to --route", name, owner, strings.Join(names, ", "))
	}
	for i, r := range routes {
		m, _ := r.(map[string]interface{})
		if ms, _ := m["matches"].([]interface{}); field == "rules" && len(ms) > 0 && !matchesAll(ms) {
			continue
		}
		if ms, _ := m["match"].([]interface{}); field == "http" && len(ms) > 0 {
			continue
		}
		return i, nil
	}
	return len(routes), nil
}

// matchesAll says whether Gateway API matches are the API server's default
// for a rule written without any: a single PathPrefix "/".
func matchesAll(ms []interface{}) bool {
	if len(ms) != 1 {
		return false
	}
	m, _ := ms[0].(map[string]interface{})
	if len(m) != 1 {
		return false
	}
	p, _ := m["path"].(map[string]interface{})
	return len(p) == 2 && p["type"] == "PathPrefix" && p["value"] == "/"
}

// findRoute locates the route recorded under key for undo.
func findRoute(routes []interface{}, field, key string) int {
	for i, r := range routes {
		m, _ := r.(map[string]interface{})
		if routeKey(m, field, i) == key {
			return i
		}
	}
	return -1
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

func removeAnnotation(obj *unstructured.Unstructured, key string) {
	a := obj.GetAnnotations()
	delete(a, key)
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

// weightOf reads a destination's weight as an int (JSON numbers decode as
// int64 or float64 depending on the path they took).
func weightOf(d map[string]interface{}) (int, bool) {
	switch v := d["weight"].(type) {
	case int64:
		return int(v), true
	case float64:
		return int(v), true
	case int:
		return v, true
	case int32:
		return int(v), true
	}
	return 0, false
}

// checkSubsets fails for subsets without pods unless allowEmpty.
func checkSubsets(b *backend, weights []SubsetWeight, labelsOf func(string) map[string]string, allowEmpty bool) error {
	for _, sw := range weights {
		lbls := labelsOf(sw.Subset)
		if lbls == nil {
			lbls = b.subsetLabels(sw.Subset)
		}
		if _, total := b.podCounts(lbls); total > 0 || allowEmpty {
			continue
		}
		sel := formatLabels(lbls)
		return fmt.Errorf("subset %q not found: no pods behind service %s/%s have %s (versions found: %s); deploy it first or pass --allow-empty",
			sw.Subset, b.svc.Namespace, b.svc.Name, sel, b.versionsText())
	}
	return nil
}

func formatLabels(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// show reports the current split without changing anything.
func show(ctx context.Context, c Clients, cfg SplitConfig, b *backend) (*SplitResult, error) {
	var rows []Row
	var notes []string
	var err error
	if cfg.API == APIGateway {
		_, rows, notes, err = planGateway(ctx, c, cfg, b)
	} else {
		_, rows, notes, err = planIstio(ctx, c, cfg, b)
	}
	if err != nil {
		return nil, err
	}
	return &SplitResult{Rows: rows, Notes: notes}, nil
}

// setRoute replaces the destinations (destField) of one route in
// spec.<field> with build(old), recording the old ones for undo. It appends a
// route when none fits. Only that one list changes.
func setRoute(obj *unstructured.Unstructured, field, destField, name string, build func(old []interface{}) []interface{}) (bool, error) {
	routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", field)
	owner := strings.ToLower(obj.GetKind()) + " " + obj.GetName()
	i, err := chooseRoute(routes, field, name, owner)
	if err != nil {
		return false, err
	}
	prev := previous{Route: fmt.Sprintf("%s[%d]", field, i)}
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
	next := build(old)
	if !prev.Added && jsonEqual(old, next) {
		return false, nil
	}
	route[destField] = next
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

// undoRoute puts back the destinations recorded in prev and records the
// current ones, so a second undo redoes.
func undoRoute(obj *unstructured.Unstructured, prev *previous, field, destField string) error {
	routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", field)
	kind := strings.ToLower(obj.GetKind())
	i := findRoute(routes, field, prev.Route)
	if i < 0 {
		return fmt.Errorf("route %s recorded in %s %s no longer exists; set weights explicitly", prev.Route, kind, obj.GetName())
	}
	route, _ := routes[i].(map[string]interface{})
	cur, _ := route[destField].([]interface{})
	if prev.Added {
		if len(routes) == 1 {
			return fmt.Errorf("it would remove the only route of %s %s; delete the %s instead", kind, obj.GetName(), obj.GetKind())
		}
		// The split added this route; undo takes it away again, and
		// there is nothing left to redo.
		routes = append(routes[:i:i], routes[i+1:]...)
		removeAnnotation(obj, AnnotationPrevious)
	} else {
		route[destField] = prev.Destinations
		a, err := encodePrevious(previous{Route: prev.Route, Destinations: cur})
		if err != nil {
			return err
		}
		setAnnotation(obj, AnnotationPrevious, a)
	}
	return unstructured.SetNestedSlice(obj.Object, routes, "spec", field)
}

// jsonEqual compares as JSON, so int64(50) and float64(50) are equal.
func jsonEqual(a, b interface{}) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
