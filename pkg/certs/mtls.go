package certs

import (
	"context"
	"fmt"
	"sort"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// DefaultRootNamespace is where Istio reads mesh-wide policies from.
const DefaultRootNamespace = "istio-system"

// MTLS is the effective PeerAuthentication mode for a workload.
type MTLS struct {
	Mode string `json:"mode"`
	// From names the policy that decided it, e.g.
	// "PeerAuthentication istio-system/default (mesh-wide)", or "default".
	From  string     `json:"from"`
	Ports []PortMTLS `json:"ports,omitempty"`
	// Notes say what could not be checked (a namespace whose
	// PeerAuthentications the user may not list).
	Notes []string `json:"notes,omitempty"`
}

// ModeUnknown is the mode when the policy that would decide it could not be
// read.
const ModeUnknown = "UNKNOWN"

// PortMTLS is a port-level override.
type PortMTLS struct {
	Port uint32 `json:"port"`
	Mode string `json:"mode"`
	From string `json:"from"`
}

// String is the one-line form used in tables.
func (m *MTLS) String() string {
	if m == nil {
		return "-"
	}
	s := m.Mode
	for _, p := range m.Ports {
		s += fmt.Sprintf(", port %d %s", p.Port, p.Mode)
	}
	return s
}

// EffectiveMTLS resolves the PeerAuthentication mode for pod the way istiod
// does: a workload policy (selector matches the pod) overrides the namespace
// policy (no selector), which overrides the mesh-wide policy (no selector, in
// the root namespace); UNSET inherits from the level above; among policies at
// one level the oldest wins. Port-level settings apply only from a workload
// policy. Without any policy the mode is PERMISSIVE.
func EffectiveMTLS(ctx context.Context, istio istioclient.Interface, rootNamespace string, pod *corev1.Pod) (*MTLS, error) {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	m := &MTLS{Mode: "PERMISSIVE", From: "default (no PeerAuthentication)"}
	// A namespace the user may not read (RBAC) is a note, as in status: the
	// levels that could be read still decide when they set a mode.
	forbidden := map[string]bool{}
	list := func(ns, what string) ([]*securityv1.PeerAuthentication, error) {
		l, err := istio.SecurityV1().PeerAuthentications(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsForbidden(err) {
			forbidden[ns] = true
			m.Notes = append(m.Notes, fmt.Sprintf("could not check the %s PeerAuthentication: listing peerauthentications in namespace %s is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n %s)", what, ns, ns))
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing PeerAuthentications in namespace %s: %w", ns, err)
		}
		out := append([]*securityv1.PeerAuthentication(nil), l.Items...)
		sortOldestFirst(out)
		return out, nil
	}
	scope := "mesh-wide"
	if pod.Namespace == rootNamespace {
		scope = "mesh-wide, namespace and workload"
	}
	root, err := list(rootNamespace, scope)
	if err != nil {
		return nil, err
	}
	local := root
	if pod.Namespace != rootNamespace {
		if local, err = list(pod.Namespace, "namespace and workload"); err != nil {
			return nil, err
		}
	}
	if len(forbidden) > 0 {
		// Unknown until a level that could be read sets a mode.
		m.Mode, m.From = ModeUnknown, "the PeerAuthentications that decide it could not be read (see the notes)"
	}
	apply := func(p *securityv1.PeerAuthentication, scope string) {
		if mode := p.Spec.GetMtls().GetMode(); mode != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			m.Mode = mode.String()
			m.From = fmt.Sprintf("PeerAuthentication %s/%s (%s)", p.Namespace, p.Name, scope)
		}
	}
	meshWide := first(root, func(p *securityv1.PeerAuthentication) bool { return p.Spec.GetSelector() == nil })
	if forbidden[pod.Namespace] {
		// The pod's own namespace decides over the mesh-wide policy.
		if meshWide != nil && meshWide.Spec.GetMtls().GetMode() != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			m.Notes = append(m.Notes, fmt.Sprintf("the mesh-wide PeerAuthentication %s/%s says %s; a namespace or workload policy may override it", meshWide.Namespace, meshWide.Name, meshWide.Spec.GetMtls().GetMode()))
		}
		return m, nil
	}
	if meshWide != nil {
		apply(meshWide, "mesh-wide")
	}
	if pod.Namespace != rootNamespace {
		if p := first(local, func(p *securityv1.PeerAuthentication) bool { return p.Spec.GetSelector() == nil }); p != nil {
			apply(p, "namespace")
		}
	}
	podLabels := labels.Set(pod.Labels)
	w := first(local, func(p *securityv1.PeerAuthentication) bool {
		sel := p.Spec.GetSelector()
		return sel != nil && labels.SelectorFromSet(sel.GetMatchLabels()).Matches(podLabels)
	})
	if w == nil {
		return m, nil
	}
	apply(w, "workload")
	ports := make([]uint32, 0, len(w.Spec.GetPortLevelMtls()))
	for port := range w.Spec.GetPortLevelMtls() {
		ports = append(ports, port)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	for _, port := range ports {
		mode := w.Spec.GetPortLevelMtls()[port].GetMode()
		if mode == securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			continue
		}
		m.Ports = append(m.Ports, PortMTLS{Port: port, Mode: mode.String(), From: fmt.Sprintf("PeerAuthentication %s/%s (port-level)", w.Namespace, w.Name)})
	}
	return m, nil
}

func first(ps []*securityv1.PeerAuthentication, ok func(*securityv1.PeerAuthentication) bool) *securityv1.PeerAuthentication {
	for _, p := range ps {
		if ok(p) {
			return p
		}
	}
	return nil
}

// sortOldestFirst orders as istiod breaks ties: creation time, then name.
func sortOldestFirst(ps []*securityv1.PeerAuthentication) {
	sort.SliceStable(ps, func(i, j int) bool {
		ti, tj := ps[i].CreationTimestamp, ps[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ps[i].Name < ps[j].Name
	})
}
