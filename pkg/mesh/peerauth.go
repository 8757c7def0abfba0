package mesh

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"
)

// DefaultRootNamespace is Istio's default meshConfig.rootNamespace, where
// mesh-wide policies live.
const DefaultRootNamespace = "istio-system"

// The mTLS modes a PeerAuthentication resolves to. ModeUnknown is ours: the
// policy that would decide could not be read.
const (
	ModeStrict     = "STRICT"
	ModePermissive = "PERMISSIVE"
	ModeDisable    = "DISABLE"
	ModeUnknown    = "UNKNOWN"
)

// PeerAuthLevel is where the policy that decided a mode sits.
type PeerAuthLevel string

// The levels, from the bottom up.
const (
	LevelDefault   PeerAuthLevel = "default"
	LevelMesh      PeerAuthLevel = "mesh-wide"
	LevelNamespace PeerAuthLevel = "namespace"
	LevelWorkload  PeerAuthLevel = "workload"
)

// PeerAuthentications are the policies listed for a resolution, and the
// namespaces whose policies could not be listed.
type PeerAuthentications struct {
	Items []*securityv1.PeerAuthentication
	// Unreadable are the namespaces where listing was refused (RBAC);
	// metav1.NamespaceAll when the cluster-wide list was refused.
	Unreadable []string
}

func (p PeerAuthentications) unreadable(ns string) bool {
	return slices.Contains(p.Unreadable, ns) || slices.Contains(p.Unreadable, metav1.NamespaceAll)
}

// PortMTLS is a port-level mode of the workload policy.
type PortMTLS struct {
	Port uint32 `json:"port"`
	Mode string `json:"mode"`
}

// MTLS is the effective PeerAuthentication of a workload or namespace.
type MTLS struct {
	Mode string
	// Level and Policy say what decided Mode; Policy is nil at LevelDefault
	// and when Mode is ModeUnknown.
	Level  PeerAuthLevel
	Policy *securityv1.PeerAuthentication
	// MeshWide, Namespace and Workload are the policies Istio picked at
	// each level (nil when there is none), whether or not they set a mode.
	MeshWide, Namespace, Workload *securityv1.PeerAuthentication
	// Ports are the workload policy's port-level modes, by port; an UNSET
	// port inherits the workload's mode.
	Ports []PortMTLS
	// Unread are the namespaces whose policies could decide but could not
	// be read (root namespace first).
	Unread []string
}

// ResolveMTLS is ResolvePeerAuthentication over policies that were all
// readable.
func ResolveMTLS(pas []*securityv1.PeerAuthentication, rootNamespace, namespace string, podLabels map[string]string) MTLS {
	return ResolvePeerAuthentication(PeerAuthentications{Items: pas}, rootNamespace, namespace, podLabels)
}

// ResolvePeerAuthentication resolves the mTLS mode of a pod with podLabels
// in namespace the way istiod composes PeerAuthentications:
//
//   - a policy whose selector has match labels is workload-level; it applies
//     when the labels are a subset of the pod's, and only outside the root
//     namespace (istiod ignores selectors there);
//   - a policy without a selector, or with an empty one (`selector: {}`), is
//     namespace-wide; in the root namespace it is the mesh-wide policy;
//   - at each level the oldest policy wins (ties by name);
//   - the workload level overrides the namespace, which overrides the mesh;
//     UNSET inherits from the level above; without any, PERMISSIVE;
//   - port-level modes come only from the workload policy; an UNSET port
//     inherits the workload's resolved mode.
//
// podLabels nil resolves the namespace's own mode (no workload policy
// matches). rootNamespace "" is DefaultRootNamespace. A namespace in
// p.Unreadable that could decide makes the mode ModeUnknown unless a level
// below it that was read sets a mode.
func ResolvePeerAuthentication(p PeerAuthentications, rootNamespace, namespace string, podLabels map[string]string) MTLS {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	m := MTLS{Mode: ModePermissive, Level: LevelDefault}
	pod := labels.Set(podLabels)
	for _, pa := range p.Items {
		if pa.Namespace != namespace && pa.Namespace != rootNamespace {
			continue
		}
		if !IsWorkloadPolicy(pa) {
			if pa.Namespace == rootNamespace {
				m.MeshWide = older(m.MeshWide, pa)
			} else {
				m.Namespace = older(m.Namespace, pa)
			}
			continue
		}
		if pa.Namespace == rootNamespace {
			continue
		}
		if labels.SelectorFromSet(pa.Spec.GetSelector().GetMatchLabels()).Matches(pod) {
			m.Workload = older(m.Workload, pa)
		}
	}
	if p.unreadable(rootNamespace) {
		m.Unread = append(m.Unread, rootNamespace)
	}
	if namespace != rootNamespace && p.unreadable(namespace) {
		m.Unread = append(m.Unread, namespace)
	}
	if len(m.Unread) > 0 {
		m.Mode, m.Level = ModeUnknown, ""
	}
	if slices.Contains(m.Unread, namespace) {
		// The namespace and workload levels decide over the mesh: with them
		// unread nothing is known.
		return m
	}
	set := func(pa *securityv1.PeerAuthentication, level PeerAuthLevel) {
		if mode := pa.Spec.GetMtls().GetMode(); mode != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			m.Mode, m.Level, m.Policy = mode.String(), level, pa
		}
	}
	if m.MeshWide != nil {
		set(m.MeshWide, LevelMesh)
	}
	if m.Namespace != nil {
		set(m.Namespace, LevelNamespace)
	}
	if m.Workload == nil {
		return m
	}
	set(m.Workload, LevelWorkload)
	ports := m.Workload.Spec.GetPortLevelMtls()
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		mode := m.Mode
		if pm := ports[port].GetMode(); pm != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			mode = pm.String()
		}
		m.Ports = append(m.Ports, PortMTLS{Port: port, Mode: mode})
	}
	return m
}

