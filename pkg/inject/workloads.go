package inject

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Kinds of workloads, as kubectl names them in TYPE/NAME.
const (
	KindDeployment  = "deployment"
	KindStatefulSet = "statefulset"
	KindDaemonSet   = "daemonset"
	KindPod         = "pod" // a bare pod, with no controller
)

// Workload is a controller (or bare pod) with its current pods.
type Workload struct {
	Kind      string
	Namespace string
	Name      string
	// Labels are the object's own labels (what -l selects).
	Labels   map[string]string
	Template metav1.ObjectMeta
	Spec     *corev1.PodSpec
	Selector labels.Selector
	Paused   bool
	// Replicas is how many pods the controller wants.
	Replicas int32
	// Pods are the live pods (not terminating, not finished).
	Pods []*corev1.Pod
	// Object is the typed object (*appsv1.Deployment, …, *corev1.Pod).
	Object runtime.Object
}

// Ref is TYPE/NAME.
func (w *Workload) Ref() string { return w.Kind + "/" + w.Name }

// Snapshot is the namespaces and workloads of a scope.
type Snapshot struct {
	Namespaces []corev1.Namespace
	Workloads  []*Workload
}

// Namespace returns the snapshot's namespace by name.
func (s *Snapshot) Namespace(name string) *corev1.Namespace {
	for i := range s.Namespaces {
		if s.Namespaces[i].Name == name {
			return &s.Namespaces[i]
		}
	}
	return nil
}

// Scope is which namespaces to read.
type Scope struct {
	AllNamespaces bool
	Namespaces    []string
	// RootNamespace is Istio's root namespace when no meshConfig says
	// (--root-namespace); "" is mesh.DefaultRootNamespace.
	RootNamespace string
}

// NamespaceNotFoundError is a namespace argument that does not exist.
type NamespaceNotFoundError struct{ Name string }

func (e *NamespaceNotFoundError) Error() string {
	return fmt.Sprintf("namespace %q not found; check the name with: kubectl get namespaces", e.Name)
}

