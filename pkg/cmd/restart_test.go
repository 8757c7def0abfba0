package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

// rolledOut marks a Deployment's status as fully rolled out, so the rollout
// status viewer is satisfied as soon as it looks.
func rolledOut(objs []runtime.Object) []runtime.Object {
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			d.Status = appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
		}
	}
	return objs
}

// fakeController stands in for the Deployment controller and the injector:
// on each restart patch it creates the new pod, with istio-proxy when
// sidecar is true.
func fakeController(f *fake.Options, sidecar, ready bool) {
	n := 0
	f.Kube.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		var body struct {
			Spec struct {
				Template struct {
					Metadata metav1.ObjectMeta `json:"metadata"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
			return true, nil, err
		}
		n++
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.GetNamespace(), Name: fmt.Sprintf("%s-new-%d", p.GetName(), n),
				Labels: map[string]string{"app": p.GetName()}, Annotations: body.Spec.Template.Metadata.Annotations},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if sidecar {
			pod.Labels["istio.io/rev"] = "default"
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "docker.io/istio/proxyv2:1.31.0"})
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		return false, nil, f.Kube.Tracker().Add(pod)
	})
}

func TestRestart(t *testing.T) {
	istio := func(objs ...runtime.Object) []runtime.Object {
		return append([]runtime.Object{meshInjector("")}, objs...)
	}
	on := testNamespace("shop", "istio-injection=enabled")
	paused := testWorkload("shop", "paused", false)
	paused[0].(*appsv1.Deployment).Spec.Paused = true
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "debug"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	slow := testWorkload("shop", "web", false)
	slow[0].(*appsv1.Deployment).Status = appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 0}

	tests := []struct {
		name        string
		objs        []runtime.Object
		args        []string
		sidecar     bool
		ready       bool
		wantOut     string
		wantErrOut  string
		wantErr     string
		wantPatches int
	}{
		{name: "restart and verify", objs: istio(append([]runtime.Object{on}, rolledOut(testWorkload("shop", "web", false))...)...),
			args: []string{"restart", "shop"}, sidecar: true, ready: true,
			wantOut: "WORKLOAD              PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/deployment/web   1             1            1/1       restarted\n",
			wantErrOut: "shop/deployment/web: queued\n" +
				"shop/deployment/web: restarting\n" +
				"shop/deployment/web: waiting: deployment \"web\" successfully rolled out\n" +
				"shop/deployment/web: verifying pods\n" +
				"shop/deployment/web: restarted\n",
			wantPatches: 1},
		{name: "new pod without sidecar fails", objs: istio(append([]runtime.Object{on}, rolledOut(testWorkload("shop", "web", false))...)...),
			args: []string{"restart", "shop"}, sidecar: false, ready: true,
			wantOut: "WORKLOAD              PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/deployment/web   1             1            0/1       failed: pod web-new-1 has no istio-proxy (check the injector webhook and istiod logs)\n",
			wantErr:     "1 of 1 workloads failed to restart:\n  shop/deployment/web: pod web-new-1 has no istio-proxy (check the injector webhook and istiod logs)",
			wantPatches: 1},
		{name: "new pod not ready fails", objs: istio(append([]runtime.Object{on}, rolledOut(testWorkload("shop", "web", false))...)...),
			args: []string{"restart", "shop"}, sidecar: true, ready: false,
			wantOut: "WORKLOAD              PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/deployment/web   1             1            1/1       failed: pod web-new-1 is not Ready\n",
			wantErr:     "1 of 1 workloads failed to restart:\n  shop/deployment/web: pod web-new-1 is not Ready",
			wantPatches: 1},
		{name: "rollout timeout", objs: istio(append([]runtime.Object{on}, slow...)...),
			args: []string{"restart", "shop", "--timeout", "300ms"}, sidecar: true, ready: true,
			wantOut: "WORKLOAD              PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/deployment/web   1             1            1/1       failed: rollout not finished after --timeout 300ms: Waiting for deployment \"web\" rollout to finish: 0 out of 1 new replicas have been updated...\n",
			wantErr:     "1 of 1 workloads failed to restart:\n  shop/deployment/web: rollout not finished after --timeout 300ms: Waiting for deployment \"web\" rollout to finish: 0 out of 1 new replicas have been updated...",
			wantPatches: 1},
		{name: "paused and bare pods are reported, not touched", objs: istio(append(append([]runtime.Object{on, bare}, paused...), testWorkload("shop", "done", true)...)...),
			args: []string{"restart", "shop"},
			wantOut: "WORKLOAD                 PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/deployment/paused   1             -            -         skipped: deployment is paused; run kubectl rollout resume, then restart again\n" +
				"shop/pod/debug           1             -            -         not deleted: bare pod with no controller; recreate it yourself or pass --delete-bare-pods\n"},
		{name: "delete bare pods", objs: istio(on, bare), args: []string{"restart", "shop", "--delete-bare-pods"},
			wantOut: "WORKLOAD         PODS BEFORE   PODS AFTER   SIDECAR   RESULT\n" +
				"shop/pod/debug   1             -            -         deleted: bare pod deleted; nothing recreates it\n",
			wantErrOut: "shop/pod/debug: queued\nshop/pod/debug: deleted: bare pod deleted; nothing recreates it\n"},
		{name: "client dry run lists the plan", objs: istio(append(append([]runtime.Object{on}, testWorkload("shop", "web", false)...), testWorkload("shop", "done", true)...)...),
			args: []string{"restart", "shop", "--dry-run"},
			wantOut: "WORKLOAD              PODS   SIDECAR   REASON\n" +
				"shop/deployment/web   1      0/1       1/1 pods have no sidecar\n"},
		{name: "--all with -l", objs: istio(append(append([]runtime.Object{on}, testWorkload("shop", "web", false)...), testWorkload("shop", "done", true)...)...),
			args: []string{"restart", "shop", "--all", "-l", "app=done", "--dry-run=client"},
			wantOut: "WORKLOAD               PODS   SIDECAR   REASON\n" +
				"shop/deployment/done   1      1/1       --all\n"},
		{name: "nothing to do", objs: istio(append([]runtime.Object{on}, testWorkload("shop", "done", true)...)...),
			args:       []string{"restart", "shop"},
			wantErrOut: "nothing to restart: every pod already matches what Istio injects now (use --all to restart anyway)\n"},
		{name: "unknown namespace", objs: istio(on), args: []string{"restart", "nope"},
			wantErr: `namespace "nope" not found; check the name with: kubectl get namespaces`},
		{name: "bad concurrency", objs: istio(on), args: []string{"restart", "shop", "--concurrency", "0"},
			wantErr: "--concurrency must be at least 1, got 0"},
		{name: "bad selector", objs: istio(on), args: []string{"restart", "shop", "-l", "a in"},
			wantErr: `invalid --selector "a in": unable to parse requirement: found '' expected: '('`},
		{name: "bad output", objs: istio(on), args: []string{"restart", "shop", "-o", "table"},
			wantErr: `unable to match a printer suitable for the output format "table", allowed formats are: wide,json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`},
		{name: "-o json is for results, not the plan", objs: istio(on), args: []string{"restart", "shop", "--dry-run", "-o", "json"},
			wantErr: `--output json shows restart results; --dry-run=client prints the plan as a table: drop one of them`},
		{name: "results as json", objs: istio(on, bare), args: []string{"restart", "shop", "--delete-bare-pods", "-o", "json"},
			wantOut: `{
  "results": [
    {
      "namespace": "shop",
      "workload": "pod/debug",
      "podsBefore": 1,
      "podsAfter": 0,
      "podsWithSidecar": 0,
      "wantSidecar": true,
      "result": "deleted",
      "detail": "bare pod deleted; nothing recreates it",
      "restarted": false
    }
  ]
}
`},
		{name: "results through jsonpath", objs: istio(on, bare), args: []string{"restart", "shop", "--delete-bare-pods", "-o", "jsonpath={.results[*].workload}"},
			wantOut: "pod/debug"},
		{name: "namespaces and -A", objs: istio(on), args: []string{"restart", "shop", "-A"},
			wantErr: "give either NAMESPACE arguments or -A, not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(tt.objs, nil)
			fakeController(f, tt.sidecar, tt.ready)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if f.Out.String() != tt.wantOut {
				t.Errorf("stdout =\n%s\nwant\n%s", f.Out.String(), tt.wantOut)
			}
			if tt.wantErrOut != "" && f.ErrOut.String() != tt.wantErrOut {
				t.Errorf("stderr =\n%s\nwant\n%s", f.ErrOut.String(), tt.wantErrOut)
			}
			if got := len(patches(f)); got != tt.wantPatches {
				t.Errorf("%d patches, want %d: %v", got, tt.wantPatches, patches(f))
			}
		})
	}
}

func TestRestartForbiddenIsAggregated(t *testing.T) {
	objs := append([]runtime.Object{meshInjector(""), testNamespace("shop", "istio-injection=enabled")}, testWorkload("shop", "a", false)...)
	objs = append(objs, testWorkload("shop", "b", false)...)
	f := fake.New(objs, nil)
	f.Kube.PrependReactor("patch", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, a.(k8stesting.PatchAction).GetName(),
			fmt.Errorf(`User "alice" cannot patch resource "deployments" in API group "apps" in the namespace "shop"`))
	})
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"restart", "shop"})
	err := cmd.Execute()
	want := "2 of 2 workloads failed to restart:\n" +
		`  shop/deployment/a: cannot patch deployments in namespace shop: forbidden; ask a cluster admin to grant "patch" on deployments: deployments.apps "a" is forbidden: User "alice" cannot patch resource "deployments" in API group "apps" in the namespace "shop"` + "\n" +
		`  shop/deployment/b: cannot patch deployments in namespace shop: forbidden; ask a cluster admin to grant "patch" on deployments: deployments.apps "b" is forbidden: User "alice" cannot patch resource "deployments" in API group "apps" in the namespace "shop"`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
}

// A watch refused in one namespace fails only that namespace's workloads:
// RBAC is granted per namespace, and the other namespace's watch works.
func TestRestartWatchForbiddenInOneNamespace(t *testing.T) {
	objs := []runtime.Object{meshInjector(""), testNamespace("a", "istio-injection=enabled"), testNamespace("b", "istio-injection=enabled")}
	objs = append(objs, testWorkload("a", "web", false)...)
	objs = append(objs, testWorkload("b", "web", false)...)
	f := fake.New(objs, nil)
	fakeController(f, true, true)
	refused := make(chan struct{})
	var once sync.Once
	f.Kube.PrependWatchReactor("deployments", func(a k8stesting.Action) (bool, watch.Interface, error) {
		if a.GetNamespace() != "a" {
			return false, nil, nil
		}
		once.Do(func() { close(refused) })
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "",
			fmt.Errorf(`User "alice" cannot watch resource "deployments" in API group "apps" in the namespace "a"`))
	})
	// b's rollout finishes only after a's watch was refused.
	go func() {
		<-refused
		time.Sleep(300 * time.Millisecond)
		d, err := f.Kube.AppsV1().Deployments("b").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			return
		}
		d.Status = appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, ReadyReplicas: 1}
		_, _ = f.Kube.AppsV1().Deployments("b").UpdateStatus(context.Background(), d, metav1.UpdateOptions{})
	}()
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"restart", "a", "b", "--timeout", "10s"})
	err := cmd.Execute()
	want := "1 of 2 workloads failed to restart:\n" +
		`  a/deployment/web: cannot watch deployments in namespace a: forbidden; ask a cluster admin to grant "watch" on deployments: deployments.apps is forbidden: User "alice" cannot watch resource "deployments" in API group "apps" in the namespace "a"`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
}

// TestRestartChecksSidecarVersion: after an upgrade the control plane is
// 1.32.0; a restart whose new pod still gets 1.31.0 has not done its job.
func TestRestartChecksSidecarVersion(t *testing.T) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Namespace: "istio-system", Labels: map[string]string{"istio.io/rev": "default"}},
		Data:       map[string]string{"values": `{"revision":"","global":{"tag":"1.32.0"}}`, "config": "policy: enabled\n"},
	}
	objs := append([]runtime.Object{meshInjector(""), cm, testNamespace("shop", "istio-injection=enabled")}, rolledOut(testWorkload("shop", "web", true))...)
	f := fake.New(objs, nil)
	fakeController(f, true, true) // injects proxyv2:1.31.0

	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"restart", "shop", "--dry-run"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "WORKLOAD              PODS   SIDECAR   REASON\n" +
		"shop/deployment/web   1      1/1       sidecar 1.31.0, control plane 1.32.0\n"; f.Out.String() != want {
		t.Fatalf("plan =\n%s\nwant\n%s", f.Out.String(), want)
	}
	f.Out.Reset()
	cmd = NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"restart", "shop"})
	err := cmd.Execute()
	wantErr := "1 of 1 workloads failed to restart:\n  shop/deployment/web: pod web-new-1 has sidecar 1.31.0, expected 1.32.0 (check the injector's global.tag and the pod's sidecar.istio.io/proxyImage annotation)"
	if err == nil || err.Error() != wantErr {
		t.Fatalf("error = %v\nwant %s", err, wantErr)
	}
}
