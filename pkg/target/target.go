// Package target turns the arguments of certs and sniff — POD, TYPE/NAME,
// TYPE NAME or -l SELECTOR — into the pods they stand for, the way kubectl
// resolves them: TYPE/NAME through resource.Builder and the RESTMapper, the
// pods of a workload through its selector (kubectl's polymorphichelpers).
package target

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubectl/pkg/polymorphichelpers"
	"k8s.io/kubectl/pkg/scheme"
)

// Kind says how the pods were named.
type Kind string

// Kinds of targets.
const (
	// KindPod is one pod named by NAME or pod/NAME.
	KindPod Kind = "pod"
	// KindWorkload is TYPE/NAME, or a NAME that is no pod but a workload.
	KindWorkload Kind = "workload"
	// KindSelector is -l SELECTOR.
	KindSelector Kind = "selector"
)

// Request is what the user typed.
type Request struct {
	Namespace string
	Args      []string // POD, TYPE/NAME or TYPE NAME
	Selector  string   // -l
}

// Target is what a Request stands for.
type Target struct {
	Kind Kind
	// What names the target in messages: "pod web-1", "deployment/web",
	// "selector app=web".
	What string
	// Selector lists the pods of a workload or selector ("" for one pod).
	Selector string
	// Pods are the named pod (whatever its phase), or every running pod of
	// the workload or selector, sorted by name. Never empty.
	Pods []*corev1.Pod
	// Fallback is set when a NAME was no pod and was taken as the workload
	// "deployment/NAME" (or statefulset, daemonset).
	Fallback string
}

// Resolver resolves Requests against one cluster.
type Resolver struct {
	Kube kubernetes.Interface
	// Object resolves TYPE/NAME or TYPE NAME to one object; nil uses
	// kubectl's resource.Builder from Factory.
	Object func(ns string, args []string) (runtime.Object, error)
	// Factory is kubectl's factory, asked for only when Object is nil.
	Factory func() (cmdutil.Factory, error)
}

// Resolve returns the pods of r. Errors name what was not found and what to
// check: an unknown pod, workload or namespace, a selector that matches
// nothing, a workload without running pods.
func (r *Resolver) Resolve(ctx context.Context, req Request) (*Target, error) {
	ns := req.Namespace
	switch {
	case req.Selector != "":
		if len(req.Args) > 0 {
			return nil, fmt.Errorf("give either a POD or TYPE/NAME argument or -l SELECTOR, not both")
		}
		sel, err := labels.Parse(req.Selector)
		if err != nil {
			return nil, fmt.Errorf("invalid --selector %q: %w", req.Selector, err)
		}
		t := &Target{Kind: KindSelector, What: "selector " + sel.String(), Selector: sel.String()}
		return r.listPods(ctx, ns, t)
	case len(req.Args) == 0:
		return nil, fmt.Errorf("name a pod (POD or TYPE/NAME) or give -l SELECTOR")
	case len(req.Args) > 2:
		return nil, fmt.Errorf("too many arguments %q: give one POD, TYPE/NAME or TYPE NAME", req.Args)
	case len(req.Args) == 1 && !strings.Contains(req.Args[0], "/"):
		return r.byName(ctx, ns, req.Args[0])
	}
	obj, err := r.object(ns, req.Args)
	if err != nil {
		if apierrors.IsNotFound(err) {
			if nsErr := r.checkNamespace(ctx, ns); nsErr != nil {
				return nil, nsErr
			}
		}
		return nil, err
	}
	return r.forObject(ctx, ns, strings.Join(req.Args, " "), obj)
}

// byName is a pod, or else the Deployment, StatefulSet or DaemonSet of that
// name.
func (r *Resolver) byName(ctx context.Context, ns, name string) (*Target, error) {
	pod, err := r.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return &Target{Kind: KindPod, What: "pod " + name, Pods: []*corev1.Pod{pod}}, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("getting pod %s/%s: %w", ns, name, err)
	}
	for _, kind := range []string{"deployment", "statefulset", "daemonset"} {
		ref := kind + "/" + name
		obj, err := r.object(ns, []string{ref})
		if err != nil {
			continue
		}
		t, err := r.forObject(ctx, ns, ref, obj)
		if t != nil {
			t.Fallback = ref
		}
		return t, err
	}
	if err := r.checkNamespace(ctx, ns); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no pod, deployment, statefulset or daemonset named %q in namespace %s; list pods with: kubectl get pods -n %s", name, ns, ns)
}

