package traffic

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
)

// DefaultRootNamespace is Istio's default meshConfig.rootNamespace, whose
// DestinationRules apply to services in every namespace they are exported to.
const DefaultRootNamespace = "istio-system"

// exactHost is the rank of a DestinationRule host that names the service
// itself; wildcard hosts rank by length, so the longer (more specific) wins.
const exactHost = 1 << 20

// destRule is the DestinationRule Istio applies to a service for clients
// in the service's namespace, as Istio looks it up: a rule in that
// namespace first, else one in the root namespace exported to it; among
// several, the most specific host (exact before wildcard, longer wildcard
// before shorter).
type destRule struct {
	obj *unstructured.Unstructured
	// exact: obj is in the service's namespace and its host names the
	// service, so split edits it freely.
	exact bool
	// root: obj is in the root namespace.
	root bool
	// note is set when the root namespace could not be read.
	note string
}

// drHostRank ranks how DestinationRule host h, written in namespace drNS,
// matches service svc in ns: 0 for no match.
func drHostRank(h, drNS, svc, ns string) int {
	if strings.HasPrefix(h, "*") {
		if h == "*" || strings.HasSuffix(svc+"."+ns+".svc.cluster.local", h[1:]) {
			return len(h)
		}
		return 0
	}
	// A short name means a service in the rule's own namespace.
	if hostMatches(h, svc, ns) && (drNS == ns || h != svc) {
		return exactHost
	}
	return 0
}

// exportedTo says whether a rule in drNS with exportTo reaches clients in ns.
func exportedTo(exportTo []string, drNS, ns string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || e == ns || (e == "." && drNS == ns) {
			return true
		}
	}
	return false
}

// bestRule returns the most specific rule in list for svc in ns, and an
// error when two tie.
func bestRule(list []unstructured.Unstructured, svc, ns string) (*unstructured.Unstructured, int, error) {
	var best []*unstructured.Unstructured
	rank := 0
	for i := range list {
		item := &list[i]
		if _, found, _ := unstructured.NestedMap(item.Object, "spec", "workloadSelector"); found {
			continue // applies only to the workloads it selects
		}
		exportTo, _, _ := unstructured.NestedStringSlice(item.Object, "spec", "exportTo")
		if !exportedTo(exportTo, item.GetNamespace(), ns) {
			continue
		}
		h, _, _ := unstructured.NestedString(item.Object, "spec", "host")
		r := drHostRank(h, item.GetNamespace(), svc, ns)
		switch {
		case r == 0 || r < rank:
		case r > rank:
			rank, best = r, []*unstructured.Unstructured{item}
		default:
			best = append(best, item)
		}
	}
	switch len(best) {
	case 0:
		return nil, 0, nil
	case 1:
		return best[0], rank, nil
	}
	h, _, _ := unstructured.NestedString(best[0].Object, "spec", "host")
	return nil, 0, fmt.Errorf("service %s/%s has %d DestinationRules for host %s in namespace %s (%s); Istio uses only one of them: merge them into one, then split again",
		ns, svc, len(best), h, best[0].GetNamespace(), names(best))
}

// findDestinationRule finds the rule Istio applies to svc (see destRule).
func findDestinationRule(ctx context.Context, dyn dynamic.Interface, ns, svc, rootNS string) (destRule, error) {
	list, err := dyn.Resource(DestinationRules).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return destRule{}, listErr(err, DestinationRules, ns)
	}
	obj, rank, err := bestRule(list.Items, svc, ns)
	if err != nil || obj != nil {
		return destRule{obj: obj, exact: rank == exactHost}, err
	}
	if rootNS == "" || rootNS == ns {
		return destRule{}, nil
	}
	list, err = dyn.Resource(DestinationRules).Namespace(rootNS).List(ctx, metav1.ListOptions{})
	if apierrors.IsForbidden(err) {
		return destRule{note: fmt.Sprintf("could not read DestinationRules in the root namespace %s (forbidden): if one there applies to service %s/%s, the new destinationrule %s/%s takes its place for that host", rootNS, ns, svc, ns, svc)}, nil
	}
	if err != nil {
		return destRule{}, listErr(err, DestinationRules, rootNS)
	}
	obj, _, err = bestRule(list.Items, svc, ns)
	return destRule{obj: obj, root: obj != nil}, err
}

