package target

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func pod(name string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Status: corev1.PodStatus{Phase: phase}}
}

func deployment(name string, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}}}
}

// typedObject stands in for resource.Builder in unit tests: TYPE/NAME read
// from the fake clientset (the builder itself runs in the e2e tests).
func typedObject(kube kubernetes.Interface) func(ns string, args []string) (runtime.Object, error) {
	return func(ns string, args []string) (runtime.Object, error) {
		ref := strings.Join(args, "/")
		kind, name, _ := strings.Cut(ref, "/")
		ctx := context.Background()
		switch kind {
		case "pod", "pods", "po":
			return kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		case "deployment", "deploy", "deployments":
			return kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		case "statefulset", "sts":
			return kube.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		case "daemonset", "ds":
			return kube.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		case "service", "svc":
			return kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		case "configmap", "cm":
			return kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		}
		return nil, fmt.Errorf("the server doesn't have a resource type %q", kind)
	}
}

func TestResolve(t *testing.T) {
	web := map[string]string{"app": "web"}
	gone := pod("web-0", web, corev1.PodRunning)
	now := metav1.Now()
	gone.DeletionTimestamp = &now
	gone.Finalizers = []string{"x"}
	objects := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		pod("web-2", web, corev1.PodRunning),
		pod("web-1", web, corev1.PodRunning),
		gone,
		pod("web-p", web, corev1.PodPending),
		pod("solo", nil, corev1.PodPending),
		pod("idle-1", map[string]string{"app": "idle"}, corev1.PodPending),
		pod("idle-2", map[string]string{"app": "idle"}, corev1.PodFailed),
		deployment("web", web),
		deployment("idle", map[string]string{"app": "idle"}),
		deployment("empty", map[string]string{"app": "none"}),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-svc"}, Spec: corev1.ServiceSpec{Selector: web}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "cfg"}},
	}
	tests := []struct {
		name     string
		req      Request
		kind     Kind
		what     string
		selector string
		pods     []string
		fallback string
		wantErr  string
	}{
		{name: "pod by name, whatever its phase", req: Request{Args: []string{"solo"}}, kind: KindPod, what: "pod solo", pods: []string{"solo"}},
		{name: "pod/NAME", req: Request{Args: []string{"pod/web-1"}}, kind: KindPod, what: "pod web-1", pods: []string{"web-1"}},
		{name: "TYPE NAME", req: Request{Args: []string{"pod", "web-2"}}, kind: KindPod, what: "pod web-2", pods: []string{"web-2"}},
		{name: "deployment: every running pod, sorted", req: Request{Args: []string{"deploy/web"}}, kind: KindWorkload,
			what: "deployment/web", selector: "app=web", pods: []string{"web-1", "web-2"}},
		{name: "bare workload name", req: Request{Args: []string{"web"}}, kind: KindWorkload,
			what: "deployment/web", selector: "app=web", pods: []string{"web-1", "web-2"}, fallback: "deployment/web"},
		{name: "service", req: Request{Args: []string{"svc/web-svc"}}, kind: KindWorkload,
			what: "service/web-svc", selector: "app=web", pods: []string{"web-1", "web-2"}},
		{name: "selector", req: Request{Selector: "app=web"}, kind: KindSelector, what: "selector app=web", selector: "app=web", pods: []string{"web-1", "web-2"}},
		{name: "unknown name", req: Request{Args: []string{"nope"}},
			wantErr: `no pod, deployment, statefulset or daemonset named "nope" in namespace default; list pods with: kubectl get pods -n default`},
		{name: "unknown workload", req: Request{Args: []string{"deploy/nope"}}, wantErr: `deployments.apps "nope" not found`},
		{name: "unknown namespace", req: Request{Namespace: "nons", Args: []string{"web"}},
			wantErr: `namespace "nons" not found: check -n (kubectl get namespaces)`},
		{name: "unknown namespace, TYPE/NAME", req: Request{Namespace: "nons", Args: []string{"deploy/web"}},
			wantErr: `namespace "nons" not found: check -n (kubectl get namespaces)`},
		{name: "unknown namespace, selector", req: Request{Namespace: "nons", Selector: "app=web"},
			wantErr: `namespace "nons" not found: check -n (kubectl get namespaces)`},
		{name: "selector matches nothing", req: Request{Selector: "app=none"}, wantErr: `no pods match selector "app=none" in namespace default`},
		{name: "selector without running pods", req: Request{Selector: "app=idle"},
			wantErr: "selector app=idle in namespace default has no running pod (1 Failed, 1 Pending): wait until one runs; see kubectl get pods -n default -l app=idle"},
		{name: "workload without running pods", req: Request{Args: []string{"deployment", "idle"}},
			wantErr: "deployment/idle in namespace default has no running pod (1 Failed, 1 Pending): wait until one runs; see kubectl get pods -n default -l app=idle"},
		{name: "workload without pods", req: Request{Args: []string{"empty"}},
			wantErr: "deployment/empty in namespace default has no pods (selector app=none): scale it up, or check its selector"},
		{name: "no selector on the kind", req: Request{Args: []string{"cm/cfg"}},
			wantErr: "cannot find the pods of cm/cfg: selector for *v1.ConfigMap not implemented"},
		{name: "unknown type", req: Request{Args: []string{"frob/x"}}, wantErr: `the server doesn't have a resource type "frob"`},
		{name: "bad selector", req: Request{Selector: "=web"}, wantErr: `invalid --selector "=web": found '=', expected: !, identifier, or 'end of string'`},
		{name: "selector and name", req: Request{Args: []string{"web"}, Selector: "app=web"}, wantErr: "give either a POD or TYPE/NAME argument or -l SELECTOR, not both"},
		{name: "nothing", req: Request{}, wantErr: "name a pod (POD or TYPE/NAME) or give -l SELECTOR"},
		{name: "too many", req: Request{Args: []string{"a", "b", "c"}}, wantErr: `too many arguments ["a" "b" "c"]: give one POD, TYPE/NAME or TYPE NAME`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := kubefake.NewClientset(objects...)
			r := &Resolver{Kube: kube, Object: typedObject(kube)}
			if tt.req.Namespace == "" {
				tt.req.Namespace = "default"
			}
			got, err := r.Resolve(context.Background(), tt.req)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range got.Pods {
				names = append(names, p.Name)
			}
			if got.Kind != tt.kind || got.What != tt.what || got.Selector != tt.selector || got.Fallback != tt.fallback || !reflect.DeepEqual(names, tt.pods) {
				t.Errorf("got %s %q selector %q fallback %q pods %q\nwant %s %q selector %q fallback %q pods %q",
					got.Kind, got.What, got.Selector, got.Fallback, names, tt.kind, tt.what, tt.selector, tt.fallback, tt.pods)
			}
		})
	}
}

// A namespace admin may not read Namespaces: a refused check is no answer,
// and the resolver's own message stands.
func TestResolveNamespaceUnreadable(t *testing.T) {
	kube := kubefake.NewClientset()
	kube.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "default", fmt.Errorf("no"))
	})
	r := &Resolver{Kube: kube, Object: typedObject(kube)}
	_, err := r.Resolve(context.Background(), Request{Namespace: "default", Selector: "app=web"})
	if want := `no pods match selector "app=web" in namespace default`; err == nil || err.Error() != want {
		t.Fatalf("err %v, want %q", err, want)
	}
}
