package certs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/util/podutils"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// An ambient pod has no sidecar: the ztunnel on its node holds its
// workload certificate and serves it on its admin port.
const (
	// ZtunnelApp is the app label of Istio's ztunnel DaemonSet pods.
	ZtunnelApp = "ztunnel"
	// ZtunnelNamespace is where Istio installs ztunnel; looked at first.
	ZtunnelNamespace = "istio-system"
	// ZtunnelAdminPort serves ztunnel's /config_dump.
	ZtunnelAdminPort = 15000
	// ZtunnelConfigDumpPath is ztunnel's dump, certificates included.
	ZtunnelConfigDumpPath = "/config_dump"
)

// Ambient says whether pod has no sidecar and is captured by ztunnel
// (pkg/mesh.AmbientOf with its namespace's labels). known is false when the
// namespace could not be read (a namespace admin may not get Namespaces)
// and the pod's own labels do not decide it.
func Ambient(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod) (ambient, known bool) {
	if HasProxy(pod) || kube == nil {
		return false, true
	}
	ns, err := kube.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{})
	if err != nil {
		a := mesh.AmbientOf(pod, nil)
		_, labelled := pod.Labels[mesh.LabelDataplaneMode]
		return a.Mode == mesh.AmbientCaptured, labelled || !apierrors.IsForbidden(err)
	}
	return mesh.AmbientOf(pod, ns.Labels).Mode == mesh.AmbientCaptured, true
}

// NoZtunnelError is an ambient pod whose node runs no ztunnel.
type NoZtunnelError struct{ Pod, Node string }

func (e *NoZtunnelError) Error() string {
	return fmt.Sprintf("pod %s is enrolled in ambient mode but no ztunnel pod (label app=%s) runs on its node %s, so it has no mesh certificate and its traffic is not in the mesh; check Istio's ztunnel DaemonSet (kubectl get pods -A -l app=%s -o wide)",
		e.Pod, ZtunnelApp, e.Node, ZtunnelApp)
}

// FindZtunnel returns the ztunnel pod on node: Running and Ready first,
// istio-system before other namespaces. It looks in istio-system, then
// in every namespace the user may list.
func FindZtunnel(ctx context.Context, kube kubernetes.Interface, node string) (*corev1.Pod, error) {
	opts := metav1.ListOptions{
		LabelSelector: labels.Set{"app": ZtunnelApp}.String(),
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	}
	var found []*corev1.Pod
	var refused []string
	for _, ns := range []string{ZtunnelNamespace, metav1.NamespaceAll} {
		list, err := kube.CoreV1().Pods(ns).List(ctx, opts)
		if apierrors.IsForbidden(err) {
			where := "namespace " + ns
			if ns == metav1.NamespaceAll {
				where = "all namespaces"
			}
			refused = append(refused, where)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("looking for the ztunnel on node %s: %w", node, err)
		}
		for i := range list.Items {
			// The field selector is checked again: not every server (or
			// fake) applies it.
			if p := &list.Items[i]; p.DeletionTimestamp == nil && p.Spec.NodeName == node {
				found = append(found, p)
			}
		}
		if len(found) > 0 {
			break
		}
	}
	if len(found) == 0 {
		if len(refused) == 2 {
			return nil, fmt.Errorf("cannot look for the ztunnel on node %s: not allowed to list pods in %s nor %s; ask for RBAC rights to list pods in %s (check with: kubectl auth can-i list pods -n %s)",
				node, refused[0], refused[1], ZtunnelNamespace, ZtunnelNamespace)
		}
		return nil, nil
	}
	sort.SliceStable(found, func(i, j int) bool {
		a, b := found[i], found[j]
		if ra, rb := ztunnelUsable(a), ztunnelUsable(b); ra != rb {
			return ra
		}
		if (a.Namespace == ZtunnelNamespace) != (b.Namespace == ZtunnelNamespace) {
			return a.Namespace == ZtunnelNamespace
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	return found[0], nil
}

func ztunnelUsable(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && podutils.IsPodReady(p)
}

// fetchZtunnel reads the certificates ztunnel holds for pod's identity from
// the ztunnel on its node: /config_dump on the admin port, through the
// same port-forward as Envoy's.
func fetchZtunnel(ctx context.Context, c Clients, pod *corev1.Pod) ([]*Bundle, error) {
	ref := pod.Namespace + "/" + pod.Name
	if pod.Spec.NodeName == "" {
		return nil, fmt.Errorf("pod %s is not scheduled to a node yet, so no ztunnel holds its certificate; wait for it", ref)
	}
	if c.Kube == nil {
		return nil, errors.New("no Kubernetes client to find the ztunnel of an ambient pod")
	}
	z, err := FindZtunnel(ctx, c.Kube, pod.Spec.NodeName)
	if err != nil {
		return nil, err
	}
	if z == nil {
		return nil, &NoZtunnelError{Pod: ref, Node: pod.Spec.NodeName}
	}
	zref := z.Namespace + "/" + z.Name
	if z.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("the ztunnel %s on node %s is %s, not Running; check it (kubectl describe pod %s -n %s)", zref, pod.Spec.NodeName, phase(z), z.Name, z.Namespace)
	}
	data, err := c.Forwarder.Get(ctx, z, ZtunnelAdminPort, ZtunnelConfigDumpPath)
	if err != nil {
		var unreachable *UnreachableError
		if errors.As(err, &unreachable) {
			return nil, fmt.Errorf("ztunnel admin port %d of pod %s is unreachable: %v; check the ztunnel (kubectl logs %s -n %s)",
				ZtunnelAdminPort, zref, unreachable.Err, z.Name, z.Namespace)
		}
		return nil, err
	}
	origin := fmt.Sprintf("ztunnel %s on node %s, admin config_dump via port-forward to %d", zref, pod.Spec.NodeName, ZtunnelAdminPort)
	expect := Expect{Namespace: pod.Namespace, ServiceAccount: ServiceAccount(pod)}
	noCert := fmt.Errorf("the ztunnel %s on node %s has no certificate for pod %s (namespace %s, service account %s) yet: ztunnel fetches a workload's certificate from istiod on its first traffic; send a request to or from the pod and try again",
		zref, pod.Spec.NodeName, ref, expect.Namespace, expect.ServiceAccount)
	var top struct {
		Certificates *[]json.RawMessage `json:"certificates"`
	}
	if err := json.Unmarshal(data, &top); err == nil && top.Certificates != nil && len(*top.Certificates) == 0 {
		return nil, noCert
	}
	bundles, kind, err := ParseDump(data)
	if err != nil {
		return nil, fmt.Errorf("reading the config_dump of the ztunnel %s: %w", zref, err)
	}
	if kind != DumpZtunnel {
		return nil, fmt.Errorf("the pod %s labelled app=%s answered with an %s, not ztunnel's", zref, ZtunnelApp, kind)
	}
	var out []*Bundle
	for _, b := range bundles {
		if u, err := url.Parse(b.Identity); err == nil && u.Scheme == "spiffe" {
			if id := ParseSPIFFEID(u); id.Namespace == expect.Namespace && id.ServiceAccount == expect.ServiceAccount {
				b.Source, b.Origin = SourceZtunnel, origin
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		return nil, noCert
	}
	return out, nil
}
