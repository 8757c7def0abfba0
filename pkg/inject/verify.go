package inject

import (
	"context"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/polymorphichelpers"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

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
