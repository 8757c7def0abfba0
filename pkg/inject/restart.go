package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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
	Namespace  string `json:"namespace"`
	Ref        string `json:"workload"`
	PodsBefore int    `json:"podsBefore"`
	PodsAfter  int    `json:"podsAfter"`
	// WithSidecar counts the new pods with istio-proxy; WantSidecar says
	// whether they should have one.
	WithSidecar int    `json:"podsWithSidecar"`
	WantSidecar bool   `json:"wantSidecar"`
	Outcome     string `json:"result"`
	Detail      string `json:"detail,omitempty"`
	Err         error  `json:"-"`
	// Rolled says the restart was applied (so PodsAfter means something).
	Rolled bool `json:"restarted"`
	// Took is from the restart patch to the verdict on the new pods.
	Took time.Duration `json:"-"`
}

// MarshalJSON adds the error's text and Took as a duration string.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	out := struct {
		plain
		Error string `json:"error,omitempty"`
		Took  string `json:"took,omitempty"`
	}{plain: plain(r)}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	if r.Rolled {
		out.Took = r.Took.Round(time.Millisecond).String()
	}
	return json.Marshal(out)
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
			return fail(mesh.Forbidden("delete", "pods", " in namespace "+w.Namespace, err))
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
		return fail(mesh.Forbidden("patch", resourceOf(w.Kind), " in namespace "+w.Namespace, err))
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
		return fail(mesh.Forbidden("list", "pods", " in namespace "+w.Namespace, err))
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
