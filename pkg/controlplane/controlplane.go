// Package controlplane finds the Istio control planes installed in a cluster:
// their revisions, tags, versions and sidecar injectors. It reads only what
// any cluster with Istio has (the injector webhooks and ConfigMaps, istiod
// Deployments), so it works whether istiod runs in the cluster or not.
package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Labels Istio puts on its objects.
const (
	LabelRev = mesh.LabelRev
	LabelTag = "istio.io/tag"
	// DefaultRevision is the revision name of a control plane installed without one.
	DefaultRevision = "default"
)

// ControlPlane is one Istio revision.
type ControlPlane struct {
	Revision string `json:"revision"`
	// Tags are revision tags pointing at this revision (istio.io/tag).
	Tags []string `json:"tags,omitempty"`
	// Version is the Istio version, from the istiod Deployment image or the
	// injector's values ("" when neither says).
	Version string `json:"version,omitempty"`
	// Namespace is where istiod's objects live (usually istio-system).
	Namespace string `json:"namespace,omitempty"`
	// RootNamespace is meshConfig.rootNamespace from the revision's mesh
	// ConfigMap ("istio" or "istio-REVISION"); "" when it does not say or
	// could not be read.
	RootNamespace string `json:"-"`
	// Injector names the MutatingWebhookConfiguration that injects sidecars
	// for this revision ("" when there is none).
	Injector string `json:"injector,omitempty"`
	// Istiod names the istiod Deployment, when istiod runs in the cluster.
	Istiod string `json:"istiod,omitempty"`
	// Injection is the injector's own policy from its ConfigMap: the
	// webhook selectors decide which pods reach istiod, this decides what
	// istiod then does with them.
	Injection InjectionConfig `json:"-"`
}

// InjectionConfig is the part of the istio-sidecar-injector ConfigMap's
// "config" that decides whether a pod gets a sidecar.
type InjectionConfig struct {
	// Policy is "enabled" or "disabled"; "" when the ConfigMap was not readable.
	Policy               string                 `json:"policy"`
	AlwaysInjectSelector []metav1.LabelSelector `json:"alwaysInjectSelector"`
	NeverInjectSelector  []metav1.LabelSelector `json:"neverInjectSelector"`
}

// Webhook is one sidecar-injection webhook: the revision (or tag) it serves
// and the selectors that decide which pods it injects.
type Webhook struct {
	Config            string
	Name              string
	Revision          string
	Tag               string
	NamespaceSelector *metav1.LabelSelector
	ObjectSelector    *metav1.LabelSelector
}

// Ztunnel is ambient mode's node proxy: a DaemonSet whose pods are
// labelled app=ztunnel. Istio's charts put that label only on the pod
// template and the selector, not on the DaemonSet itself.
type Ztunnel struct {
	Namespace, Name string
	Desired, Ready  int32
}

// Inventory is everything Discover found.
type Inventory struct {
	ControlPlanes []ControlPlane
	Webhooks      []Webhook
	Ztunnels      []Ztunnel
	// ZtunnelUnknown: listing DaemonSets was forbidden, so whether ambient
	// mode has its ztunnel could not be checked.
	ZtunnelUnknown bool
	// WebhooksUnknown: listing the webhook configurations was forbidden, so
	// Webhooks is empty and injection can only be judged by Istio's
	// standard selectors (StandardWebhooks).
	WebhooksUnknown bool
	// Unchecked are the reads that were refused, in the order made.
	Unchecked []Unchecked
}