// Collect reads the scope with a fixed number of LIST calls, each paged
// (mesh.List): one per kind for all namespaces, or one per kind and namespace when namespaces are
// named. The calls run concurrently.
func Collect(ctx context.Context, kube kubernetes.Interface, scope Scope) (*Snapshot, error) {
	snap := &Snapshot{}
	if scope.AllNamespaces {
		list, err := mesh.List(ctx, metav1.ListOptions{}, kube.CoreV1().Namespaces().List)
		if err != nil {
			return nil, mesh.Forbidden("list", "namespaces", "", err)
		}
		snap.Namespaces = list.Items
		if err := collectWorkloads(ctx, kube, metav1.NamespaceAll, snap); err != nil {
			return nil, err
		}
	} else {
		for _, n := range scope.Namespaces {
			ns, err := kube.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil, &NamespaceNotFoundError{Name: n}
			}
			if err != nil {
				return nil, mesh.Forbidden("get", "namespaces", " ("+n+")", err)
			}
			snap.Namespaces = append(snap.Namespaces, *ns)
		}
		for _, n := range scope.Namespaces {
			if err := collectWorkloads(ctx, kube, n, snap); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(snap.Namespaces, func(i, j int) bool { return snap.Namespaces[i].Name < snap.Namespaces[j].Name })
	sort.SliceStable(snap.Workloads, func(i, j int) bool {
		a, b := snap.Workloads[i], snap.Workloads[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Kind != b.Kind {
			return kindOrder(a.Kind) < kindOrder(b.Kind)
		}
		return a.Name < b.Name
	})
	return snap, nil
}

func kindOrder(k string) int {
	switch k {
	case KindDeployment:
		return 0
	case KindStatefulSet:
		return 1
	case KindDaemonSet:
		return 2
	}
	return 3
}

func collectWorkloads(ctx context.Context, kube kubernetes.Interface, ns string, snap *Snapshot) error {
	where := ""
	if ns != "" {
		where = " in namespace " + ns
	}
	var (
		wg    sync.WaitGroup
		pods  *corev1.PodList
		deps  *appsv1.DeploymentList
		stss  *appsv1.StatefulSetList
		dss   *appsv1.DaemonSetList
		errs  [4]error
		apps  = kube.AppsV1()
		lopts = metav1.ListOptions{}
	)
	wg.Add(4)
	go func() { defer wg.Done(); pods, errs[0] = mesh.List(ctx, lopts, kube.CoreV1().Pods(ns).List) }()
	go func() { defer wg.Done(); deps, errs[1] = mesh.List(ctx, lopts, apps.Deployments(ns).List) }()
	go func() { defer wg.Done(); stss, errs[2] = mesh.List(ctx, lopts, apps.StatefulSets(ns).List) }()
	go func() { defer wg.Done(); dss, errs[3] = mesh.List(ctx, lopts, apps.DaemonSets(ns).List) }()
	wg.Wait()
	for i, res := range []string{"pods", "deployments", "statefulsets", "daemonsets"} {
		if errs[i] != nil {
			return mesh.Forbidden("list", res, where, errs[i])
		}
	}

	type key struct{ ns, kind, name string }
	byKey := map[key]*Workload{}
	add := func(w *Workload) {
		byKey[key{w.Namespace, w.Kind, w.Name}] = w
		snap.Workloads = append(snap.Workloads, w)
	}
	for i := range deps.Items {
		d := &deps.Items[i]
		sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		add(&Workload{Kind: KindDeployment, Namespace: d.Namespace, Name: d.Name, Labels: d.Labels,
			Template: d.Spec.Template.ObjectMeta, Spec: &d.Spec.Template.Spec, Selector: sel, Paused: d.Spec.Paused, Replicas: replicas(d.Spec.Replicas), Object: d})
	}
	for i := range stss.Items {
		s := &stss.Items[i]
		sel, _ := metav1.LabelSelectorAsSelector(s.Spec.Selector)
		add(&Workload{Kind: KindStatefulSet, Namespace: s.Namespace, Name: s.Name, Labels: s.Labels,
			Template: s.Spec.Template.ObjectMeta, Spec: &s.Spec.Template.Spec, Selector: sel, Replicas: replicas(s.Spec.Replicas), Object: s})
	}
	for i := range dss.Items {
		d := &dss.Items[i]
		sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		add(&Workload{Kind: KindDaemonSet, Namespace: d.Namespace, Name: d.Name, Labels: d.Labels,
			Template: d.Spec.Template.ObjectMeta, Spec: &d.Spec.Template.Spec, Selector: sel, Replicas: d.Status.DesiredNumberScheduled, Object: d})
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !mesh.PodLive(p) {
			continue
		}
		owner := metav1.GetControllerOf(p)
		if owner == nil {
			add(&Workload{Kind: KindPod, Namespace: p.Namespace, Name: p.Name, Labels: p.Labels,
				Template: barePodMeta(p), Spec: &p.Spec, Object: p, Pods: []*corev1.Pod{p}})
			continue
		}
		var k key
		switch owner.Kind {
		case "ReplicaSet":
			// A Deployment's ReplicaSet is named NAME-HASH, HASH being the
			// pod-template-hash label; this spares listing ReplicaSets.
			hash := p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
			if hash == "" || !strings.HasSuffix(owner.Name, "-"+hash) {
				continue
			}
			k = key{p.Namespace, KindDeployment, strings.TrimSuffix(owner.Name, "-"+hash)}
		case "StatefulSet":
			k = key{p.Namespace, KindStatefulSet, owner.Name}
		case "DaemonSet":
			k = key{p.Namespace, KindDaemonSet, owner.Name}
		default:
			continue // Jobs and custom controllers are not restarted here
		}
		if w := byKey[k]; w != nil {
			w.Pods = append(w.Pods, p)
		}
	}
	return nil
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

// injectedLabels are labels the injector adds to pods; a bare pod is judged
// without them, as it was before injection.
var injectedLabels = []string{"security.istio.io/tlsMode", "service.istio.io/canonical-name", "service.istio.io/canonical-revision"}

func barePodMeta(p *corev1.Pod) metav1.ObjectMeta {
	m := *p.ObjectMeta.DeepCopy()
	for _, k := range injectedLabels {
		delete(m.Labels, k)
	}
	if mesh.HasSidecar(p) {
		// The injector labels injected pods with its revision; that label
		// was not the user's choice.
		delete(m.Labels, LabelRev)
	}
	return m
}

// Assessment is how a workload's pods compare with what Istio would do now.
type Assessment struct {
	Desired Decision
	// Pods is the number of live pods; WithSidecar how many have one.
	Pods, WithSidecar int
	Restart           bool
	// Why says why a restart is needed ("" when it is not).
	Why string
	// Versions are the distinct sidecar versions running.
	Versions []string
	// WantVersion is the sidecar version new pods should get: the control
	// plane's, unless the template pins a proxy image ("" when unknown).
	WantVersion string
}

// OnDelete says whether the workload's controller replaces pods only when
// they are deleted (StatefulSet or DaemonSet updateStrategy OnDelete): a
// restart patch then changes no pod, and no rollout can be awaited.
func (w *Workload) OnDelete() bool {
	switch o := w.Object.(type) {
	case *appsv1.StatefulSet:
		return o.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType
	case *appsv1.DaemonSet:
		return o.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType
	}
	return false
}

// IsGateway says whether the workload is itself an Istio proxy (an
// ingress/egress gateway): its own spec declares istio-proxy, or it asks
// for the injector's gateway template. Its proxy is not a sidecar to add or
// remove, so it never needs a restart for injection.
func (w *Workload) IsGateway() bool {
	if strings.Contains(w.Template.Annotations["inject.istio.io/templates"], "gateway") {
		return true
	}
	if w.Kind == KindPod {
		_, injected := w.Template.Annotations[AnnotationSidecarStatus]
		return mesh.ProxyOf(w.Spec) != nil && !injected
	}
	for _, c := range w.Spec.Containers {
		if c.Name == ProxyContainer {
			return true
		}
	}
	return false
}

// IsWaypoint says whether the workload is a waypoint's proxy, which
// istiod's gateway controller creates and owns: ambient mesh
// infrastructure, not a workload with a sidecar.
func (w *Workload) IsWaypoint() bool {
	return w.Template.Labels[mesh.LabelGatewayClass] == mesh.WaypointClass
}

// Assess compares a workload's pods with what a new pod would get.
func (r *Rules) Assess(w *Workload, nsLabels map[string]string) Assessment {
	a := Assessment{Desired: r.Evaluate(w.Namespace, nsLabels, w.Template, w.Spec), Pods: len(w.Pods)}
	if w.IsGateway() {
		a.Desired = Decision{Inject: true, Reason: "gateway: the pod is the proxy"}
		a.WithSidecar = a.Pods
		for _, p := range w.Pods {
			if v := SidecarOf(p).Version; v != "" && !slices.Contains(a.Versions, v) {
				a.Versions = append(a.Versions, v)
			}
		}
		sort.Strings(a.Versions)
		return a
	}
	wantVersion := r.version(a.Desired.Revision)
	if img, ok := w.Template.Annotations[AnnotationProxyImage]; ok {
		// A pinned proxy image is a choice, not skew a restart would fix.
		wantVersion = mesh.ImageVersion(img)
	}
	a.WantVersion = wantVersion
	var missing, wrongRev, skew, unwanted int
	var gotRev, gotVer string
	versions := map[string]bool{}
	for _, p := range w.Pods {
		sc := SidecarOf(p)
		if !sc.Present {
			if a.Desired.Inject {
				missing++
			}
			continue
		}
		a.WithSidecar++
		if sc.Version != "" {
			versions[sc.Version] = true
		}
		if !a.Desired.Inject {
			unwanted++
			continue
		}
		if sc.Revision != "" && sc.Revision != a.Desired.Revision {
			wrongRev++
			gotRev = sc.Revision
		} else if wantVersion != "" && sc.Version != "" && sc.Version != wantVersion {
			skew++
			gotVer = sc.Version
		}
	}
	a.Versions = slices.Sorted(maps.Keys(versions))
	var why []string
	if missing > 0 {
		why = append(why, fmt.Sprintf("%d/%d pods have no sidecar", missing, a.Pods))
	}
	if wrongRev > 0 {
		why = append(why, fmt.Sprintf("sidecar from revision %s, new pods get %s", gotRev, a.Desired.Revision))
	}
	if skew > 0 {
		why = append(why, fmt.Sprintf("sidecar %s, control plane %s", gotVer, wantVersion))
	}
	if unwanted > 0 {
		why = append(why, fmt.Sprintf("%d/%d pods have a sidecar but new pods get none (%s)", unwanted, a.Pods, a.Desired.Reason))
	}
	a.Why = strings.Join(why, "; ")
	a.Restart = a.Why != ""
	return a
}

// NeedRestart lists the workloads of namespace ns that need a restart if
// the namespace had nsLabels.
func (r *Rules) NeedRestart(snap *Snapshot, ns string, nsLabels map[string]string) []*Workload {
	var out []*Workload
	for _, w := range snap.Workloads {
		if w.Namespace == ns && r.Assess(w, nsLabels).Restart {
			out = append(out, w)
		}
	}
	return out
}
