// Package inject decides which pods Istio injects with a sidecar, which
// workloads need a restart to match, performs those restarts and reports
// the injection state of namespaces. It evaluates the installed injector
// webhooks' own selectors, then the checks istiod applies to pods that reach
// it, so its answer is the cluster's answer rather than a guess from labels.
package inject

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Labels and annotations Istio and kubectl use.
const (
	LabelInjection     = "istio-injection"
	LabelRev           = controlplane.LabelRev
	LabelSidecarInject = "sidecar.istio.io/inject" // label, or (older) annotation
	LabelDataplaneMode = "istio.io/dataplane-mode"
	DataplaneAmbient   = "ambient"

	AnnotationSidecarStatus = mesh.AnnotationSidecarStatus
	AnnotationProxyImage    = "sidecar.istio.io/proxyImage"
	AnnotationRestartedAt   = "kubectl.kubernetes.io/restartedAt"
	ProxyContainer          = mesh.ProxyContainer
)

// ignoredNamespaces are never injected by istiod, whatever the labels say
// (Istio's IgnoredNamespaces).
var ignoredNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// Decision is what Istio would do with a pod created now.
type Decision struct {
	Inject bool
	// Revision is the control-plane revision whose webhook the pod reaches
	// ("" when none does). Tags are resolved to their revision.
	Revision string
	// Webhook is configuration/webhook name of the matching injector webhook.
	Webhook string
	// Reason explains the decision in a few words.
	Reason string
}

// Rules evaluates injection against the webhooks and injector configs found
// by controlplane.Discover.
type Rules struct {
	inv  controlplane.Inventory
	cps  map[string]controlplane.ControlPlane
	hook []compiledWebhook

	// assumed are Istio's standard webhooks per revision, compiled on
	// first use, for when the real ones may not be read.
	mu      sync.Mutex
	assumed map[string][]compiledWebhook
}

type compiledWebhook struct {
	controlplane.Webhook
	ns, obj labels.Selector
	err     error
}

// NewRules compiles the webhooks' selectors once.
func NewRules(inv controlplane.Inventory) *Rules {
	r := &Rules{inv: inv, cps: map[string]controlplane.ControlPlane{}}
	for _, cp := range inv.ControlPlanes {
		r.cps[cp.Revision] = cp
	}
	r.hook = compile(inv.Webhooks)
	return r
}

func compile(hooks []controlplane.Webhook) []compiledWebhook {
	var out []compiledWebhook
	for _, w := range hooks {
		c := compiledWebhook{Webhook: w}
		c.ns, c.err = selector(w.NamespaceSelector)
		if c.err == nil {
			c.obj, c.err = selector(w.ObjectSelector)
		}
		out = append(out, c)
	}
	return out
}

