package inject

import (
	"context"
	"fmt"
	"sort"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// tracker follows every restarted workload and its pods through one watch
// per kind and namespace, instead of a watch and a pod list per workload:
// restarting 50 Deployments then costs the API server two watches, not 100
// requests on top of the controllers' own work.
type tracker struct {
	mu   sync.Mutex
	subs map[string]chan struct{} // "kind/namespace/name" → wake-up
	// fatal is the first watch error that retrying cannot fix (forbidden,
	// unauthorized), by informer: RBAC is granted per namespace, so a watch
	// refused in one namespace says nothing of another. Waiters report it
	// instead of timing out.
	fatal map[cache.SharedIndexInformer]error

	informers map[string]cache.SharedIndexInformer // "resource/namespace"
	pods      map[string]cache.SharedIndexInformer // namespace → pods
	// hooked: a cluster-wide informer serves every namespace; it gets its
	// handlers once.
	hooked map[cache.SharedIndexInformer]bool
	// running: the informers' goroutines, for shutdown.
	running sync.WaitGroup
}

// newTracker starts informers for the kinds and namespaces of targets:
// cluster-wide when all is set (the caller could list everything), else
// one set per namespace. They stop with ctx.
func newTracker(ctx context.Context, kube kubernetes.Interface, targets []Target, all bool) *tracker {
	tr := &tracker{subs: map[string]chan struct{}{}, fatal: map[cache.SharedIndexInformer]error{},
		informers: map[string]cache.SharedIndexInformer{}, pods: map[string]cache.SharedIndexInformer{},
		hooked: map[cache.SharedIndexInformer]bool{}}
	// One informer per resource and namespace (or cluster-wide), built from
	// the typed client's list and watch: client-go's informer factory would
	// link an informer for every built-in kind into the binary.
	built := map[string]cache.SharedIndexInformer{}
	informer := func(resource, ns string) cache.SharedIndexInformer {
		if all {
			ns = metav1.NamespaceAll
		}
		if inf, ok := built[resource+"/"+ns]; ok {
			return inf
		}
		inf := newInformer(kube, resource, ns)
		built[resource+"/"+ns] = inf
		return inf
	}
	for _, t := range targets {
		w := t.Workload
		if w.Kind == KindPod || w.Paused || w.OnDelete() {
			continue
		}
		switch w.Kind {
		case KindDeployment, KindStatefulSet, KindDaemonSet:
		default:
			continue
		}
		resource := resourceOf(w.Kind)
		tr.add(resource, w.Namespace, informer(resource, w.Namespace), w.Kind)
		tr.add("pods", w.Namespace, informer("pods", w.Namespace), "")
	}
	for _, inf := range built {
		tr.running.Add(1)
		go func() {
			defer tr.running.Done()
			inf.RunWithContext(ctx)
		}()
	}
	// Waiters that looked before an informer's first list finished get no
	// event for it; wake them when it is filled. Each informer on its own,
	// so one that never syncs (a forbidden namespace) holds up no other.
	for inf := range tr.hooked {
		go func() {
			if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
				tr.wakeAll()
			}
		}()
	}
	return tr
}

// newInformer lists and watches one resource of a namespace ("" for all).
func newInformer(kube kubernetes.Interface, resource, ns string) cache.SharedIndexInformer {
	var lw *cache.ListWatch
	var obj runtime.Object
	switch resource {
	case "deployments":
		c := kube.AppsV1().Deployments(ns)
		obj = &appsv1.Deployment{}
		lw = &cache.ListWatch{
			ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return c.List(ctx, o) },
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return c.Watch(ctx, o) },
		}
	case "statefulsets":
		c := kube.AppsV1().StatefulSets(ns)
		obj = &appsv1.StatefulSet{}
		lw = &cache.ListWatch{
			ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return c.List(ctx, o) },
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return c.Watch(ctx, o) },
		}
	case "daemonsets":
		c := kube.AppsV1().DaemonSets(ns)
		obj = &appsv1.DaemonSet{}
		lw = &cache.ListWatch{
			ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return c.List(ctx, o) },
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return c.Watch(ctx, o) },
		}
	default: // pods
		c := kube.CoreV1().Pods(ns)
		obj = &corev1.Pod{}
		lw = &cache.ListWatch{
			ListWithContextFunc:  func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return c.List(ctx, o) },
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return c.Watch(ctx, o) },
		}
	}
	// As client-go's generated informers: a client that cannot stream the
	// initial list (fake clientsets) gets a plain list then watch.
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, kube), obj, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// shutdown waits for the informers' goroutines, once the context given to
// newTracker is done.
func (tr *tracker) shutdown() {
	tr.running.Wait()
}

