// Package traffic sets and shows traffic splits between the versions of a
// Service (Istio DestinationRule + VirtualService, or Gateway API HTTPRoute)
// and exposes Services through an ingress gateway.
//
// It edits objects as unstructured data on purpose: a typed round trip
// through Istio's Go types would drop fields this version does not know
// (newer API fields, or anything a future Istio adds), and the rule here is
// that everything a user did not ask to change comes out byte-for-byte the
// same.
package traffic

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// FieldManager is recorded in managedFields for everything this package writes.
const FieldManager = "kubectl-mesh"

// Resources this package reads and writes.
var (
	VirtualServices  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	DestinationRules = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	IstioGateways    = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}
	HTTPRoutes       = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	Gateways         = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	Services         = schema.GroupVersionResource{Version: "v1", Resource: "services"}
)

var kinds = map[schema.GroupVersionResource]string{
	VirtualServices:  "VirtualService",
	DestinationRules: "DestinationRule",
	IstioGateways:    "Gateway",
	HTTPRoutes:       "HTTPRoute",
	Gateways:         "Gateway",
	Services:         "Service",
}

// Clients are the API clients the engine needs.
type Clients struct {
	Kube      kubernetes.Interface
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
}

// API chooses which routing API to write.
type API string

const (
	// APIIstio writes networking.istio.io VirtualService/DestinationRule/Gateway.
	APIIstio API = "istio"
	// APIGateway writes Gateway API HTTPRoute/Gateway and per-version Services.
	APIGateway API = "gateway"
)

// DryRun is kubectl's --dry-run.
type DryRun string

const (
	DryRunNone   DryRun = "none"
	DryRunClient DryRun = "client"
	DryRunServer DryRun = "server"
)

// Change is one object written (or that would be written).
type Change struct {
	// Resource is kubectl's resource.group form, e.g. virtualservice.networking.istio.io.
	Resource string
	Name     string
	// Op is created, configured or unchanged.
	Op string
}

func (c Change) String() string { return c.Resource + "/" + c.Name + " " + c.Op }

// MissingAPIError says a resource the command needs is not served.
type MissingAPIError struct {
	GVR  schema.GroupVersionResource
	Kind string
	Hint string
}

func (e *MissingAPIError) Error() string {
	return fmt.Sprintf("%s (no %s %s); %s", e.Hint, e.GVR.GroupVersion(), e.Kind, installHint(e.GVR))
}

func installHint(gvr schema.GroupVersionResource) string {
	if gvr.Group == Gateways.Group {
		return "install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"
	}
	return "install Istio first"
}

// RequireAPI checks through discovery that gvr is served. A cached discovery
// client is refreshed once before giving up, so CRDs installed a moment ago
// are found.
func RequireAPI(d discovery.DiscoveryInterface, gvr schema.GroupVersionResource) error {
	ok, err := served(d, gvr)
	if err == nil && !ok {
		if c, cached := d.(discovery.CachedDiscoveryInterface); cached {
			c.Invalidate()
			ok, err = served(d, gvr)
		}
	}
	if err != nil {
		return fmt.Errorf("discovering %s: %w", gvr.GroupVersion(), err)
	}
	if ok {
		return nil
	}
	hint := "istio CRDs are not installed in this cluster"
	if gvr.Group == Gateways.Group {
		hint = "Gateway API CRDs are not installed in this cluster"
	}
	kind := kinds[gvr]
	if kind == "" {
		kind = gvr.Resource
	}
	return &MissingAPIError{GVR: gvr, Kind: kind, Hint: hint}
}

func served(d discovery.DiscoveryInterface, gvr schema.GroupVersionResource) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(gvr.GroupVersion().String())
	if apierrors.IsNotFound(err) || errors.Is(err, memory.ErrCacheNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range list.APIResources {
		if r.Name == gvr.Resource {
			return true, nil
		}
	}
	return false, nil
}

// resourceName is kubectl's "virtualservice.networking.istio.io".
func resourceName(gvr schema.GroupVersionResource) string {
	kind := strings.ToLower(kinds[gvr])
	if gvr.Group == "" {
		return kind
	}
	return kind + "." + gvr.Group
}

// hostMatches says whether host, written in an Istio object in namespace ns,
// names service svc in ns.
func hostMatches(host, svc, ns string) bool {
	switch host {
	case svc, svc + "." + ns, svc + "." + ns + ".svc":
		return true
	}
	return strings.HasPrefix(host, svc+"."+ns+".svc.")
}

