package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/polymorphichelpers"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// DryRun is kubectl's --dry-run strategy.
type DryRun string

// Dry-run strategies.
const (
	DryRunNone   DryRun = "none"
	DryRunClient DryRun = "client"
	DryRunServer DryRun = "server"
)

// RestartConfig selects and paces restarts.
type RestartConfig struct {
	// Selector filters workloads by their own labels (-l).
	Selector labels.Selector
	// All restarts every workload, not only those that need it.
	All            bool
	Concurrency    int
	Timeout        time.Duration
	DryRun         DryRun
	DeleteBarePods bool
	// AllNamespaces lets the restart watch cluster-wide (one watch per
	// kind) rather than per namespace.
	AllNamespaces bool
}

// Outcomes of a restart.
const (
	OutcomeRestarted  = "restarted"
	OutcomeWould      = "would restart"
	OutcomeSkipped    = "skipped"
	OutcomeFailed     = "failed"
	OutcomeNotDeleted = "not deleted"
	OutcomeDeleted    = "deleted"
)

// Target is a workload chosen for restart and why.
type Target struct {
	Workload   *Workload
	Assessment Assessment
}

// Result is what happened to one workload.
type Result struct {
	Namespace  string
	Ref        string
	PodsBefore int
	PodsAfter  int
	// WithSidecar counts the new pods with istio-proxy; WantSidecar says
	// whether they should have one.
	WithSidecar int
	WantSidecar bool
	Outcome     string
	Detail      string
	Err         error
	// Rolled says the restart was applied (so PodsAfter means something).
	Rolled bool
	// Took is from the restart patch to the verdict on the new pods.
	Took time.Duration
}

// Select picks the workloads to restart: those whose pods differ from what
// Istio would inject now, or all of them with cfg.All.
func (r *Rules) Select(snap *Snapshot, cfg RestartConfig) []Target {
	var out []Target
	for _, w := range snap.Workloads {
		if cfg.Selector != nil && !cfg.Selector.Matches(labels.Set(w.Labels)) {
			continue
		}
		ns := snap.Namespace(w.Namespace)
		if ns == nil {
			continue
		}
		a := r.Assess(w, ns.Labels)
		if !a.Restart && !cfg.All {
			continue
		}
		out = append(out, Target{Workload: w, Assessment: a})
	}
	return out
}

// Restart restarts the targets like `kubectl rollout restart`, at most
// cfg.Concurrency at a time, waits for each rollout with a watch, then
// checks every new pod is Ready and has (or lacks) istio-proxy as Istio
// decided. Each workload has cfg.Timeout; failures do not stop the others.
func Restart(ctx context.Context, kube kubernetes.Interface, targets []Target, cfg RestartConfig, progress Progress) []Result {
	results := make([]Result, len(targets))
	limit := cfg.Concurrency
	if limit < 1 {
		limit = 1
	}
	sem := make(chan struct{}, limit)
	var tr *tracker
	if cfg.DryRun != DryRunClient && cfg.DryRun != DryRunServer {
		tctx, stop := context.WithCancel(ctx)
		tr = newTracker(tctx, kube, targets, cfg.AllNamespaces)
		defer func() {
			stop()
			tr.shutdown()
		}()
	}
	var wg sync.WaitGroup
	for i, t := range targets {
		key := t.Workload.Namespace + "/" + t.Workload.Ref()
		progress.Update(key, "queued")
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = failed(t, ctx.Err())
				progress.Update(key, "cancelled")
				return
			}
			defer func() { <-sem }()
			res := restartOne(ctx, kube, tr, t, cfg, func(s string) { progress.Update(key, s) })
			results[i] = res
			line := res.Outcome
			if res.Detail != "" {
				line += ": " + res.Detail
			}
			progress.Update(key, line)
		}()
	}
	wg.Wait()
	return results
}

func failed(t Target, err error) Result {
	return Result{Namespace: t.Workload.Namespace, Ref: t.Workload.Ref(), PodsBefore: len(t.Workload.Pods),
		WantSidecar: t.Assessment.Desired.Inject, Outcome: OutcomeFailed, Detail: err.Error(), Err: err}
}

