package controlplane

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Unchecked is a cluster-wide read the user may not make (a namespace
// admin may not): what could not be checked, what is assumed instead, and
// the permission that would let it be checked.
type Unchecked struct {
	// What was not read, e.g. "the sidecar injector webhooks".
	What string `json:"what"`
	// Instead says what is assumed or lost without it.
	Instead string `json:"instead"`
	// Permission is the RBAC rule that would allow the read.
	Permission string `json:"permission"`
}

func (u Unchecked) String() string {
	return fmt.Sprintf("could not check %s (%s); a ClusterRole and ClusterRoleBinding granting %s would let it", u.What, u.Instead, u.Permission)
}

// The reads Discover makes, as Unchecked when they are refused.
var (
	uncheckedWebhooks = Unchecked{What: "the sidecar injector webhooks",
		Instead:    "injection is judged by the selectors of Istio's standard injector webhooks",
		Permission: `"list" on mutatingwebhookconfigurations.admissionregistration.k8s.io`}
	uncheckedIstiod = Unchecked{What: "the istiod Deployments",
		Instead:    "istiod's version is read from the injector ConfigMap only",
		Permission: `"list" on deployments.apps`}
	uncheckedInjectorConfig = Unchecked{What: "the injector ConfigMaps",
		Instead:    "the chart's default injection policy is assumed and the injected proxy version is not known",
		Permission: `"list" on configmaps`}
	uncheckedZtunnel = Unchecked{What: "ztunnel",
		Instead:    "ambient namespaces are not checked for the node proxy that captures their traffic",
		Permission: `"list" on daemonsets.apps`}
)

// Labels Istio's standard injector webhooks select on.
const (
	labelInjection     = "istio-injection"
	labelSidecarInject = "sidecar.istio.io/inject"
)

// StandardWebhooks are the webhooks Istio's istiod chart installs for a
// revision, with their selectors: pods of a namespace labelled
// istio.io/rev=REV, or pods labelled istio.io/rev=REV in a namespace with
// neither label; for the default revision also istio-injection=enabled
// namespaces and sidecar.istio.io/inject=true pods. They stand in for the
// real ones when those may not be read.
func StandardWebhooks(revision string) []Webhook {
	rev := orDefault(revision)
	req := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	sel := func(reqs ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: reqs}
	}
	notOptedOut := req(labelSidecarInject, metav1.LabelSelectorOpNotIn, "false")
	noNsLabels := []metav1.LabelSelectorRequirement{req(LabelRev, metav1.LabelSelectorOpDoesNotExist), req(labelInjection, metav1.LabelSelectorOpDoesNotExist)}
	config := "istio-sidecar-injector"
	if rev != DefaultRevision {
		config += "-" + rev
	}
	hooks := []Webhook{
		{Config: config, Name: "rev.namespace.sidecar-injector.istio.io", Revision: rev,
			NamespaceSelector: sel(req(LabelRev, metav1.LabelSelectorOpIn, rev), req(labelInjection, metav1.LabelSelectorOpDoesNotExist)),
			ObjectSelector:    sel(notOptedOut)},
		{Config: config, Name: "rev.object.sidecar-injector.istio.io", Revision: rev,
			NamespaceSelector: sel(noNsLabels...),
			ObjectSelector:    sel(notOptedOut, req(LabelRev, metav1.LabelSelectorOpIn, rev))},
	}
	if rev != DefaultRevision {
		return hooks
	}
	return append(hooks,
		Webhook{Config: config, Name: "namespace.sidecar-injector.istio.io", Revision: rev,
			NamespaceSelector: sel(req(labelInjection, metav1.LabelSelectorOpIn, "enabled")),
			ObjectSelector:    sel(notOptedOut)},
		Webhook{Config: config, Name: "object.sidecar-injector.istio.io", Revision: rev,
			NamespaceSelector: sel(noNsLabels...),
			ObjectSelector:    sel(req(labelSidecarInject, metav1.LabelSelectorOpIn, "true"), req(LabelRev, metav1.LabelSelectorOpDoesNotExist))})
}
