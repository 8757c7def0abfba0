package traffic

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
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
	// RootNamespace is Istio's root namespace (meshConfig.rootNamespace),
	// whose DestinationRules apply to every namespace they are exported
	// to; empty means DefaultRootNamespace.
	RootNamespace string
	// AllowEmpty permits subsets that no pod backs yet.
	AllowEmpty bool
	// CreateServices creates missing per-version Services (Gateway API).
	CreateServices bool
	// Force writes the route even in ambient mode when no waypoint is
	// known to serve the Service (a warning note instead of an error).
	Force  bool
	API    API
	DryRun DryRun
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
	// Merged says a later round read other specs than the first: someone
	// else changed the routes meanwhile, and the split was merged into
	// their version. A conflict over status alone (a controller such as
	// istiod writing a route's status) is no such change.
	Merged bool
}

// NoHistoryError is returned by --undo when there is nothing to restore.
type NoHistoryError struct{ Reason string }

func (e *NoHistoryError) Error() string { return e.Reason }

// planned is one object to create or update.
type planned struct {
	gvr     schema.GroupVersionResource
	obj     *unstructured.Unstructured
	create  bool
	changed bool
	// remove deletes obj (it must still have the UID and resourceVersion
	// read), for --undo of a split that created it.
	remove bool
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
	if cfg.RootNamespace == "" {
		cfg.RootNamespace = DefaultRootNamespace
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
	amb, err := checkAmbient(ctx, c, b)
	if err != nil {
		return nil, err
	}
	if !cfg.Undo && cfg.Weights == nil {
		res, err := show(ctx, c, cfg, b)
		if err == nil {
			res.Notes = append(res.Notes, amb.showNotes()...)
		}
		return res, err
	}
	if !cfg.Undo {
		if err := b.requireVersions(); err != nil {
			return nil, err
		}
	}
	res := &SplitResult{}
	if amb.refusal != nil && !cfg.Undo {
		if !cfg.Force {
			return nil, amb.refusal
		}
		amb.notes = append(amb.notes, amb.refusal.Warning())
	}
	w := writer{dyn: c.Dynamic, dryRun: cfg.DryRun}
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	var firstSpecs string
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
		if specs := plannedSpecs(plan); res.Attempts == 1 {
			firstSpecs = specs
		} else if specs != firstSpecs {
			res.Merged = true
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
	res.Notes = append(amb.notes, res.Notes...)
	return res, nil
}

// plannedSpecs is what the plan would write, bar status and metadata.
func plannedSpecs(plan []planned) string {
	var b strings.Builder
	for _, p := range plan {
		spec, _ := json.Marshal(p.obj.Object["spec"])
		fmt.Fprintf(&b, "%s %s/%s %t %t %s\n", p.gvr.Resource, p.obj.GetNamespace(), p.obj.GetName(), p.changed, p.remove, spec)
	}
	return b.String()
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
				if err := w.writeOrRemove(ctx, p, true); err != nil {
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
			switch {
			case p.create:
				op = "created"
			case p.remove:
				op = "deleted"
			}
			if w.dryRun != DryRunClient {
				var err error
				if p.remove {
					err = w.writeOrRemove(ctx, p, w.dryRun == DryRunServer)
				} else {
					out, err = w.write(ctx, p.gvr, p.obj, p.create, w.dryRun == DryRunServer)
				}
				if err != nil {
					return nil, nil, err
				}
			}
		}
		if !p.remove {
			objs = append(objs, out)
		}
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

// checkSubsets fails for subsets without pods unless allowEmpty; a weight
// of 0 sends no traffic, so it needs no pods.
func checkSubsets(b *backend, weights []SubsetWeight, labelsOf func(string) map[string]string, allowEmpty bool) error {
	for _, sw := range weights {
		lbls := labelsOf(sw.Subset)
		if lbls == nil {
			lbls = b.subsetLabels(sw.Subset)
		}
		if _, total := b.podCounts(lbls); total > 0 || allowEmpty || sw.Weight == 0 {
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
	for _, k := range slices.Sorted(maps.Keys(m)) {
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