func restartOne(ctx context.Context, kube kubernetes.Interface, tr *tracker, t Target, cfg RestartConfig, status func(string)) (res Result) {
	w := t.Workload
	res = Result{Namespace: w.Namespace, Ref: w.Ref(), PodsBefore: len(w.Pods), WantSidecar: t.Assessment.Desired.Inject}
	fail := func(err error) Result {
		res.Outcome, res.Detail, res.Err = OutcomeFailed, err.Error(), err
		return res
	}
	if w.Kind == KindPod {
		if !cfg.DeleteBarePods {
			res.Outcome, res.Detail = OutcomeNotDeleted, "bare pod with no controller; recreate it yourself or pass --delete-bare-pods"
			return res
		}
		opts := metav1.DeleteOptions{}
		switch cfg.DryRun {
		case DryRunClient:
			res.Outcome, res.Detail = OutcomeWould, "would delete bare pod (dry run)"
			return res
		case DryRunServer:
			opts.DryRun = []string{metav1.DryRunAll}
		}
		if err := kube.CoreV1().Pods(w.Namespace).Delete(ctx, w.Name, opts); err != nil {
			return fail(Forbidden("delete", "pods", " in namespace "+w.Namespace, err))
		}
		res.Outcome, res.Detail = OutcomeDeleted, "bare pod deleted; nothing recreates it"
		if cfg.DryRun == DryRunServer {
			res.Detail = "server dry run"
		}
		return res
	}
	if w.Paused {
		res.Outcome, res.Detail = OutcomeSkipped, "deployment is paused; run kubectl rollout resume, then restart again"
		return res
	}
	if w.OnDelete() {
		res.Outcome, res.Detail = OutcomeSkipped, fmt.Sprintf("updateStrategy OnDelete: new pods come only when old ones are deleted; delete them one at a time (kubectl delete pod -n %s -l %s)", w.Namespace, w.Selector)
		return res
	}
	obj := w.Object.DeepCopyObject()
	stamp, err := restartStamp(obj, w.Template.Annotations[AnnotationRestartedAt])
	if err != nil {
		return fail(err)
	}
	if cfg.DryRun == DryRunClient {
		res.Outcome, res.Detail = OutcomeWould, "dry run"
		return res
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{AnnotationRestartedAt: stamp}}}}})
	opts := metav1.PatchOptions{}
	if cfg.DryRun == DryRunServer {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	status("restarting")
	start := time.Now()
	defer func() { res.Took = time.Since(start) }()
	patched, err := patchWorkload(ctx, kube, w, patch, opts)
	if err != nil {
		return fail(Forbidden("patch", resourceOf(w.Kind), " in namespace "+w.Namespace, err))
	}
	if cfg.DryRun == DryRunServer {
		res.Outcome, res.Detail = OutcomeRestarted, "server dry run"
		return res
	}
	res.Rolled = true

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	last := ""
	err = waitRollout(wctx, tr, w, patched, func(msg string) {
		last = strings.TrimSpace(msg)
		status("waiting: " + last)
	})
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("rollout not finished after --timeout %s: %s", cfg.Timeout, last)
		}
		res.Err = err
		res.Outcome, res.Detail = OutcomeFailed, err.Error()
		// Still count what came up, to show how far it got.
		if pods, perr := tr.newPods(ctx, kube, w, stamp); perr == nil {
			res.PodsAfter, res.WithSidecar = len(pods), countSidecars(pods)
		}
		return res
	}
	status("verifying pods")
	pods, err := tr.newPods(ctx, kube, w, stamp)
	if err != nil {
		return fail(Forbidden("list", "pods", " in namespace "+w.Namespace, err))
	}
	res.PodsAfter, res.WithSidecar = len(pods), countSidecars(pods)
	if len(pods) == 0 && w.Replicas > 0 {
		return fail(fmt.Errorf("rollout finished but no pod from this restart was found (wanted %d)", w.Replicas))
	}
	if problems := verifyPods(pods, t.Assessment.Desired, t.Assessment.WantVersion); len(problems) > 0 {
		return fail(errors.New(strings.Join(problems, "; ")))
	}
	res.Outcome = OutcomeRestarted
	return res
}

