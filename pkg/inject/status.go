package inject

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Report is what `status` shows.
type Report struct {
	ControlPlanes []controlplane.ControlPlane `json:"controlPlanes"`
	InjectorFound bool                        `json:"injectorFound"`
	Namespaces    []NamespaceStatus           `json:"namespaces"`
	// Ambient are the namespaces labelled ambient or with a waypoint, or
	// holding pods labelled ambient; AmbientPods are their pods.
	Ambient     []AmbientNamespace `json:"ambient,omitempty"`
	AmbientPods []AmbientPod       `json:"ambientPods,omitempty"`
	// Unchecked are the cluster-wide reads the user was refused.
	Unchecked []controlplane.Unchecked `json:"unchecked,omitempty"`
}

// NamespaceStatus is one namespace's data plane.
type NamespaceStatus struct {
	Name string `json:"name"`
	// Injection is sidecar, revision X, ambient or off, possibly with a
	// reason it does not take effect.
	Injection string   `json:"injection"`
	Conflicts []string `json:"conflicts,omitempty"`
	// Revision is the revision new pods get ("" when none).
	Revision             string `json:"revision,omitempty"`
	Workloads            int    `json:"workloads"`
	WorkloadsWithSidecar int    `json:"workloadsWithSidecar"`
	Pods                 int    `json:"pods"`
	PodsWithSidecar      int    `json:"podsWithSidecar"`
	PodsNeedingRestart   int    `json:"podsNeedingRestart"`
	// NeedRestart are the workloads (TYPE/NAME) needing a restart.
	NeedRestart []string `json:"needRestart,omitempty"`
	// SidecarVersions are the distinct istio-proxy versions running.
	SidecarVersions []string `json:"sidecarVersions,omitempty"`
	// VersionSkew says a sidecar runs another version than its control plane.
	VersionSkew bool `json:"versionSkew"`
	// MTLS is the effective namespace-wide PeerAuthentication mode and
	// where it comes from.
	MTLS string `json:"mtls"`
	// WorkloadPolicies counts PeerAuthentications with a workload selector.
	WorkloadPolicies int `json:"workloadPolicies,omitempty"`
}

// BuildStatus is BuildStatusWithGateways with waypoint Gateways unchecked.
func BuildStatus(ctx context.Context, kube kubernetes.Interface, istio istioclient.Interface, scope Scope) (*Report, error) {
	return BuildStatusWithGateways(ctx, kube, istio, nil, scope)
}

