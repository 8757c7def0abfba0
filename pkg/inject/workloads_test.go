package inject

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestSelect(t *testing.T) {
	nsOn := namespace("on", map[string]string{LabelInjection: "enabled"})
	nsOff := namespace("off", nil)
	nsCanary := namespace("canary", map[string]string{LabelRev: "canary"})
	plain := deployment("on", "plain", 2, nil, nil)
	optOut := deployment("on", "opt-out", 1, map[string]string{LabelSidecarInject: "false"}, nil)
	done := deployment("on", "done", 1, nil, nil)
	old := deployment("on", "old", 1, nil, nil)
	pinned := deployment("on", "pinned", 1, nil, map[string]string{AnnotationProxyImage: "docker.io/istio/proxyv2:1.30.0"})
	distroless := deployment("on", "distroless", 1, nil, nil)
	half := deployment("on", "half", 2, nil, nil)
	zero := deployment("on", "zero", 0, nil, nil)
	leftover := deployment("off", "leftover", 1, nil, nil)
	moved := deployment("canary", "moved", 1, nil, nil)
	gateway := deployment("off", "ingress", 1, map[string]string{LabelSidecarInject: "false"}, nil)
	gateway.Spec.Template.Spec.Containers = []corev1.Container{{Name: ProxyContainer, Image: "docker.io/istio/proxyv2:1.31.0"}}
	gatewayPod := pod(gateway, 0, "", "")
	paused := deployment("on", "paused", 1, nil, nil)
	paused.Spec.Paused = true
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "on", Name: "bare", Labels: map[string]string{"app": "bare"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	terminating := pod(plain, 3, "", "")
	terminating.DeletionTimestamp = &metav1.Time{}
	objs := []runtime.Object{
		injectorMWC("", ""), injectorCM("", "1.31.0", "policy: enabled\n"), injectorMWC("canary", ""), injectorCM("canary", "1.31.0", "policy: enabled\n"),
		nsOn, nsOff, nsCanary, gateway, gatewayPod, plain, optOut, done, old, pinned, distroless, half, zero, leftover, moved, paused, bare,
		pod(plain, 0, "", ""), pod(plain, 1, "", ""), terminating,
		pod(optOut, 0, "", ""),
		pod(done, 0, "default", "1.31.0"),
		pod(old, 0, "default", "1.30.0"),
		pod(pinned, 0, "default", "1.30.0"),
		pod(distroless, 0, "default", "1.31.0-distroless"),
		pod(half, 0, "default", "1.31.0"), pod(half, 1, "", ""),
		pod(leftover, 0, "default", "1.31.0"),
		pod(moved, 0, "default", "1.31.0"),
		pod(paused, 0, "", ""),
	}
	kube := kubefake.NewClientset(objs...)
	inv := inventory(t, objs...)
	r := NewRules(inv)
	snap, err := Collect(context.Background(), kube, Scope{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, tg := range r.Select(snap, RestartConfig{}) {
		fmt.Fprintf(&got, "%s/%s: %s\n", tg.Workload.Namespace, tg.Workload.Ref(), tg.Assessment.Why)
	}
	want := `canary/deployment/moved: sidecar from revision default, new pods get canary
off/deployment/leftover: 1/1 pods have a sidecar but new pods get none (injection not enabled)
on/deployment/half: 1/2 pods have no sidecar
on/deployment/old: sidecar 1.30.0, control plane 1.31.0
on/deployment/paused: 1/1 pods have no sidecar
on/deployment/plain: 2/2 pods have no sidecar
on/pod/bare: 1/1 pods have no sidecar
`
	if got.String() != want {
		t.Errorf("Select() =\n%s\nwant\n%s", got.String(), want)
	}
}

// countLists counts LIST calls per resource.
func countLists(actions []k8stesting.Action) map[string]int {
	n := map[string]int{}
	for _, a := range actions {
		if a.GetVerb() == "list" {
			n[a.GetResource().Resource]++
		}
	}
	return n
}

func TestBuildStatusListCallsAreConstant(t *testing.T) {
	for _, namespaces := range []int{1, 30} {
		objs := []runtime.Object{injectorMWC("", ""), injectorCM("", "1.31.0", "policy: enabled\n")}
		for i := 0; i < namespaces; i++ {
			ns := fmt.Sprintf("ns-%02d", i)
			d := deployment(ns, "app", 2, nil, nil)
			objs = append(objs, namespace(ns, map[string]string{LabelInjection: "enabled"}), d, pod(d, 0, "default", "1.31.0"), pod(d, 1, "", ""))
		}
		kube := kubefake.NewClientset(objs...)
		istio := istiofake.NewSimpleClientset()
		rep, err := BuildStatus(context.Background(), kube, istio, Scope{AllNamespaces: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Namespaces) != namespaces {
			t.Fatalf("%d namespaces reported, want %d", len(rep.Namespaces), namespaces)
		}
		lists := countLists(append(kube.Actions(), istio.Actions()...))
		want := map[string]int{"mutatingwebhookconfigurations": 1, "deployments": 2, "configmaps": 1, "namespaces": 1,
			"pods": 1, "statefulsets": 1, "daemonsets": 2, "peerauthentications": 1}
		if fmt.Sprint(lists) != fmt.Sprint(want) {
			t.Errorf("%d namespaces: LIST calls %v, want %v", namespaces, lists, want)
		}
		total := len(kube.Actions()) + len(istio.Actions())
		if total != 10 {
			t.Errorf("%d namespaces: %d API calls, want 10", namespaces, total)
		}
		st := rep.Namespaces[0]
		if st.Pods != 2 || st.PodsWithSidecar != 1 || st.PodsNeedingRestart != 2 || st.WorkloadsWithSidecar != 0 || st.Workloads != 1 {
			t.Errorf("namespace status = %+v", st)
		}
	}
}

// TestSelectDistrolessIstiod: with istiod and its proxies on the distroless
// variant (global.variant=distroless) nothing is skew; an older proxy still
// is; native sidecars count, a one-shot init container named istio-proxy
// does not.
func TestSelectDistrolessIstiod(t *testing.T) {
	istiod := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod", Labels: map[string]string{"app": "istiod"}}}
	istiod.Spec.Template.Spec.Containers = []corev1.Container{{Name: "discovery", Image: "docker.io/istio/pilot:1.31.0-distroless"}}
	ns := namespace("on", map[string]string{LabelInjection: "enabled"})
	current := deployment("on", "current", 1, nil, nil)
	plainTag := deployment("on", "plain-tag", 1, nil, nil)
	old := deployment("on", "old", 1, nil, nil)
	native := deployment("on", "native", 1, nil, nil)
	oneShot := deployment("on", "one-shot", 1, nil, nil)
	nativePod := pod(native, 0, "", "")
	nativePod.Labels[LabelRev] = "default"
	nativePod.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, Image: "docker.io/istio/proxyv2:1.31.0-distroless", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)}}
	oneShotPod := pod(oneShot, 0, "", "")
	oneShotPod.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, Image: "docker.io/istio/proxyv2:1.31.0-distroless"}}
	objs := []runtime.Object{injectorMWC("", ""), injectorCM("", "1.31.0", "policy: enabled\n"), istiod, ns, current, plainTag, old, native, oneShot,
		pod(current, 0, "default", "1.31.0-distroless"), pod(plainTag, 0, "default", "1.31.0"), pod(old, 0, "default", "1.30.0-distroless"), nativePod, oneShotPod}
	kube := kubefake.NewClientset(objs...)
	r := NewRules(inventory(t, objs...))
	snap, err := Collect(context.Background(), kube, Scope{Namespaces: []string{"on"}})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, tg := range r.Select(snap, RestartConfig{}) {
		fmt.Fprintf(&got, "%s/%s: %s\n", tg.Workload.Namespace, tg.Workload.Ref(), tg.Assessment.Why)
	}
	want := `on/deployment/old: sidecar 1.30.0, control plane 1.31.0
on/deployment/one-shot: 1/1 pods have no sidecar
`
	if got.String() != want {
		t.Errorf("Select() =\n%s\nwant\n%s", got.String(), want)
	}
	rep, err := BuildStatus(context.Background(), kube, istiofake.NewSimpleClientset(), Scope{Namespaces: []string{"on"}})
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Namespaces[0]
	if fmt.Sprint(st.SidecarVersions, st.VersionSkew, st.WorkloadsWithSidecar, st.NeedRestart) != "[1.30.0 1.31.0] true 4 [deployment/old deployment/one-shot]" {
		t.Errorf("status: versions %v skew %v with sidecar %d need restart %v", st.SidecarVersions, st.VersionSkew, st.WorkloadsWithSidecar, st.NeedRestart)
	}
}