// versionLess orders versions naturally: v2 < v10, 1.9 < 1.10.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := splitDigits(a)
		db, rb := splitDigits(b)
		if da != "" && db != "" {
			na, _ := strconv.ParseUint(strings.TrimLeft(da, "0"), 10, 64)
			nb, _ := strconv.ParseUint(strings.TrimLeft(db, "0"), 10, 64)
			if na != nb {
				return na < nb
			}
			if len(da) != len(db) {
				return len(da) < len(db)
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func splitDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

func sortVersions(v []string) {
	sort.SliceStable(v, func(i, j int) bool { return versionLess(v[i], v[j]) })
}

// writer creates or updates objects, honouring --dry-run.
type writer struct {
	dyn    dynamic.Interface
	dryRun DryRun
}

// write sends one object. With dry set it asks the server to validate only.
func (w writer) write(ctx context.Context, gvr schema.GroupVersionResource, obj *unstructured.Unstructured, create, dry bool) (*unstructured.Unstructured, error) {
	var dr []string
	if dry {
		dr = []string{metav1.DryRunAll}
	}
	ri := w.dyn.Resource(gvr).Namespace(obj.GetNamespace())
	var out *unstructured.Unstructured
	var err error
	verb := "updating"
	if create {
		verb = "creating"
		out, err = ri.Create(ctx, obj, metav1.CreateOptions{DryRun: dr, FieldManager: FieldManager})
	} else {
		out, err = ri.Update(ctx, obj, metav1.UpdateOptions{DryRun: dr, FieldManager: FieldManager})
	}
	if err != nil {
		return nil, wrapWriteErr(err, verb, gvr, obj)
	}
	return out, nil
}

// writeOrRemove sends p as a write, or as a delete that holds only while
// the object is still the one read (same UID and resourceVersion). An
// object already gone counts as deleted.
func (w writer) writeOrRemove(ctx context.Context, p planned, dry bool) error {
	if !p.remove {
		_, err := w.write(ctx, p.gvr, p.obj, p.create, dry)
		return err
	}
	var dr []string
	if dry {
		dr = []string{metav1.DryRunAll}
	}
	uid, rv := p.obj.GetUID(), p.obj.GetResourceVersion()
	opts := metav1.DeleteOptions{DryRun: dr}
	if uid != "" || rv != "" {
		opts.Preconditions = &metav1.Preconditions{}
		if uid != "" {
			opts.Preconditions.UID = &uid
		}
		if rv != "" {
			opts.Preconditions.ResourceVersion = &rv
		}
	}
	err := w.dyn.Resource(p.gvr).Namespace(p.obj.GetNamespace()).Delete(ctx, p.obj.GetName(), opts)
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return wrapWriteErr(err, "deleting", p.gvr, p.obj)
}

func wrapWriteErr(err error, verb string, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) error {
	what := fmt.Sprintf("%s %s %s/%s", verb, strings.ToLower(kinds[gvr]), obj.GetNamespace(), obj.GetName())
	switch {
	case apierrors.IsForbidden(err):
		v := map[string]string{"creating": "create", "deleting": "delete"}[verb]
		if v == "" {
			v = "update"
		}
		return fmt.Errorf("%s: %w; ask a cluster admin for %q on %s in namespace %s", what, err, v, qualifiedResource(gvr), obj.GetNamespace())
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return fmt.Errorf("%s: the API server rejected it: %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// qualifiedResource is "virtualservices.networking.istio.io", as RBAC names it.
func qualifiedResource(gvr schema.GroupVersionResource) string {
	if gvr.Group == "" {
		return gvr.Resource
	}
	return gvr.Resource + "." + gvr.Group
}

// listErr wraps a failed LIST, naming the verb and resource for RBAC errors.
func listErr(err error, gvr schema.GroupVersionResource, ns string) error {
	res := qualifiedResource(gvr)
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("listing %s in namespace %s: %w; ask a cluster admin for \"list\" on %s", res, ns, err, res)
	}
	return fmt.Errorf("listing %s in namespace %s: %w", res, ns, err)
}

// newObject returns an empty unstructured object of gvr.
func newObject(gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]interface{}{}}
	u.SetAPIVersion(gvr.GroupVersion().String())
	u.SetKind(kinds[gvr])
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}