// webhooks are the injector webhooks a pod with these labels could reach:
// the installed ones, or when they may not be read, Istio's standard ones
// for the revision the labels ask for.
func (r *Rules) webhooks(nsLabels, podLabels map[string]string) []compiledWebhook {
	if !r.inv.WebhooksUnknown {
		return r.hook
	}
	rev := nsLabels[LabelRev]
	if rev == "" {
		rev = podLabels[LabelRev]
	}
	if rev == "" {
		rev = controlplane.DefaultRevision
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.assumed == nil {
		r.assumed = map[string][]compiledWebhook{}
	}
	hooks, ok := r.assumed[rev]
	if !ok {
		hooks = compile(controlplane.StandardWebhooks(rev))
		if rev != controlplane.DefaultRevision {
			hooks = append(hooks, compile(controlplane.StandardWebhooks(controlplane.DefaultRevision))...)
		}
		r.assumed[rev] = hooks
	}
	return hooks
}

// Inventory is what the rules were built from.
func (r *Rules) Inventory() controlplane.Inventory { return r.inv }

// selector converts a webhook selector; the API server treats a missing
// selector as matching everything, while LabelSelectorAsSelector(nil)
// matches nothing.
func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// Evaluate says whether a pod with the given metadata and spec, created in
// namespace ns (with nsLabels), would get a sidecar.
func (r *Rules) Evaluate(ns string, nsLabels map[string]string, pod metav1.ObjectMeta, spec *corev1.PodSpec) Decision {
	nsl := withNameLabel(ns, nsLabels)
	var match *compiledWebhook
	hooks := r.webhooks(nsLabels, pod.Labels)
	for i := range hooks {
		h := &hooks[i]
		if h.err != nil {
			continue
		}
		if h.ns.Matches(labels.Set(nsl)) && h.obj.Matches(labels.Set(pod.Labels)) {
			match = h
			break
		}
	}
	if match == nil {
		return Decision{Reason: r.whyNoWebhook(nsLabels, pod.Labels)}
	}
	d := Decision{Revision: match.Revision, Webhook: match.Config + "/" + match.Name}
	if spec != nil && spec.HostNetwork {
		d.Reason = "hostNetwork pods are never injected"
		return d
	}
	if ignoredNamespaces[ns] {
		d.Reason = "istiod never injects in " + ns
		return d
	}
	cfg := r.cps[match.Revision].Injection
	value, set := podInjectValue(pod)
	switch {
	case set && value == "true":
		d.Inject, d.Reason = true, LabelSidecarInject+"=true"
		return d
	case set && value == "false":
		d.Reason = LabelSidecarInject + "=false"
		return d
	}
	for _, s := range cfg.NeverInjectSelector {
		if sel, err := metav1.LabelSelectorAsSelector(&s); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
			d.Reason = "matches the injector's neverInjectSelector"
			return d
		}
	}
	for _, s := range cfg.AlwaysInjectSelector {
		if sel, err := metav1.LabelSelectorAsSelector(&s); err == nil && !sel.Empty() && sel.Matches(labels.Set(pod.Labels)) {
			d.Inject, d.Reason = true, "matches the injector's alwaysInjectSelector"
			return d
		}
	}
	switch cfg.Policy {
	case "disabled":
		d.Reason = "injector policy is disabled and the pod does not opt in"
	case "", "enabled":
		// "" is a ConfigMap we could not read: the chart's default applies.
		d.Inject, d.Reason = true, "namespace enabled"
	default:
		d.Reason = fmt.Sprintf("injector policy %q is invalid, istiod injects nothing", cfg.Policy)
	}
	return d
}

// podInjectValue is sidecar.istio.io/inject as istiod reads it: the label
// wins over the annotation.
func podInjectValue(pod metav1.ObjectMeta) (string, bool) {
	if v, ok := pod.Labels[LabelSidecarInject]; ok {
		return v, v == "true" || v == "false"
	}
	v := pod.Annotations[LabelSidecarInject]
	return v, v == "true" || v == "false"
}

// whyNoWebhook explains, from the labels, why no injector webhook matched.
func (r *Rules) whyNoWebhook(nsLabels, podLabels map[string]string) string {
	if podLabels[LabelSidecarInject] == "false" {
		return LabelSidecarInject + "=false"
	}
	if v, ok := nsLabels[LabelInjection]; ok && v != "enabled" {
		return fmt.Sprintf("namespace has %s=%s", LabelInjection, v)
	}
	if r.inv.WebhooksUnknown {
		return "injection not enabled"
	}
	if rev := nsLabels[LabelRev]; rev != "" {
		if _, ok := r.inv.Find(rev); !ok {
			return fmt.Sprintf("namespace asks for revision %q, which is not installed", rev)
		}
	}
	if rev := podLabels[LabelRev]; rev != "" {
		if _, ok := r.inv.Find(rev); !ok {
			return fmt.Sprintf("pod asks for revision %q, which is not installed", rev)
		}
	}
	if len(r.hook) == 0 {
		return "no sidecar injector installed"
	}
	return "injection not enabled"
}

func withNameLabel(ns string, l map[string]string) map[string]string {
	if _, ok := l[corev1.LabelMetadataName]; ok || ns == "" {
		return l
	}
	out := make(map[string]string, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	out[corev1.LabelMetadataName] = ns
	return out
}

// Sidecar is the Istio proxy of a pod (see mesh.SidecarOf).
type Sidecar = mesh.Sidecar

// SidecarOf inspects a pod: mesh.SidecarOf, the one definition every
// command uses.
func SidecarOf(pod *corev1.Pod) Sidecar { return mesh.SidecarOf(pod) }

// version is the Istio version of a revision ("" when unknown).
func (r *Rules) version(rev string) string {
	return r.cps[rev].Version
}

// Revisions lists the revision and tag names installed.
func (r *Rules) Revisions() []string { return r.inv.Revisions() }
