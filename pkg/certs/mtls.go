package certs

import (
	"context"
	"fmt"

	securityv1beta1 "istio.io/api/security/v1beta1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// DefaultRootNamespace is where Istio reads mesh-wide policies from.
const DefaultRootNamespace = mesh.DefaultRootNamespace

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
const ModeUnknown = mesh.ModeUnknown

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

// EffectiveMTLS resolves the PeerAuthentication mode for pod as istiod does
// (mesh.ResolvePeerAuthentication) from the policies in the pod's namespace
// and the root namespace. A namespace whose PeerAuthentications the user
// may not list is a note, as in status: the levels that could be read
// still decide when they set a mode.
func EffectiveMTLS(ctx context.Context, istio istioclient.Interface, rootNamespace string, pod *corev1.Pod) (*MTLS, error) {
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	pas, err := mesh.ListPeerAuthentications(ctx, istio, rootNamespace, pod.Namespace)
	if err != nil {
		return nil, err
	}
	r := mesh.ResolvePeerAuthentication(pas, rootNamespace, pod.Namespace, pod.Labels)
	m := &MTLS{Mode: r.Mode, From: r.Describe()}
	for _, ns := range r.Unread {
		what := "namespace and workload"
		switch {
		case ns == rootNamespace && ns == pod.Namespace:
			what = "mesh-wide, namespace and workload"
		case ns == rootNamespace:
			what = "mesh-wide"
		}
		m.Notes = append(m.Notes, fmt.Sprintf("could not check the %s PeerAuthentication: listing peerauthentications in namespace %s is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n %s)", what, ns, ns))
	}
	if r.Mode == ModeUnknown {
		m.From = "the PeerAuthentications that decide it could not be read (see the notes)"
		if mw := r.MeshWide; mw != nil && mw.Spec.GetMtls().GetMode() != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
			m.Notes = append(m.Notes, fmt.Sprintf("the mesh-wide PeerAuthentication %s/%s says %s; a namespace or workload policy may override it", mw.Namespace, mw.Name, mw.Spec.GetMtls().GetMode()))
		}
	}
	for _, p := range r.Ports {
		m.Ports = append(m.Ports, PortMTLS{Port: p.Port, Mode: p.Mode, From: fmt.Sprintf("PeerAuthentication %s/%s (port-level)", r.Workload.Namespace, r.Workload.Name)})
	}
	return m, nil
}