// BuildStatusWithGateways reads everything status needs with a fixed
// number of LIST calls (control plane, namespaces, pods, three workload
// kinds and PeerAuthentications), whatever the number of namespaces. When
// a namespace in scope is ambient it also lists Services and ztunnel pods,
// and Gateways through gateways when a label names a waypoint.
func BuildStatusWithGateways(ctx context.Context, kube kubernetes.Interface, istio istioclient.Interface, gateways dynamic.Interface, scope Scope) (*Report, error) {
	var (
		wg      sync.WaitGroup
		inv     controlplane.Inventory
		invErr  error
		snap    *Snapshot
		snapErr error
		pas     mesh.PeerAuthentications
		paErr   error
	)
	// The root namespace is meshConfig's once Discover has read it; the
	// fallback is listed meanwhile, and the other one after if they differ.
	fallback := cmp.Or(scope.RootNamespace, mesh.DefaultRootNamespace)
	wg.Add(3)
	go func() { defer wg.Done(); inv, invErr = controlplane.Discover(ctx, kube) }()
	go func() { defer wg.Done(); snap, snapErr = Collect(ctx, kube, scope) }()
	go func() {
		defer wg.Done()
		pas, paErr = mesh.ListPeerAuthentications(ctx, istio, peerAuthNamespaces(scope, fallback)...)
	}()
	wg.Wait()
	if snapErr != nil {
		return nil, snapErr
	}
	if invErr != nil {
		return nil, invErr
	}
	root := inv.RootNamespace(fallback)
	if paErr == nil && root != fallback && !scope.AllNamespaces {
		var more mesh.PeerAuthentications
		more, paErr = mesh.ListPeerAuthentications(ctx, istio, root)
		pas.Items, pas.Unreadable = append(pas.Items, more.Items...), append(pas.Unreadable, more.Unreadable...)
	}
	rules := NewRules(inv)
	rep := &Report{ControlPlanes: inv.ControlPlanes, InjectorFound: inv.HasInjector(), Unchecked: inv.Unchecked}
	if len(pas.Unreadable) > 0 {
		rep.Unchecked = append(rep.Unchecked, uncheckedMTLS)
	}
	if apierrors.IsNotFound(paErr) {
		// Missing CRDs make mTLS unknown instead of failing the status.
		paErr = errors.New("PeerAuthentication CRD not installed")
	}

	idx := map[string]int{}
	for _, ns := range snap.Namespaces {
		st := NamespaceStatus{Name: ns.Name}
		st.Injection, st.Conflicts = rules.Mode(ns.Name, ns.Labels)
		if d := rules.Evaluate(ns.Name, ns.Labels, metav1.ObjectMeta{}, nil); d.Inject {
			st.Revision = d.Revision
		}
		switch {
		case paErr != nil:
			st.MTLS = "unknown (" + paErr.Error() + ")"
		default:
			st.MTLS = namespaceMTLS(pas, root, ns.Name)
			st.WorkloadPolicies = mesh.WorkloadPolicies(pas.Items, root, ns.Name)
		}
		idx[ns.Name] = len(rep.Namespaces)
		rep.Namespaces = append(rep.Namespaces, st)
	}
	versions := make([]map[string]bool, len(rep.Namespaces))
	for _, w := range snap.Workloads {
		i, ok := idx[w.Namespace]
		if !ok {
			continue
		}
		if w.IsWaypoint() {
			// Shown with the ambient namespaces that use it.
			continue
		}
		st := &rep.Namespaces[i]
		a := rules.Assess(w, snap.Namespaces[i].Labels)
		if a.Pods == 0 {
			continue
		}
		st.Workloads++
		if a.WithSidecar == a.Pods {
			st.WorkloadsWithSidecar++
		}
		st.Pods += a.Pods
		st.PodsWithSidecar += a.WithSidecar
		if a.Restart {
			st.NeedRestart = append(st.NeedRestart, w.Ref())
			st.PodsNeedingRestart += a.Pods
		}
		if versions[i] == nil {
			versions[i] = map[string]bool{}
		}
		want := rules.version(a.Desired.Revision)
		for _, v := range a.Versions {
			versions[i][v] = true
			if want != "" && v != want {
				st.VersionSkew = true
			}
		}
	}
	for i := range rep.Namespaces {
		rep.Namespaces[i].SidecarVersions = slices.Sorted(maps.Keys(versions[i]))
	}
	if err := buildAmbient(ctx, kube, gateways, scope, snap, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// uncheckedMTLS is the note for PeerAuthentications the user may not list.
var uncheckedMTLS = controlplane.Unchecked{What: "PeerAuthentications", Instead: "mTLS modes are shown as unknown",
	Permission: `"list" on peerauthentications.security.istio.io`}

// peerAuthNamespaces are the namespaces whose PeerAuthentications status
// lists: the scope's and the root namespace, or all.
func peerAuthNamespaces(scope Scope, root string) []string {
	if scope.AllNamespaces {
		return []string{metav1.NamespaceAll}
	}
	return append(slices.Clone(scope.Namespaces), root)
}

// namespaceMTLS is the namespace-wide mode as status prints it, e.g.
// "STRICT (namespace policy default)", and the number of workload policies.
func namespaceMTLS(pas mesh.PeerAuthentications, root, ns string) string {
	m := mesh.ResolvePeerAuthentication(pas, root, ns, nil)
	switch m.Level {
	case mesh.LevelNamespace:
		return fmt.Sprintf("%s (namespace policy %s)", m.Mode, m.Policy.Name)
	case mesh.LevelMesh:
		return fmt.Sprintf("%s (mesh policy %s/%s)", m.Mode, m.Policy.Namespace, m.Policy.Name)
	case mesh.LevelDefault:
		return m.Mode + " (default)"
	}
	return "unknown (forbidden to list peerauthentications)"
}

// NeedRestartSummary is the one-line hint enable/disable print.
func NeedRestartSummary(ns string, ws []*Workload) string {
	if len(ws) == 0 {
		return fmt.Sprintf("no workloads in %s need a restart", ns)
	}
	var names []string
	for i, w := range ws {
		if i == 5 {
			names = append(names, fmt.Sprintf("… (%d more)", len(ws)-5))
			break
		}
		names = append(names, w.Ref())
	}
	verb := "workloads need"
	if len(ws) == 1 {
		verb = "workload needs"
	}
	return fmt.Sprintf("%d %s a restart: %s — run: kubectl mesh restart %s", len(ws), verb, strings.Join(names, ", "), ns)
}
