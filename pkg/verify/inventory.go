package verify

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Mesh modes of a workload.
const (
	MeshSidecar = "sidecar"
	MeshAmbient = "ambient"
	MeshGateway = "gateway"
	MeshPartial = "partial"
	MeshNone    = "none"
)

// systemNamespaces hold the cluster's own components, which are not
// expected in the mesh: an unmeshed workload there is no failure.
var systemNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true}

// WorkloadRow is one workload of the inventory.
type WorkloadRow struct {
	Namespace   string   `json:"namespace"`
	Kind        string   `json:"kind"`
	Workload    string   `json:"workload"`
	Pods        int      `json:"pods"`
	WithSidecar int      `json:"podsWithSidecar"`
	Mesh        string   `json:"mesh"`
	Versions    []string `json:"sidecarVersions,omitempty"`
	WantVersion string   `json:"controlPlaneVersion,omitempty"`
	Skew        bool     `json:"skew"`
	MTLS        string   `json:"mtls"`
	MTLSFrom    string   `json:"mtlsFrom"`
	// PortMTLS are port-level modes (PORT=MODE).
	PortMTLS []string `json:"portMTLS,omitempty"`
	// System: a cluster or control plane component, not expected in the mesh.
	System         bool              `json:"system,omitempty"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	MatchLabels    map[string]string `json:"-"`
}

// Name is NAMESPACE/WORKLOAD.
func (w WorkloadRow) Name() string { return w.Namespace + "/" + w.Workload }

// Meshed says whether the workload's traffic goes through Istio.
func (w WorkloadRow) Meshed() bool {
	return w.Mesh == MeshSidecar || w.Mesh == MeshAmbient || w.Mesh == MeshGateway
}

// workload is a row with its pods.
type workload struct {
	row  WorkloadRow
	pods []*corev1.Pod
}

// inventory is what the API says, read with a fixed number of LISTs.
type inventory struct {
	workloads    []*workload
	byPodIP      map[netip.Addr]*workload
	services     []corev1.Service
	byClusterIP  map[netip.Addr]*corev1.Service
	nodeIPs      map[netip.Addr]string
	controlPlane string
	notes        []string
	// outside names pods outside the scope by IP, read once on demand.
	outside func() map[netip.Addr]outsidePod
}

// outsidePod is a pod outside the scope, named NAMESPACE/WORKLOAD.
type outsidePod struct {
	name   string
	meshed bool
}

func collect(ctx context.Context, c Clients, cfg Config) (*inventory, error) {
	scope := inject.Scope{AllNamespaces: cfg.Scope.AllNamespaces, Namespaces: cfg.Scope.Namespaces}
	var (
		wg                    sync.WaitGroup
		cp                    controlplane.Inventory
		snap                  *inject.Snapshot
		svcs                  []corev1.Service
		pas                   mesh.PeerAuthentications
		cpErr, snapErr, svErr error
		paNote                string
	)
	wg.Add(4)
	go func() { defer wg.Done(); cp, cpErr = controlplane.Discover(ctx, c.Kube) }()
	go func() { defer wg.Done(); snap, snapErr = inject.Collect(ctx, c.Kube, scope) }()
	go func() { defer wg.Done(); svcs, svErr = listServices(ctx, c, scope) }()
	go func() { defer wg.Done(); pas, paNote = listPeerAuthentications(ctx, c, scope, cfg.RootNamespace) }()
	wg.Wait()
	if snapErr != nil {
		return nil, snapErr
	}
	if cpErr != nil {
		return nil, cpErr
	}
	inv := &inventory{byPodIP: map[netip.Addr]*workload{}, byClusterIP: map[netip.Addr]*corev1.Service{}, nodeIPs: map[netip.Addr]string{}}
	for _, u := range cp.Unchecked {
		inv.notes = append(inv.notes, fmt.Sprintf("%s not read (needs %s): %s", u.What, u.Permission, u.Instead))
	}
	if svErr != nil {
		inv.notes = append(inv.notes, svErr.Error()+"; Service addresses show as external and idle Services are not listed")
	}
	if paNote != "" {
		inv.notes = append(inv.notes, paNote)
	}
	var versions []string
	for _, p := range cp.ControlPlanes {
		if p.Version != "" {
			versions = append(versions, p.Version)
		}
	}
	inv.controlPlane = strings.Join(versions, ", ")
	rules := inject.NewRules(cp)
	for _, w := range snap.Workloads {
		pods := selectPods(w.Pods, cfg.Scope.Selector)
		if len(pods) == 0 {
			continue
		}
		ns := snap.Namespace(w.Namespace)
		var nsLabels map[string]string
		if ns != nil {
			nsLabels = ns.Labels
		}
		a := rules.Assess(w, nsLabels)
		wl := &workload{pods: pods, row: WorkloadRow{Namespace: w.Namespace, Kind: w.Kind, Workload: w.Name, Pods: len(pods),
			Versions: a.Versions, WantVersion: a.WantVersion, ServiceAccount: pods[0].Spec.ServiceAccountName, MatchLabels: matchLabels(w)}}
		wl.row.Mesh, wl.row.WithSidecar = meshMode(w, pods, nsLabels)
		for _, v := range a.Versions {
			wl.row.Skew = wl.row.Skew || (a.WantVersion != "" && v != a.WantVersion)
		}
		wl.row.System = systemNamespaces[w.Namespace] || (w.Namespace == cfg.RootNamespace && wl.row.Mesh == MeshNone)
		m := resolveMTLS(pas, cfg.RootNamespace, w.Namespace, pods[0].Labels)
		wl.row.MTLS, wl.row.MTLSFrom, wl.row.PortMTLS = m.mode, m.from, m.ports
		inv.workloads = append(inv.workloads, wl)
		for _, p := range pods {
			for _, a := range podAddrs(p) {
				inv.byPodIP[a] = wl
			}
			if a, err := netip.ParseAddr(p.Status.HostIP); err == nil {
				inv.nodeIPs[a] = p.Spec.NodeName
			}
		}
	}
	inv.services = svcs
	for i := range svcs {
		for _, ip := range svcs[i].Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				inv.byClusterIP[a] = &svcs[i]
			}
		}
	}
	inv.outside = sync.OnceValue(func() map[netip.Addr]outsidePod { return outsidePods(ctx, c, inv) })
	return inv, nil
}

func selectPods(pods []*corev1.Pod, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if sel == nil || sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// meshMode is sidecar when every pod has one, ambient when ztunnel
// captures every pod, gateway for a gateway's proxy, partial when only some
// pods have a sidecar, else none.
func meshMode(w *inject.Workload, pods []*corev1.Pod, nsLabels map[string]string) (string, int) {
	if w.IsGateway() {
		return MeshGateway, len(pods)
	}
	sidecars, ambient := 0, 0
	for _, p := range pods {
		switch {
		case mesh.HasSidecar(p):
			sidecars++
		case mesh.AmbientOf(p, nsLabels).Mode == mesh.AmbientCaptured:
			ambient++
		}
	}
	switch {
	case sidecars == len(pods):
		return MeshSidecar, sidecars
	case ambient == len(pods):
		return MeshAmbient, 0
	case sidecars > 0:
		return MeshPartial, sidecars
	}
	return MeshNone, 0
}

// matchLabels is what a workload PeerAuthentication selects the workload
// by: the controller's selector labels, or a bare pod's app label.
func matchLabels(w *inject.Workload) map[string]string {
	var sel *metav1.LabelSelector
	switch o := w.Object.(type) {
	case *appsv1.Deployment:
		sel = o.Spec.Selector
	case *appsv1.StatefulSet:
		sel = o.Spec.Selector
	case *appsv1.DaemonSet:
		sel = o.Spec.Selector
	}
	if sel != nil && len(sel.MatchLabels) > 0 {
		return sel.MatchLabels
	}
	if app := w.Labels["app"]; app != "" {
		return map[string]string{"app": app}
	}
	return nil
}

func podAddrs(p *corev1.Pod) []netip.Addr {
	if p.Spec.HostNetwork {
		return nil
	}
	var out []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func listServices(ctx context.Context, c Clients, scope inject.Scope) ([]corev1.Service, error) {
	namespaces := scope.Namespaces
	if scope.AllNamespaces {
		namespaces = []string{metav1.NamespaceAll}
	}
	var out []corev1.Service
	for _, ns := range namespaces {
		l, err := c.Kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing services%s: %w", inNamespace(ns), err)
		}
		out = append(out, l.Items...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// outsidePods names the pods outside the scope by IP (one LIST of all
// pods), so a client in another namespace is named, not "external". A
// refused list leaves them external.
func outsidePods(ctx context.Context, c Clients, inv *inventory) map[netip.Addr]outsidePod {
	out := map[netip.Addr]outsidePod{}
	l, err := c.Kube.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		inv.notes = append(inv.notes, "pods outside the scope could not be listed, so their addresses show as external: "+err.Error())
		return out
	}
	for i := range l.Items {
		p := &l.Items[i]
		if !mesh.PodLive(p) {
			continue
		}
		o := outsidePod{name: p.Namespace + "/" + podWorkloadName(p), meshed: mesh.HasSidecar(p)}
		for _, a := range podAddrs(p) {
			out[a] = o
		}
	}
	return out
}

// podWorkloadName is the pod's Deployment (from its ReplicaSet's name and
// pod-template-hash), other controller, or the pod itself.
func podWorkloadName(p *corev1.Pod) string {
	owner := metav1.GetControllerOf(p)
	if owner == nil {
		return p.Name
	}
	if hash := p.Labels["pod-template-hash"]; owner.Kind == "ReplicaSet" && hash != "" {
		return strings.TrimSuffix(owner.Name, "-"+hash)
	}
	return owner.Name
}

// rows are the workloads in namespace, then name order.
func (inv *inventory) rows() []WorkloadRow {
	out := make([]WorkloadRow, len(inv.workloads))
	for i, w := range inv.workloads {
		out[i] = w.row
	}
	return out
}

func inNamespace(ns string) string {
	if ns == metav1.NamespaceAll {
		return " in all namespaces"
	}
	return " in namespace " + ns
}