// forObject is the pod itself, or the running pods of a workload.
func (r *Resolver) forObject(ctx context.Context, ns, what string, obj runtime.Object) (*Target, error) {
	if pod, ok := obj.(*corev1.Pod); ok {
		return &Target{Kind: KindPod, What: "pod " + pod.Name, Pods: []*corev1.Pod{pod}}, nil
	}
	_, sel, err := polymorphichelpers.SelectorsForObject(obj)
	if err != nil {
		return nil, fmt.Errorf("cannot find the pods of %s: %w", what, err)
	}
	if sel.Empty() {
		return nil, fmt.Errorf("%s selects every pod of the namespace (empty selector): name a pod or give -l SELECTOR", what)
	}
	t := &Target{Kind: KindWorkload, What: describe(obj, what), Selector: sel.String()}
	return r.listPods(ctx, ns, t)
}

// listPods fills t.Pods with the running pods of t.Selector.
func (r *Resolver) listPods(ctx context.Context, ns string, t *Target) (*Target, error) {
	list, err := r.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: t.Selector})
	if err != nil {
		return nil, fmt.Errorf("listing pods of %s in namespace %s: %w", t.What, ns, err)
	}
	phases := map[string]int{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			t.Pods = append(t.Pods, p)
			continue
		}
		phase := string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			phase = "Terminating"
		} else if phase == "" {
			phase = "Unknown"
		}
		phases[phase]++
	}
	if len(t.Pods) > 0 {
		sort.Slice(t.Pods, func(i, j int) bool { return t.Pods[i].Name < t.Pods[j].Name })
		return t, nil
	}
	if len(list.Items) == 0 {
		if err := r.checkNamespace(ctx, ns); err != nil {
			return nil, err
		}
		if t.Kind == KindSelector {
			return nil, fmt.Errorf("no pods match selector %q in namespace %s", t.Selector, ns)
		}
		return nil, fmt.Errorf("%s in namespace %s has no pods (selector %s): scale it up, or check its selector", t.What, ns, t.Selector)
	}
	return nil, fmt.Errorf("%s in namespace %s has no running pod (%s): wait until one runs; see kubectl get pods -n %s -l %s",
		t.What, ns, describePhases(phases), ns, t.Selector)
}

func describePhases(phases map[string]int) string {
	var out []string
	for p, n := range phases {
		out = append(out, fmt.Sprintf("%d %s", n, p))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// checkNamespace says so when ns does not exist; a refused read is no
// answer and stays silent.
func (r *Resolver) checkNamespace(ctx context.Context, ns string) error {
	if _, err := r.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q not found: check -n (kubectl get namespaces)", ns)
	}
	return nil
}

// object resolves TYPE/NAME like kubectl does.
func (r *Resolver) object(ns string, args []string) (runtime.Object, error) {
	if r.Object != nil {
		return r.Object(ns, args)
	}
	if r.Factory == nil {
		return nil, fmt.Errorf("cannot resolve %s: no kubectl factory", strings.Join(args, " "))
	}
	f, err := r.Factory()
	if err != nil {
		return nil, err
	}
	return f.NewBuilder().
		WithScheme(scheme.Scheme, scheme.Scheme.PrioritizedVersionsAllGroups()...).
		NamespaceParam(ns).DefaultNamespace().
		ResourceTypeOrNameArgs(true, args...).
		SingleResourceType().
		Do().Object()
}

// describe is "deployment/web" for a Deployment named web, else what the
// user typed.
func describe(obj runtime.Object, typed string) string {
	m, err := meta.Accessor(obj)
	if err != nil {
		return typed
	}
	kinds, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil || len(kinds) == 0 {
		return typed
	}
	return strings.ToLower(kinds[0].Kind) + "/" + m.GetName()
}
