package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

func TestStatus(t *testing.T) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Namespace: "istio-system", Labels: map[string]string{"istio.io/rev": "default"}},
		Data:       map[string]string{"values": `{"revision":"","global":{"tag":"1.31.0"}}`, "config": "policy: enabled\n"},
	}
	kube := []runtime.Object{meshInjector(""), meshInjector("canary"), cm,
		testNamespace("shop", "istio-injection=enabled"), testNamespace("cart", "istio.io/rev=canary", "istio-injection=enabled"),
		testNamespace("plain"), testNamespace("amb", "istio.io/dataplane-mode=ambient"), testNamespace("istio-system")}
	kube = append(kube, testWorkload("shop", "web", false)...)
	kube = append(kube, testWorkload("shop", "api", true)...)
	kube = append(kube, testWorkload("cart", "cart", true)...)
	kube = append(kube, testWorkload("plain", "batch", false)...)
	mode := func(ns, name string, m securityv1beta1.PeerAuthentication_MutualTLS_Mode, sel map[string]string) runtime.Object {
		pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		pa.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
		if sel != nil {
			pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		return pa
	}
	istio := []runtime.Object{
		mode("istio-system", "default", securityv1beta1.PeerAuthentication_MutualTLS_STRICT, nil),
		mode("plain", "default", securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE, nil),
		mode("shop", "web", securityv1beta1.PeerAuthentication_MutualTLS_DISABLE, map[string]string{"app": "web"}),
	}
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "all namespaces", args: []string{"status", "-A"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE      INJECTION              WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
amb            ambient (no ztunnel)   0/0                      0                      -                  STRICT
cart           sidecar                1/1                      0                      1.31.0             STRICT
istio-system   off                    0/0                      0                      -                  STRICT
plain          off                    0/1                      0                      -                  PERMISSIVE
shop           sidecar                1/2                      1                      1.31.0             STRICT

AMBIENT   ENROLLED    PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT   SERVICE WAYPOINTS   PROBLEMS
amb       namespace   0/0               0           0         -          0                   -
`},
		{name: "one namespace, wide", args: []string{"status", "-n", "shop", "-o", "wide"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS                                        NEEDS RESTART    CONFLICTS   WORKLOAD POLICIES
shop        sidecar     1/2                      1                      1.31.0             STRICT (mesh policy istio-system/default)   deployment/web   -           1
`},
		{name: "conflicts in wide", args: []string{"status", "-n", "cart", "-o", "wide"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                        ISTIOD
canary     -      -         istio-sidecar-injector-canary   -
default    -      1.31.0    istio-sidecar-injector          -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS                                        NEEDS RESTART   CONFLICTS                                               WORKLOAD POLICIES
cart        sidecar     1/1                      0                      1.31.0             STRICT (mesh policy istio-system/default)   -               istio-injection=enabled overrides istio.io/rev=canary   0
`},
		{name: "json", args: []string{"status", "-n", "plain", "-o", "json"}, wantOut: `{
  "controlPlanes": [
    {
      "revision": "canary",
      "injector": "istio-sidecar-injector-canary"
    },
    {
      "revision": "default",
      "version": "1.31.0",
      "namespace": "istio-system",
      "injector": "istio-sidecar-injector"
    }
  ],
  "injectorFound": true,
  "namespaces": [
    {
      "name": "plain",
      "injection": "off",
      "workloads": 1,
      "workloadsWithSidecar": 0,
      "pods": 1,
      "podsWithSidecar": 0,
      "podsNeedingRestart": 0,
      "versionSkew": false,
      "mtls": "PERMISSIVE (namespace policy default)"
    }
  ]
}
`},
		{name: "unknown namespace", args: []string{"status", "-n", "nope"}, wantErr: `namespace "nope" not found; check the name with: kubectl get namespaces`},
		{name: "bad output", args: []string{"status", "-o", "table"}, wantErr: `unable to match a printer suitable for the output format "table", allowed formats are: wide,json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`},
		{name: "jsonpath", args: []string{"status", "-A", "-o", "jsonpath={.namespaces[*].name} {.controlPlanes[0].revision}"}, wantOut: "amb cart istio-system plain shop canary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(kube, istio)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Out.String() != tt.wantOut {
				t.Errorf("stdout =\n%s\nwant\n%s", f.Out.String(), tt.wantOut)
			}
			if f.ErrOut.String() != "" {
				t.Errorf("stderr = %q", f.ErrOut.String())
			}
		})
	}
}

// namespaceAdmin makes f refuse, as the API server refuses a user with the
// admin role bound in one namespace, every read of cluster-scoped objects
// and every list across all namespaces; and unless canLabel, patches of
// Namespaces.
func namespaceAdmin(f *fake.Options, canLabel bool) {
	refuse := func(a k8stesting.Action) (bool, runtime.Object, error) {
		res := a.GetResource()
		if a.GetNamespace() != "" || res.Resource == "namespaces" && a.GetVerb() == "get" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(res.GroupResource(), "",
			fmt.Errorf(`User "ann" cannot %s resource %q in API group %q at the cluster scope`, a.GetVerb(), res.Resource, res.Group))
	}
	f.Kube.PrependReactor("list", "*", refuse)
	// Kubernetes' admin role covers no Istio resources.
	f.Istio.PrependReactor("list", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", fmt.Errorf("no"))
	})
	if !canLabel {
		f.Kube.PrependReactor("patch", "namespaces", refuse)
	}
}

// TestNamespaceAdmin: with only namespace rights (and for labelling, a
// right on their Namespace object), status, restart and enable-injection work from Istio's standard webhook selectors and say on
// stderr what they could not check; labelling the namespace needs a right
// a namespace admin lacks, and says which.
func TestNamespaceAdmin(t *testing.T) {
	const notes = `note: could not check the sidecar injector webhooks (injection is judged by the selectors of Istio's standard injector webhooks); a ClusterRole and ClusterRoleBinding granting "list" on mutatingwebhookconfigurations.admissionregistration.k8s.io would let it
note: could not check the istiod Deployments (istiod's version is read from the injector ConfigMap only); a ClusterRole and ClusterRoleBinding granting "list" on deployments.apps would let it
note: could not check the injector ConfigMaps (the chart's default injection policy is assumed and the injected proxy version is not known); a ClusterRole and ClusterRoleBinding granting "list" on configmaps would let it
note: could not check ztunnel (ambient namespaces are not checked for the node proxy that captures their traffic); a ClusterRole and ClusterRoleBinding granting "list" on daemonsets.apps would let it
`
	objects := func() []runtime.Object {
		objs := []runtime.Object{meshInjector(""), testNamespace("shop", "istio-injection=enabled"), testNamespace("cart")}
		objs = append(objs, testWorkload("shop", "web", false)...)
		objs = append(objs, testWorkload("shop", "api", true)...)
		return append(objs, testWorkload("cart", "cart", false)...)
	}
	tests := []struct {
		name                string
		args                []string
		wantOut, wantErrOut string
		wantErr             string
	}{
		{name: "status", args: []string{"status", "-n", "shop"}, wantOut: `Control plane: not readable with your permissions (see the notes)

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
shop        sidecar     1/2                      1                      1.31.0             unknown
`, wantErrOut: notes + `note: could not check PeerAuthentications (mTLS modes are shown as unknown); a ClusterRole and ClusterRoleBinding granting "list" on peerauthentications.security.istio.io would let it
`},
		{name: "restart plan", args: []string{"restart", "shop", "--dry-run"}, wantOut: `WORKLOAD              PODS   SIDECAR   REASON
shop/deployment/web   1      0/1       1/1 pods have no sidecar
`, wantErrOut: notes},
		{name: "enable-injection, server dry run", args: []string{"enable-injection", "cart", "--dry-run=server"}, wantOut: "namespace/cart labeled (server dry run)\n",
			wantErrOut: notes + "1 workload needs a restart: deployment/cart — run: kubectl mesh restart cart\n"},
		{name: "enable-injection of a revision", args: []string{"enable-injection", "cart", "--revision", "canary", "--dry-run=server"}, wantOut: "namespace/cart labeled (server dry run)\n",
			wantErrOut: notes + "note: namespace/cart: could not check that revision canary is installed; pods get no sidecar if it is not\n1 workload needs a restart: deployment/cart — run: kubectl mesh restart cart\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(objects(), nil)
			namespaceAdmin(f, true)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if err != nil {
				t.Fatalf("error: %v\nstderr:\n%s", err, f.ErrOut)
			}
			if got := f.Out.String(); got != tt.wantOut {
				t.Errorf("stdout =\n%s\nwant\n%s", got, tt.wantOut)
			}
			if got := f.ErrOut.String(); got != tt.wantErrOut {
				t.Errorf("stderr =\n%s\nwant\n%s", got, tt.wantErrOut)
			}
		})
	}

	// Labelling for real is refused before anything changes.
	f := fake.New(objects(), nil)
	namespaceAdmin(f, false)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"enable-injection", "cart"})
	err := cmd.Execute()
	if err == nil || !strings.HasPrefix(err.Error(), "cannot label namespace cart: patching the Namespace object is forbidden, so nothing was changed. A Namespace is cluster-scoped") {
		t.Fatalf("error = %v", err)
	}
	if got := nsLabels(t, f, "cart"); got != "" {
		t.Errorf("cart labels = %q, want none", got)
	}
}

// ambientFake is an ambient namespace amb whose label names the waypoint
// "waypoint" (a Gateway only when withWaypoint), with a ztunnel DaemonSet
// whose pod runs on node1 only: web on node1 is captured, web2 on node2
// has no ztunnel, legacy has a sidecar, opt is labelled
// istio.io/dataplane-mode=none; Service api names its own waypoint, which
// exists and is programmed but has no proxy pod yet. The waypoint, when
// there, has a ready proxy pod as istiod's waypoint template makes it,
// and is programmed unless pending (the Gateway CRD's default status).
func ambientFake(withWaypoint bool) *fake.Options { return ambientFakeWith(withWaypoint, false) }

func ambientFakeWith(withWaypoint, pending bool) *fake.Options {
	onNode := func(objs []runtime.Object, node string) []runtime.Object {
		objs[1].(*corev1.Pod).Spec.NodeName = node
		return objs
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel"},
		Spec:   appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 2, NumberReady: 1}}
	zt := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel-7xk2p", Labels: map[string]string{"app": "ztunnel"}},
		Spec:   corev1.PodSpec{NodeName: "node1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	opt := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "amb", Name: "opt", Labels: map[string]string{"istio.io/dataplane-mode": "none"}},
		Spec: corev1.PodSpec{NodeName: "node1", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	api := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "amb", Name: "api", Labels: map[string]string{"istio.io/use-waypoint": "api-waypoint"}}}
	kube := []runtime.Object{meshInjector(""), testNamespace("amb", "istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint"),
		testNamespace("istio-system"), ds, zt, opt, api}
	kube = append(kube, onNode(testWorkload("amb", "web", false), "node1")...)
	kube = append(kube, onNode(testWorkload("amb", "web2", false), "node2")...)
	kube = append(kube, onNode(testWorkload("amb", "legacy", true), "node1")...)
	if withWaypoint {
		wp := testWorkload("amb", "waypoint", true)
		proxy := map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint", "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
			"istio.io/dataplane-mode": "none", "pod-template-hash": "5d9c7"}
		wp[0].(*appsv1.Deployment).Spec.Template.Labels = proxy
		pod := wp[1].(*corev1.Pod)
		pod.Labels, pod.Spec.NodeName = proxy, "node2"
		pod.Spec.Containers = pod.Spec.Containers[1:]
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		kube = append(kube, wp...)
	}
	f := fake.New(kube, nil)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{traffic.Gateways: "GatewayList"})
	gws := []string{"api-waypoint"}
	if withWaypoint {
		gws = append(gws, "waypoint")
	}
	for _, name := range gws {
		programmed := map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": int64(1),
			"message": "Resource programmed, assigned to service(s) " + name + ".amb.svc.cluster.local:15008"}
		if pending && name == "waypoint" {
			programmed = map[string]any{"type": "Programmed", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller"}
		}
		gw := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
			"metadata": map[string]any{"namespace": "amb", "name": name, "generation": int64(1)}, "spec": map[string]any{"gatewayClassName": "istio-waypoint"},
			"status": map[string]any{"conditions": []any{programmed}}}}
		if err := dyn.Tracker().Create(traffic.Gateways, gw, "amb"); err != nil {
			panic(err)
		}
	}
	f.Dynamic = dyn
	f.SetClients(options.Clients{Kube: f.Kube, Istio: f.Istio, Dynamic: dyn, Discovery: memory.NewMemCacheClient(f.Kube.Discovery())})
	return f
}

// TestStatusAmbient: the ambient table, its pods in wide and JSON, a
// waypoint that is missing and then exists, and a namespace admin told
// what their rights leave unchecked.
func TestStatusAmbient(t *testing.T) {
	tests := []struct {
		name                string
		args                []string
		withWaypoint, admin bool
		pending             bool
		wantOut, wantErrOut string
	}{
		{name: "waypoint missing", args: []string{"status", "-n", "amb"}, wantOut: `REVISION   TAGS   VERSION   INJECTOR                 ISTIOD
default    -      -         istio-sidecar-injector   -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
amb         ambient     1/4                      1                      1.31.0             PERMISSIVE

AMBIENT   ENROLLED    PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT             SERVICE WAYPOINTS   PROBLEMS
amb       namespace   2/4               1           1         waypoint (missing)   1                   no ztunnel on node node2 (1 pod not captured); waypoint amb/waypoint missing; service api: waypoint amb/api-waypoint no ready pod; 1 pod with a sidecar (the sidecar takes precedence over ambient)
`},
		{name: "waypoint exists, wide", args: []string{"status", "-n", "amb", "-o", "wide"}, withWaypoint: true, wantOut: `REVISION   TAGS   VERSION   INJECTOR                 ISTIOD
default    -      -         istio-sidecar-injector   -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS                   NEEDS RESTART       CONFLICTS   WORKLOAD POLICIES
amb         ambient     1/4                      1                      1.31.0             PERMISSIVE (default)   deployment/legacy   -           0

AMBIENT   ENROLLED    PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT   SERVICE WAYPOINTS   PROBLEMS
amb       namespace   2/4               1           1         waypoint   1                   no ztunnel on node node2 (1 pod not captured); service api: waypoint amb/api-waypoint no ready pod; 1 pod with a sidecar (the sidecar takes precedence over ambient)

POD                     NODE    DATAPLANE                   ZTUNNEL                      PROBLEM
amb/legacy-5d9c7-x1     node1   sidecar, not ztunnel        -                            the sidecar takes precedence: Istio does not redirect a pod with a sidecar to ztunnel
amb/opt                 node1   opted out (pod label)       -                            -
amb/waypoint-5d9c7-x1   node2   waypoint proxy              -                            -
amb/web-5d9c7-x1        node1   ambient (namespace label)   istio-system/ztunnel-7xk2p   -
amb/web2-5d9c7-x1       node2   ambient (namespace label)   -                            no ready ztunnel on node node2
`},
		{name: "waypoint not programmed", args: []string{"status", "-n", "amb"}, withWaypoint: true, pending: true, wantOut: `REVISION   TAGS   VERSION   INJECTOR                 ISTIOD
default    -      -         istio-sidecar-injector   -

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
amb         ambient     1/4                      1                      1.31.0             PERMISSIVE

AMBIENT   ENROLLED    PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT                    SERVICE WAYPOINTS   PROBLEMS
amb       namespace   2/4               1           1         waypoint (not programmed)   1                   no ztunnel on node node2 (1 pod not captured); waypoint amb/waypoint not programmed: Programmed=Unknown (Pending: Waiting for controller), so no controller has taken it; service api: waypoint amb/api-waypoint no ready pod; 1 pod with a sidecar (the sidecar takes precedence over ambient)
`},
		{name: "namespace admin", args: []string{"status", "-n", "amb"}, withWaypoint: true, admin: true, wantOut: `Control plane: not readable with your permissions (see the notes)

NAMESPACE   INJECTION   WORKLOADS WITH SIDECAR   PODS NEEDING RESTART   SIDECAR VERSIONS   MTLS
amb         ambient     1/4                      1                      1.31.0             unknown

AMBIENT   ENROLLED    PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT               SERVICE WAYPOINTS   PROBLEMS
amb       namespace   2/4               1           1         waypoint (unchecked)   1                   1 pod with a sidecar (the sidecar takes precedence over ambient)
`, wantErrOut: `note: could not check the sidecar injector webhooks (injection is judged by the selectors of Istio's standard injector webhooks); a ClusterRole and ClusterRoleBinding granting "list" on mutatingwebhookconfigurations.admissionregistration.k8s.io would let it
note: could not check the istiod Deployments (istiod's version is read from the injector ConfigMap only); a ClusterRole and ClusterRoleBinding granting "list" on deployments.apps would let it
note: could not check the injector ConfigMaps (the chart's default injection policy is assumed and the injected proxy version is not known); a ClusterRole and ClusterRoleBinding granting "list" on configmaps would let it
note: could not check ztunnel (ambient namespaces are not checked for the node proxy that captures their traffic); a ClusterRole and ClusterRoleBinding granting "list" on daemonsets.apps would let it
note: could not check PeerAuthentications (mTLS modes are shown as unknown); a ClusterRole and ClusterRoleBinding granting "list" on peerauthentications.security.istio.io would let it
note: could not check the waypoint Gateways (waypoints named by istio.io/use-waypoint are shown as unchecked); a ClusterRole and ClusterRoleBinding granting "list" on gateways.gateway.networking.k8s.io would let it
note: could not check the ztunnel pods (whether a ready ztunnel runs on each ambient pod's node is not known); a ClusterRole and ClusterRoleBinding granting "list" on pods would let it
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ambientFakeWith(tt.withWaypoint, tt.pending)
			if tt.admin {
				namespaceAdmin(f, false)
				f.Dynamic.PrependReactor("list", "gateways", func(a k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", fmt.Errorf("no"))
				})
			}
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			if err := cmd.Execute(); err != nil {
				t.Fatalf("error: %v\nstderr:\n%s", err, f.ErrOut)
			}
			if got := f.Out.String(); got != tt.wantOut {
				t.Errorf("stdout =\n%s\nwant\n%s", got, tt.wantOut)
			}
			if got := f.ErrOut.String(); got != tt.wantErrOut {
				t.Errorf("stderr =\n%s\nwant\n%s", got, tt.wantErrOut)
			}
		})
	}

	// JSON has each pod's dataplane, its ztunnel and its problem.
	f := ambientFake(false)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"status", "-n", "amb", "-o", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Ambient     json.RawMessage `json:"ambient"`
		AmbientPods json.RawMessage `json:"ambientPods"`
	}
	if err := json.Unmarshal(f.Out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, raw := range []json.RawMessage{rep.Ambient, rep.AmbientPods} {
		if err := json.Compact(&got, raw); err != nil {
			t.Fatal(err)
		}
		got.WriteString("\n")
	}
	const wantJSON = `[{"name":"amb","enrolled":true,"waypoint":{"namespace":"amb","name":"waypoint","state":"missing"},"serviceWaypoints":[{"service":"api","waypoint":{"namespace":"amb","name":"api-waypoint","state":"no ready pod","readyPods":0}}],"pods":4,"podsAmbient":2,"podsOptedOut":1,"podsSidecar":1,"podsNoZtunnel":1,"podsHostNetwork":0,"problems":["no ztunnel on node node2 (1 pod not captured)","waypoint amb/waypoint missing","service api: waypoint amb/api-waypoint no ready pod","1 pod with a sidecar (the sidecar takes precedence over ambient)"]}]
[{"namespace":"amb","name":"legacy-5d9c7-x1","node":"node1","dataplane":"sidecar","enrolledBy":"namespace","problem":"the sidecar takes precedence: Istio does not redirect a pod with a sidecar to ztunnel"},{"namespace":"amb","name":"opt","node":"node1","dataplane":"opted-out","enrolledBy":"namespace"},{"namespace":"amb","name":"web-5d9c7-x1","node":"node1","dataplane":"ambient","enrolledBy":"namespace","ztunnel":"istio-system/ztunnel-7xk2p"},{"namespace":"amb","name":"web2-5d9c7-x1","node":"node2","dataplane":"ambient","enrolledBy":"namespace","problem":"no ready ztunnel on node node2"}]
`
	if got.String() != wantJSON {
		t.Errorf("json =\n%s\nwant\n%s", got.String(), wantJSON)
	}
}