// IsWorkloadPolicy says whether a PeerAuthentication is workload-level: its
// selector has match labels. An empty selector is namespace-wide.
func IsWorkloadPolicy(pa *securityv1.PeerAuthentication) bool {
	return len(pa.Spec.GetSelector().GetMatchLabels()) > 0
}

// WorkloadPolicies counts the workload-level policies istiod applies in
// namespace (none in the root namespace: it ignores selectors there).
func WorkloadPolicies(pas []*securityv1.PeerAuthentication, rootNamespace, namespace string) int {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	n := 0
	for _, pa := range pas {
		if pa.Namespace == namespace && namespace != rootNamespace && IsWorkloadPolicy(pa) {
			n++
		}
	}
	return n
}

// older is the policy istiod prefers of two at one level: the oldest, then
// the first by name.
func older(cur, pa *securityv1.PeerAuthentication) *securityv1.PeerAuthentication {
	if cur == nil {
		return pa
	}
	a, b := pa.CreationTimestamp, cur.CreationTimestamp
	if a.Before(&b) || (a.Equal(&b) && pa.Name < cur.Name) {
		return pa
	}
	return cur
}

// ListPeerAuthentications lists PeerAuthentications in each namespace
// (metav1.NamespaceAll, or none given, lists cluster-wide, page by page). A
// refused list (RBAC) is recorded in Unreadable and the rest carries on; any
// other error, a missing CRD included (apierrors.IsNotFound), fails.
func ListPeerAuthentications(ctx context.Context, istio istioclient.Interface, namespaces ...string) (PeerAuthentications, error) {
	var out PeerAuthentications
	if len(namespaces) == 0 || slices.Contains(namespaces, metav1.NamespaceAll) {
		namespaces = []string{metav1.NamespaceAll}
	}
	seen := map[string]bool{}
	for _, ns := range namespaces {
		if seen[ns] {
			continue
		}
		seen[ns] = true
		list := pager.New(pager.SimplePageFunc(func(opts metav1.ListOptions) (runtime.Object, error) {
			return istio.SecurityV1().PeerAuthentications(ns).List(ctx, opts)
		}))
		err := list.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
			if pa, ok := obj.(*securityv1.PeerAuthentication); ok {
				out.Items = append(out.Items, pa)
			}
			return nil
		})
		switch {
		case apierrors.IsForbidden(err):
			out.Unreadable = append(out.Unreadable, ns)
		case err != nil:
			return out, fmt.Errorf("listing peerauthentications%s: %w", inNamespace(ns), err)
		}
	}
	return out, nil
}

func inNamespace(ns string) string {
	if ns == metav1.NamespaceAll {
		return " in all namespaces"
	}
	return " in namespace " + ns
}

// Describe names a resolution's source in one line, e.g.
// "PeerAuthentication istio-system/default (mesh-wide)".
func (m MTLS) Describe() string {
	switch {
	case m.Policy != nil:
		return fmt.Sprintf("PeerAuthentication %s/%s (%s)", m.Policy.Namespace, m.Policy.Name, m.Level)
	case len(m.Unread) > 0:
		return "the PeerAuthentications in namespace " + strings.Join(m.Unread, " and ") + " could not be read"
	}
	return "default (no PeerAuthentication)"
}