// Revisions returns the revision names and tags found, sorted.
func (inv Inventory) Revisions() []string {
	var out []string
	seen := map[string]bool{}
	for _, cp := range inv.ControlPlanes {
		for _, n := range append([]string{cp.Revision}, cp.Tags...) {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Find returns the control plane for a revision or tag name.
func (inv Inventory) Find(name string) (ControlPlane, bool) {
	for _, cp := range inv.ControlPlanes {
		if cp.Revision == name {
			return cp, true
		}
		for _, t := range cp.Tags {
			if t == name {
				return cp, true
			}
		}
	}
	return ControlPlane{}, false
}

// HasInjector says whether any revision can inject sidecars.
func (inv Inventory) HasInjector() bool {
	for _, cp := range inv.ControlPlanes {
		if cp.Injector != "" {
			return true
		}
	}
	return false
}

// isInjector says whether a mutating webhook configuration is an Istio
// sidecar injector: Istio names its webhooks *.sidecar-injector.istio.io.
func isInjector(c *admissionregistrationv1.MutatingWebhookConfiguration) bool {
	for _, w := range c.Webhooks {
		if strings.HasSuffix(w.Name, "sidecar-injector.istio.io") {
			return true
		}
	}
	return false
}

// Discover lists what Istio has installed. It makes a fixed number of LIST
// calls however large the cluster is, each paged (mesh.List). Every read is of cluster-wide objects
// a namespace admin may not see: a refused read is recorded in Unchecked
// and the rest carries on. Other errors fail.
func Discover(ctx context.Context, kube kubernetes.Interface) (Inventory, error) {
	var inv Inventory
	byRev := map[string]*ControlPlane{}
	get := func(rev string) *ControlPlane {
		if rev == "" {
			rev = DefaultRevision
		}
		cp, ok := byRev[rev]
		if !ok {
			cp = &ControlPlane{Revision: rev}
			byRev[rev] = cp
		}
		return cp
	}
	hooks, err := mesh.List(ctx, metav1.ListOptions{}, kube.AdmissionregistrationV1().MutatingWebhookConfigurations().List)
	switch {
	case apierrors.IsForbidden(err):
		inv.WebhooksUnknown = true
		inv.Unchecked = append(inv.Unchecked, uncheckedWebhooks)
	case err != nil:
		return inv, fmt.Errorf("listing mutatingwebhookconfigurations to find the Istio sidecar injector: %w", err)
	default:
		inv.addWebhooks(hooks.Items, get)
	}

	deps, err := mesh.List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"}, kube.AppsV1().Deployments(metav1.NamespaceAll).List)
	switch {
	case apierrors.IsForbidden(err):
		inv.Unchecked = append(inv.Unchecked, uncheckedIstiod)
	case err != nil:
		return inv, fmt.Errorf("listing istiod deployments: %w", err)
	default:
		for i := range deps.Items {
			d := &deps.Items[i]
			cp := get(d.Labels[LabelRev])
			cp.Istiod = d.Namespace + "/" + d.Name
			cp.Namespace = d.Namespace
			if v := mesh.IstiodVersion(d); v != "" {
				cp.Version = v
			}
		}
	}

	cms, err := mesh.List(ctx, metav1.ListOptions{LabelSelector: LabelRev}, kube.CoreV1().ConfigMaps(metav1.NamespaceAll).List)
	switch {
	case apierrors.IsForbidden(err):
		inv.Unchecked = append(inv.Unchecked, uncheckedInjectorConfig)
	case err != nil:
		return inv, fmt.Errorf("listing istio configmaps: %w", err)
	default:
		for i := range cms.Items {
			cm := &cms.Items[i]
			if rev, root := meshRootNamespace(cm); root != "" {
				get(rev).RootNamespace = root
				continue
			}
			if !strings.HasPrefix(cm.Name, "istio-sidecar-injector") {
				continue
			}
			rev, ver := injectorValues(cm)
			if rev == "" {
				rev = cm.Labels[LabelRev]
			}
			// A ConfigMap without a webhook is a control plane that cannot inject.
			cp := get(rev)
			if cp.Namespace == "" {
				cp.Namespace = cm.Namespace
			}
			if cp.Version == "" {
				cp.Version = ver
			}
			if cp.Injection.Policy == "" {
				cp.Injection = injectorConfig(cm)
			}
		}
	}

	// Ambient mode captures traffic only where ztunnel runs.
	dss, err := mesh.List(ctx, metav1.ListOptions{}, kube.AppsV1().DaemonSets(metav1.NamespaceAll).List)
	switch {
	case apierrors.IsForbidden(err):
		inv.ZtunnelUnknown = true
		inv.Unchecked = append(inv.Unchecked, uncheckedZtunnel)
	case err != nil:
		return inv, fmt.Errorf("listing ztunnel daemonsets: %w", err)
	default:
		for _, d := range dss.Items {
			if d.Spec.Template.Labels["app"] != "ztunnel" {
				continue
			}
			inv.Ztunnels = append(inv.Ztunnels, Ztunnel{Namespace: d.Namespace, Name: d.Name,
				Desired: d.Status.DesiredNumberScheduled, Ready: d.Status.NumberReady})
		}
	}

	for _, cp := range byRev {
		sort.Strings(cp.Tags)
		inv.ControlPlanes = append(inv.ControlPlanes, *cp)
	}
	sort.Slice(inv.ControlPlanes, func(i, j int) bool { return inv.ControlPlanes[i].Revision < inv.ControlPlanes[j].Revision })
	sort.Slice(inv.Webhooks, func(i, j int) bool {
		a, b := inv.Webhooks[i], inv.Webhooks[j]
		if a.Config != b.Config {
			return a.Config < b.Config
		}
		return a.Name < b.Name
	})
	return inv, nil
}

// addWebhooks records the sidecar injectors among the webhook
// configurations: their webhooks, and the revisions and tags they serve.
func (inv *Inventory) addWebhooks(configs []admissionregistrationv1.MutatingWebhookConfiguration, get func(rev string) *ControlPlane) {
	for i := range configs {
		c := &configs[i]
		if !isInjector(c) {
			continue
		}
		rev := c.Labels[LabelRev]
		tag := c.Labels[LabelTag]
		for _, w := range c.Webhooks {
			inv.Webhooks = append(inv.Webhooks, Webhook{
				Config: c.Name, Name: w.Name, Revision: orDefault(rev), Tag: tag,
				NamespaceSelector: w.NamespaceSelector, ObjectSelector: w.ObjectSelector,
			})
		}
		cp := get(rev)
		if tag != "" {
			// A tag webhook points at a revision; "default" tag means the
			// default injection labels go to that revision.
			if !slices.Contains(cp.Tags, tag) {
				cp.Tags = append(cp.Tags, tag)
			}
			continue
		}
		if cp.Injector == "" {
			cp.Injector = c.Name
		}
	}
}

// RootNamespace is Istio's root namespace: meshConfig.rootNamespace of the
// default revision, else of the first revision that sets it, else fallback.
func (inv Inventory) RootNamespace(fallback string) string {
	root := ""
	for _, cp := range inv.ControlPlanes {
		if cp.RootNamespace == "" {
			continue
		}
		if root == "" || cp.Revision == DefaultRevision {
			root = cp.RootNamespace
		}
	}
	if root == "" {
		return fallback
	}
	return root
}

// meshRootNamespace reads rootNamespace from a mesh ConfigMap ("istio" for
// the default revision, "istio-REVISION" otherwise, key "mesh"); root is
// "" for any other ConfigMap or when the mesh config does not set it.
func meshRootNamespace(cm *corev1.ConfigMap) (revision, root string) {
	revision = cm.Labels[LabelRev]
	if cm.Name != "istio" && (revision == "" || cm.Name != "istio-"+revision) {
		return "", ""
	}
	var mc struct {
		RootNamespace string `json:"rootNamespace"`
	}
	if yaml.Unmarshal([]byte(cm.Data["mesh"]), &mc) != nil {
		return "", ""
	}
	return revision, mc.RootNamespace
}

// injectorValues reads revision and version from the injector ConfigMap's
// "values" (the chart's values, as JSON).
func injectorValues(cm *corev1.ConfigMap) (revision, version string) {
	var v struct {
		Revision string `json:"revision"`
		Global   struct {
			Tag json.RawMessage `json:"tag"`
		} `json:"global"`
	}
	if err := json.Unmarshal([]byte(cm.Data["values"]), &v); err != nil {
		return "", ""
	}
	tag := strings.Trim(string(v.Global.Tag), `"`)
	if tag == "null" {
		tag = ""
	}
	return v.Revision, mesh.TagVersion(tag)
}

// injectorConfig reads the injection policy and selectors from the injector
// ConfigMap's "config". Istio treats an unparsable config as fatal, so a
// ConfigMap we cannot read yields the chart's default policy.
func injectorConfig(cm *corev1.ConfigMap) InjectionConfig {
	var c InjectionConfig
	if err := yaml.Unmarshal([]byte(cm.Data["config"]), &c); err != nil || c.Policy == "" {
		c.Policy = "enabled"
	}
	return c
}

func orDefault(rev string) string {
	if rev == "" {
		return DefaultRevision
	}
	return rev
}
