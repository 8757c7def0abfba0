package inject

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
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
		pas     []*securityv1.PeerAuthentication
		paErr   error
	)
	wg.Add(3)
	go func() { defer wg.Done(); inv, invErr = controlplane.Discover(ctx, kube) }()
	go func() { defer wg.Done(); snap, snapErr = Collect(ctx, kube, scope) }()
	go func() { defer wg.Done(); pas, paErr = listPeerAuthentications(ctx, istio, scope) }()
	wg.Wait()
	if snapErr != nil {
		return nil, snapErr
	}
	if invErr != nil {
		return nil, invErr
	}
	rules := NewRules(inv)
	rep := &Report{ControlPlanes: inv.ControlPlanes, InjectorFound: inv.HasInjector(), Unchecked: inv.Unchecked}
	if errors.Is(paErr, errPeerAuthenticationsForbidden) {
		rep.Unchecked = append(rep.Unchecked, uncheckedMTLS)
	}

	root := "istio-system"
	for _, cp := range inv.ControlPlanes {
		if cp.Namespace != "" {
			root = cp.Namespace
			break
		}
	}
	mtls := newMTLSIndex(pas, root)

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
			st.MTLS, st.WorkloadPolicies = mtls.effective(ns.Name)
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

// errPeerAuthenticationsForbidden: the user may not list PeerAuthentications
// where status needs them.
var errPeerAuthenticationsForbidden = errors.New("forbidden to list peerauthentications")

// uncheckedMTLS is the note for errPeerAuthenticationsForbidden.
var uncheckedMTLS = controlplane.Unchecked{What: "PeerAuthentications", Instead: "mTLS modes are shown as unknown",
	Permission: `"list" on peerauthentications.security.istio.io`}

// listPeerAuthentications lists in the scope plus the mesh root namespace.
// Missing CRDs or RBAC make mTLS unknown instead of failing the status.
func listPeerAuthentications(ctx context.Context, istio istioclient.Interface, scope Scope) ([]*securityv1.PeerAuthentication, error) {
	namespaces := []string{metav1.NamespaceAll}
	if !scope.AllNamespaces {
		// The root namespace holds the mesh-wide policy; it is listed with
		// the others rather than guessed.
		namespaces = append([]string{}, scope.Namespaces...)
		namespaces = append(namespaces, "istio-system")
	}
	var out []*securityv1.PeerAuthentication
	seen := map[string]bool{}
	for _, ns := range namespaces {
		if seen[ns] {
			continue
		}
		seen[ns] = true
		list, err := istio.SecurityV1().PeerAuthentications(ns).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("PeerAuthentication CRD not installed")
		case apierrors.IsForbidden(err):
			return nil, errPeerAuthenticationsForbidden
		case err != nil:
			return nil, fmt.Errorf("listing peerauthentications: %w", err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

type mtlsIndex struct {
	root      string
	nsWide    map[string]*securityv1.PeerAuthentication
	workloads map[string]int
}

func newMTLSIndex(pas []*securityv1.PeerAuthentication, root string) *mtlsIndex {
	m := &mtlsIndex{root: root, nsWide: map[string]*securityv1.PeerAuthentication{}, workloads: map[string]int{}}
	// Istio uses the oldest namespace-wide policy when there are several.
	sort.SliceStable(pas, func(i, j int) bool {
		a, b := pas[i].CreationTimestamp, pas[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return pas[i].Name < pas[j].Name
	})
	for _, pa := range pas {
		if len(pa.Spec.GetSelector().GetMatchLabels()) > 0 {
			m.workloads[pa.Namespace]++
			continue
		}
		if _, ok := m.nsWide[pa.Namespace]; !ok {
			m.nsWide[pa.Namespace] = pa
		}
	}
	return m
}

// effective is the namespace-wide mode: the namespace's policy, else the
// mesh-wide one in the root namespace, else Istio's default PERMISSIVE.
// UNSET inherits from the level above.
func (m *mtlsIndex) effective(ns string) (string, int) {
	if pa := m.nsWide[ns]; pa != nil && ns != m.root {
		if mode := pa.Spec.GetMtls().GetMode().String(); mode != "UNSET" {
			return fmt.Sprintf("%s (namespace policy %s)", mode, pa.Name), m.workloads[ns]
		}
	}
	if pa := m.nsWide[m.root]; pa != nil {
		if mode := pa.Spec.GetMtls().GetMode().String(); mode != "UNSET" {
			return fmt.Sprintf("%s (mesh policy %s/%s)", mode, m.root, pa.Name), m.workloads[ns]
		}
	}
	return "PERMISSIVE (default)", m.workloads[ns]
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