// restartStamp applies kubectl's restart to a copy of obj (which also
// refuses paused Deployments) and returns the restartedAt value it set.
func restartStamp(obj runtime.Object, previous string) (string, error) {
	raw, err := polymorphichelpers.ObjectRestarterFn(obj)
	if err != nil {
		return "", err
	}
	var m struct {
		Spec struct {
			Template struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("reading the restarted object: %w", err)
	}
	stamp := m.Spec.Template.Metadata.Annotations[AnnotationRestartedAt]
	if stamp == previous {
		// kubectl's stamp has second precision: a second restart within
		// the same second would change nothing, so it gets a finer one.
		stamp = time.Now().Format(time.RFC3339Nano)
	}
	return stamp, nil
}

func resourceOf(kind string) string {
	return kind + "s"
}

func patchWorkload(ctx context.Context, kube kubernetes.Interface, w *Workload, patch []byte, opts metav1.PatchOptions) (runtime.Object, error) {
	apps := kube.AppsV1()
	switch w.Kind {
	case KindDeployment:
		return apps.Deployments(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	case KindStatefulSet:
		return apps.StatefulSets(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	case KindDaemonSet:
		return apps.DaemonSets(w.Namespace).Patch(ctx, w.Name, types.StrategicMergePatchType, patch, opts)
	}
	return nil, fmt.Errorf("cannot restart a %s", w.Kind)
}

// waitRollout waits, on the tracker's watch, until kubectl's rollout status
// viewer says the rollout that the patch started is complete. Cached
// objects older than the patch are not judged: their status describes the
// previous rollout.
func waitRollout(ctx context.Context, tr *tracker, w *Workload, patched runtime.Object, status func(string)) error {
	viewer, err := polymorphichelpers.StatusViewerFor(schema.GroupKind{Group: appsv1.GroupName, Kind: apiKind(w.Kind)})
	if err != nil {
		return err
	}
	var want int64
	if m, err := meta.Accessor(patched); err == nil {
		want = m.GetGeneration()
	}
	changed, unsubscribe := tr.subscribe(w)
	defer unsubscribe()
	for {
		obj, synced, err := tr.get(w)
		if err != nil {
			return err
		}
		if synced && obj == nil {
			return fmt.Errorf("%s was deleted while waiting for its rollout", w.Ref())
		}
		if obj != nil && generationOf(obj) >= want {
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
			if err != nil {
				return err
			}
			msg, done, err := viewer.Status(&unstructured.Unstructured{Object: u}, 0)
			if err != nil {
				return err
			}
			status(msg)
			if done {
				return nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// apiKind is the API kind of a workload restart can wait for.
func apiKind(kind string) string {
	switch kind {
	case KindDeployment:
		return "Deployment"
	case KindStatefulSet:
		return "StatefulSet"
	case KindDaemonSet:
		return "DaemonSet"
	}
	return kind
}

// newPods are the live pods created by this restart: they carry its
// restartedAt stamp (pods copy their template's annotations). The pod
// watch usually has them all Ready by the time the rollout is complete;
// if not, one list gives the authoritative answer.
func (tr *tracker) newPods(ctx context.Context, kube kubernetes.Interface, w *Workload, stamp string) ([]*corev1.Pod, error) {
	if pods, ok := tr.cachedPods(w, stamp); ok {
		return pods, nil
	}
	return listNewPods(ctx, kube, w, stamp)
}

func listNewPods(ctx context.Context, kube kubernetes.Interface, w *Workload, stamp string) ([]*corev1.Pod, error) {
	list, err := kube.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: w.Selector.String()})
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && p.Annotations[AnnotationRestartedAt] == stamp {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func countSidecars(pods []*corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if mesh.HasSidecar(p) {
			n++
		}
	}
	return n
}

// verifyPods checks the restarted pods: Ready, and with a sidecar from the
// expected revision and version exactly when Istio should have injected one.
func verifyPods(pods []*corev1.Pod, want Decision, wantVersion string) []string {
	var problems []string
	for _, p := range pods {
		sc := SidecarOf(p)
		switch {
		case want.Inject && !sc.Present:
			problems = append(problems, fmt.Sprintf("pod %s has no %s (check the injector webhook and istiod logs)", p.Name, ProxyContainer))
		case !want.Inject && sc.Present:
			problems = append(problems, fmt.Sprintf("pod %s still has %s", p.Name, ProxyContainer))
		case want.Inject && sc.Revision != "" && want.Revision != "" && sc.Revision != want.Revision:
			problems = append(problems, fmt.Sprintf("pod %s has a sidecar from revision %s, expected %s (does the %s webhook point at that revision's istiod?)", p.Name, sc.Revision, want.Revision, want.Revision))
		case want.Inject && wantVersion != "" && sc.Version != "" && sc.Version != wantVersion:
			problems = append(problems, fmt.Sprintf("pod %s has sidecar %s, expected %s (check the injector's global.tag and the pod's %s annotation)", p.Name, sc.Version, wantVersion, AnnotationProxyImage))
		}
		if !mesh.PodReady(p) {
			problems = append(problems, fmt.Sprintf("pod %s is not Ready", p.Name))
		}
	}
	return problems
}

// RestartError aggregates the workloads that failed.
type RestartError struct {
	Failed []Result
	Total  int
}

func (e *RestartError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d workloads failed to restart:", len(e.Failed), e.Total)
	for _, r := range e.Failed {
		fmt.Fprintf(&b, "\n  %s/%s: %s", r.Namespace, r.Ref, r.Detail)
	}
	return b.String()
}

// Unwrap exposes the individual errors to errors.Is/As.
func (e *RestartError) Unwrap() []error {
	var out []error
	for _, r := range e.Failed {
		out = append(out, r.Err)
	}
	return out
}

// Failures returns an error for the failed results, or nil.
func Failures(results []Result) error {
	e := &RestartError{Total: len(results)}
	for _, r := range results {
		if r.Outcome == OutcomeFailed {
			e.Failed = append(e.Failed, r)
		}
	}
	if len(e.Failed) == 0 {
		return nil
	}
	return e
}
