package traffic

import (
	"context"
	"fmt"
	"strings"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// backend is a Service and the pods behind it, grouped by version.
type backend struct {
	svc   *corev1.Service
	label string
	pods  []corev1.Pod
	// versions are the values of label on the pods, in version order.
	versions []string
}

// loadBackend reads the Service and its pods. Every failure says what to do.
func loadBackend(ctx context.Context, kube kubernetes.Interface, ns, name, label string) (*backend, error) {
	svc, err := kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("service %q not found in namespace %q; list services with: kubectl get services -n %s", name, ns, ns)
	}
	if err != nil {
		return nil, mesh.Forbidden("get", "services", " in namespace "+ns, err)
	}
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("service %s/%s has no selector, so it has no pods to split traffic between; splits need a Service that selects pods", ns, name)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, mesh.Forbidden("list", "pods", " in namespace "+ns, err)
	}
	b := &backend{svc: svc, label: label}
	seen := map[string]bool{}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		b.pods = append(b.pods, p)
		if v, ok := p.Labels[label]; ok && v != "" && !seen[v] {
			seen[v] = true
			b.versions = append(b.versions, v)
		}
	}
	sortVersions(b.versions)
	return b, nil
}

// requireVersions fails when no pod carries the version label.
func (b *backend) requireVersions() error {
	sel := labels.SelectorFromSet(b.svc.Spec.Selector).String()
	if len(b.pods) == 0 {
		return fmt.Errorf("no pods behind service %s/%s (selector %s); deploy the workload first", b.svc.Namespace, b.svc.Name, sel)
	}
	if len(b.versions) == 0 {
		match := "match"
		if len(b.pods) == 1 {
			match = "matches"
		}
		return fmt.Errorf("no pods behind service %s/%s have a %q label (%s %s %s); label the pod templates (e.g. %s=v1) or name the label with --subset-label",
			b.svc.Namespace, b.svc.Name, b.label, plural(len(b.pods), "pod"), match, sel, b.label)
	}
	return nil
}

// podCounts returns ready and total pods matching lbls.
func (b *backend) podCounts(lbls map[string]string) (ready, total int) {
	if len(lbls) == 0 {
		return 0, 0
	}
	sel := labels.SelectorFromSet(lbls)
	for _, p := range b.pods {
		if !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		total++
		if mesh.PodReady(&p) {
			ready++
		}
	}
	return ready, total
}

// subsetLabels returns the labels a new subset for version v selects.
func (b *backend) subsetLabels(v string) map[string]string {
	return map[string]string{b.label: v}
}

// versionsText lists the versions found, for messages.
func (b *backend) versionsText() string {
	if len(b.versions) == 0 {
		return "none"
	}
	return strings.Join(b.versions, ", ")
}