// planDestinationRule makes sure the rule that applies to the service has
// the subsets the split needs, and changes nothing else: existing subsets,
// trafficPolicy and every other field stay as they are. Without a rule it
// creates one for the service. It never creates a rule that would take the
// place of a wildcard or root-namespace rule (Istio applies only the most
// specific one, so that rule's trafficPolicy would silently stop applying):
// it adds the subsets to a wildcard rule in the service's namespace when
// that rule reaches every namespace the VirtualService does, and otherwise
// refuses, saying what to do.
func planDestinationRule(d destRule, vs *unstructured.Unstructured, subs istioSubsets, weights []SubsetWeight, b *backend, cfg SplitConfig) (planned, []string, error) {
	want := make([]string, 0, len(weights))
	for _, w := range weights {
		want = append(want, w.Subset)
	}
	if d.obj == nil {
		return newDestinationRule(want, subs, b, cfg, d.note)
	}
	dr := d.obj.DeepCopy()
	list, _, _ := unstructured.NestedSlice(dr.Object, "spec", "subsets")
	have := map[string]bool{}
	for _, s := range subsetsOf(dr) {
		have[s.name] = true
	}
	var missing []string
	for _, name := range want {
		if have[name] {
			continue
		}
		s, err := newSubset(name, subs.labels(name), b)
		if err != nil {
			return planned{}, nil, err
		}
		list = append(list, s)
		missing = append(missing, fmt.Sprintf("%s (%s)", name, formatLabels(subs.labels(name))))
	}
	if len(missing) == 0 {
		return planned{gvr: DestinationRules, obj: dr}, nil, nil
	}
	host, _, _ := unstructured.NestedString(dr.Object, "spec", "host")
	what := fmt.Sprintf("destinationrule %s/%s (host %s)", dr.GetNamespace(), dr.GetName(), host)
	var notes []string
	if !d.exact {
		if d.root {
			return planned{}, nil, fmt.Errorf("%s in the root namespace applies to service %s/%s and lacks subsets %s; a DestinationRule for the service in %s would take its place for that host (Istio uses only the most specific rule), and its trafficPolicy would no longer apply there. Add the subsets to that rule, or create a DestinationRule for %s in %s with the subsets and a copy of its trafficPolicy, then split again",
				what, cfg.Namespace, cfg.Service, strings.Join(missing, ", "), cfg.Namespace, cfg.Service, cfg.Namespace)
		}
		drExport, _, _ := unstructured.NestedStringSlice(dr.Object, "spec", "exportTo")
		var vsExport []string
		vsName := "virtualservice " + cfg.Service + " (new)"
		if vs != nil {
			vsExport, _, _ = unstructured.NestedStringSlice(vs.Object, "spec", "exportTo")
			vsName = "virtualservice " + vs.GetName()
		}
		if !exportCovers(drExport, vsExport, cfg.Namespace) {
			return planned{}, nil, fmt.Errorf("%s applies to service %s/%s and lacks subsets %s, but it is exported to %s while %s is exported to %s, where those subsets would not exist; a new DestinationRule for the service would drop that rule's trafficPolicy for it. Export the rule as widely as the VirtualService, or add the subsets to it yourself, then split again",
				what, cfg.Namespace, cfg.Service, strings.Join(missing, ", "), exportText(drExport), vsName, exportText(vsExport))
		}
		notes = append(notes, fmt.Sprintf("added subsets %s to %s, the rule Istio applies to service %s/%s: a new rule for the service alone would drop its trafficPolicy for it",
			strings.Join(missing, ", "), what, cfg.Namespace, cfg.Service))
	}
	if err := unstructured.SetNestedSlice(dr.Object, list, "spec", "subsets"); err != nil {
		return planned{}, nil, err
	}
	return planned{gvr: DestinationRules, obj: dr, changed: true}, notes, nil
}

// newDestinationRule is a rule for the service with a subset per version,
// so later splits need no DestinationRule change.
func newDestinationRule(want []string, subs istioSubsets, b *backend, cfg SplitConfig, note string) (planned, []string, error) {
	dr := newObject(DestinationRules, cfg.Namespace, cfg.Service)
	if err := unstructured.SetNestedField(dr.Object, cfg.Service, "spec", "host"); err != nil {
		return planned{}, nil, err
	}
	for _, v := range b.versions {
		if len(validation.IsDNS1123Label(v)) == 0 && !slices.Contains(want, v) {
			want = append(want, v)
		}
	}
	sortVersions(want)
	var list []interface{}
	for _, name := range want {
		s, err := newSubset(name, subs.labels(name), b)
		if err != nil {
			return planned{}, nil, err
		}
		list = append(list, s)
	}
	if err := unstructured.SetNestedSlice(dr.Object, list, "spec", "subsets"); err != nil {
		return planned{}, nil, err
	}
	var notes []string
	if note != "" {
		notes = append(notes, note)
	}
	return planned{gvr: DestinationRules, obj: dr, create: true, changed: true}, notes, nil
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

// exportCovers says whether a rule exported to dr reaches every namespace
// a VirtualService in ns exported to vs reaches.
func exportCovers(dr, vs []string, ns string) bool {
	if len(dr) == 0 || slices.Contains(dr, "*") {
		return true // exported everywhere
	}
	if len(vs) == 0 {
		return false
	}
	for _, e := range vs {
		switch e {
		case "~":
		case "*":
			return false
		case ".":
			if !exportedTo(dr, ns, ns) {
				return false
			}
		default:
			if !exportedTo(dr, ns, e) {
				return false
			}
		}
	}
	return true
}

func exportText(exportTo []string) string {
	if len(exportTo) == 0 {
		return "every namespace"
	}
	return strings.Join(exportTo, ", ")
}