func (tr *tracker) wakeAll() {
	tr.mu.Lock()
	subs := make([]chan struct{}, 0, len(tr.subs))
	for _, c := range tr.subs {
		subs = append(subs, c)
	}
	tr.mu.Unlock()
	for _, c := range subs {
		wake(c)
	}
}

// add registers an informer once: workload informers wake the waiter of
// the object that changed; pod informers are only read.
func (tr *tracker) add(resource, ns string, inf cache.SharedIndexInformer, kind string) {
	if resource == "pods" {
		tr.pods[ns] = inf
	} else {
		tr.informers[resource+"/"+ns] = inf
	}
	if tr.hooked[inf] {
		return
	}
	tr.hooked[inf] = true
	// The waits read only metadata, spec and status: managed fields are
	// dropped so a namespace's worth of cached pods costs less memory.
	_ = inf.SetTransform(func(obj any) (any, error) {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetManagedFields(nil)
		}
		return obj, nil
	})
	// Only Forbidden is final: client-go refreshes expired credentials
	// (401) on the next attempt by itself.
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) {
			tr.mu.Lock()
			if tr.fatal[inf] == nil {
				tr.fatal[inf] = err
			}
			tr.mu.Unlock()
			tr.wakeAll()
		}
	})
	if kind == "" {
		return
	}
	notify := func(obj any) {
		m, err := metaOf(obj)
		if err != nil {
			return
		}
		tr.mu.Lock()
		c := tr.subs[kind+"/"+m.GetNamespace()+"/"+m.GetName()]
		tr.mu.Unlock()
		if c != nil {
			wake(c)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	})
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// subscribe returns a channel that receives a signal whenever the workload
// changes; unsubscribe with the returned func.
func (tr *tracker) subscribe(w *Workload) (<-chan struct{}, func()) {
	key := w.Kind + "/" + w.Namespace + "/" + w.Name
	c := make(chan struct{}, 1)
	tr.mu.Lock()
	tr.subs[key] = c
	tr.mu.Unlock()
	return c, func() {
		tr.mu.Lock()
		delete(tr.subs, key)
		tr.mu.Unlock()
	}
}

// get returns the workload as last seen, whether the informer has synced,
// and a fatal watch error if there is one.
func (tr *tracker) get(w *Workload) (obj any, synced bool, err error) {
	res := resourceOf(w.Kind)
	inf := tr.informers[res+"/"+w.Namespace]
	if inf == nil {
		return nil, false, fmt.Errorf("cannot wait for a %s", w.Kind)
	}
	tr.mu.Lock()
	err = tr.fatal[inf]
	tr.mu.Unlock()
	if err != nil {
		return nil, false, mesh.Forbidden("watch", res, " in namespace "+w.Namespace, err)
	}
	if !inf.HasSynced() {
		return nil, false, nil
	}
	obj, ok, err := inf.GetStore().GetByKey(w.Namespace + "/" + w.Name)
	if err != nil || !ok {
		return nil, true, err
	}
	return obj, true, nil
}

// cachedPods are the workload's live pods carrying stamp as the pod watch
// last saw them; ok is false when that view is not complete yet (not
// synced, fewer pods than wanted, or one not Ready), so the caller lists.
func (tr *tracker) cachedPods(w *Workload, stamp string) (pods []*corev1.Pod, ok bool) {
	inf := tr.pods[w.Namespace]
	if inf == nil || !inf.HasSynced() {
		return nil, false
	}
	objs, err := inf.GetIndexer().ByIndex(cache.NamespaceIndex, w.Namespace)
	if err != nil {
		return nil, false
	}
	for _, o := range objs {
		p, isPod := o.(*corev1.Pod)
		if !isPod || !w.Selector.Matches(labels.Set(p.Labels)) {
			continue
		}
		if p.DeletionTimestamp == nil && p.Annotations[AnnotationRestartedAt] == stamp {
			if !mesh.PodReady(p) {
				return nil, false
			}
			pods = append(pods, p)
		}
	}
	if int32(len(pods)) < w.Replicas {
		return nil, false
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, true
}

// generationOf reads metadata.generation of a workload from the cache.
func generationOf(obj any) int64 {
	m, err := meta.Accessor(obj)
	if err != nil {
		return 0
	}
	return m.GetGeneration()
}
