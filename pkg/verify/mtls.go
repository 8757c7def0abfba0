package verify

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// listPeerAuthentications lists the scope's namespaces and the root
// namespace (one LIST each, or one for all). A refused list leaves the
// modes it decides UNKNOWN (mesh.ResolvePeerAuthentication); a missing CRD
// or another error is a note and every mode is UNKNOWN.
func listPeerAuthentications(ctx context.Context, c Clients, scope inject.Scope, root string) (mesh.PeerAuthentications, string) {
	if c.Istio == nil {
		return mesh.PeerAuthentications{Unreadable: []string{metav1.NamespaceAll}}, "no Istio client: mTLS modes are unknown"
	}
	namespaces := []string{metav1.NamespaceAll}
	if !scope.AllNamespaces {
		namespaces = append(append([]string{}, scope.Namespaces...), root)
	}
	pas, err := mesh.ListPeerAuthentications(ctx, c.Istio, namespaces...)
	if err != nil {
		return mesh.PeerAuthentications{Unreadable: []string{metav1.NamespaceAll}}, "mTLS modes are unknown: " + err.Error()
	}
	if len(pas.Unreadable) > 0 {
		ns := pas.Unreadable[0]
		return pas, fmt.Sprintf("listing peerauthentications in namespace %s is forbidden, so the modes it decides are unknown (kubectl auth can-i list peerauthentications.security.istio.io -n %s)", ns, ns)
	}
	return pas, ""
}

type mtlsMode struct {
	mode, from string
	ports      []string
}

// resolveMTLS is the workload's effective mode, as mesh resolves it, in
// the short form the table shows.
func resolveMTLS(pas mesh.PeerAuthentications, root, ns string, podLabels map[string]string) mtlsMode {
	m := mesh.ResolvePeerAuthentication(pas, root, ns, podLabels)
	out := mtlsMode{mode: m.Mode, from: "default"}
	switch {
	case m.Policy != nil:
		out.from = fmt.Sprintf("%s/%s (%s)", m.Policy.Namespace, m.Policy.Name, m.Level)
	case len(m.Unread) > 0:
		out.from = "not readable"
	}
	for _, p := range m.Ports {
		out.ports = append(out.ports, fmt.Sprintf("%d=%s", p.Port, p.Mode))
	}
	return out
}

// modeForPort is the workload's mode on port: a port-level mode, else the
// workload's.
func (w WorkloadRow) modeForPort(port int) string {
	for _, p := range w.PortMTLS {
		var n int
		var mode string
		if _, err := fmt.Sscanf(p, "%d=%s", &n, &mode); err == nil && n == port {
			return mode
		}
	}
	return w.MTLS
}
