package cmd

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// meshInjector is the default-revision injector webhook configuration as
// Istio's chart renders it (two of its four webhooks suffice here), or a
// revision's when rev is not "".
func meshInjector(rev string) *admissionregistrationv1.MutatingWebhookConfiguration {
	name, sel := "istio-sidecar-injector", "default"
	if rev != "" {
		name, sel = name+"-"+rev, rev
	}
	req := func(k string, op metav1.LabelSelectorOperator, v ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: k, Operator: op, Values: v}
	}
	notFalse := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("sidecar.istio.io/inject", metav1.LabelSelectorOpNotIn, "false")}}
	c := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"istio.io/rev": sel}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "rev.namespace.sidecar-injector.istio.io",
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				req("istio.io/rev", metav1.LabelSelectorOpIn, sel), req("istio-injection", metav1.LabelSelectorOpDoesNotExist)}},
			ObjectSelector: notFalse,
		}},
	}
	if rev == "" {
		c.Webhooks = append(c.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name:              "namespace.sidecar-injector.istio.io",
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req("istio-injection", metav1.LabelSelectorOpIn, "enabled")}},
			ObjectSelector:    notFalse,
		})
	}
	return c
}

func testNamespace(name string, labels ...string) *corev1.Namespace {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for _, kv := range labels {
		k, v, _ := strings.Cut(kv, "=")
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

// testWorkload is a Deployment with one running pod, with or without a
// sidecar of the default revision.
func testWorkload(ns, name string, sidecar bool) []runtime.Object {
	one := int32(1)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}}}},
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-5d9c7-x1", Labels: map[string]string{"app": name, "pod-template-hash": "5d9c7"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: name + "-5d9c7", Controller: &[]bool{true}[0]}}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if sidecar {
		p.Labels["istio.io/rev"] = "default"
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "docker.io/istio/proxyv2:1.31.0"})
	}
	return []runtime.Object{d, p}
}

func patches(f *fake.Options) []string {
	var out []string
	for _, a := range f.Kube.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			out = append(out, fmt.Sprintf("%s %s/%s %s", p.GetResource().Resource, p.GetNamespace(), p.GetName(), p.GetPatch()))
		}
	}
	return out
}

func nsLabels(t *testing.T, f *fake.Options, name string) string {
	t.Helper()
	ns, err := f.Kube.CoreV1().Namespaces().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kv []string
	for k, v := range ns.Labels {
		if k != "kubernetes.io/metadata.name" {
			kv = append(kv, k+"="+v)
		}
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func TestEnableDisableInjection(t *testing.T) {
	withIstio := func(objs ...runtime.Object) []runtime.Object {
		return append([]runtime.Object{meshInjector(""), meshInjector("canary")}, objs...)
	}
	shopWeb := func(labels ...string) []runtime.Object {
		return append([]runtime.Object{testNamespace("shop", labels...)}, testWorkload("shop", "web", false)...)
	}
	tests := []struct {
		name       string
		objs       []runtime.Object
		args       []string
		wantOut    string
		wantErrOut string
		wantErr    string
		wantLabels string // shop's labels afterwards
		wantPatch  bool
	}{
		{name: "enable default", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop"},
			wantOut:    "namespace/shop labeled\n",
			wantErrOut: "1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n",
			wantLabels: "istio-injection=enabled", wantPatch: true},
		{name: "enable is idempotent", objs: withIstio(shopWeb("istio-injection=enabled")...), args: []string{"enable-injection", "shop"},
			wantOut:    "namespace/shop already enabled\n",
			wantErrOut: "1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n",
			wantLabels: "istio-injection=enabled"},
		{name: "enable revision fixes istio-injection", objs: withIstio(shopWeb("istio-injection=enabled")...),
			args:    []string{"enable-injection", "shop", "--revision", "canary"},
			wantOut: "namespace/shop labeled\n",
			wantErrOut: "note: namespace/shop: removing istio-injection=enabled: it takes precedence over istio.io/rev\n" +
				"1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n",
			wantLabels: "istio.io/rev=canary", wantPatch: true},
		{name: "enable with -n", objs: withIstio(append(shopWeb(), testNamespace("other"))...), args: []string{"enable-injection", "-n", "other"},
			wantOut:    "namespace/other labeled\n",
			wantErrOut: "no workloads in other need a restart\n",
			wantPatch:  true},
		{name: "client dry run prints the object and changes nothing", objs: withIstio(shopWeb()...),
			args:    []string{"enable-injection", "shop", "--dry-run=client", "-o", "jsonpath={.metadata.labels.istio-injection}"},
			wantOut: "enabled", wantErrOut: "1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n"},
		{name: "dry run -o name", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "--dry-run=client", "-o", "name"},
			wantOut: "namespace/shop\n", wantErrOut: "1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n"},
		{name: "dry run message", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "--dry-run=client"},
			wantOut: "namespace/shop labeled (dry run)\n", wantErrOut: "1 workload needs a restart: deployment/web — run: kubectl mesh restart shop\n"},
		{name: "unknown revision", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "--revision", "nope"},
			wantErr: `revision "nope" not found; revisions and tags installed: canary, default (pass one of them to --revision)`},
		{name: "no istio", objs: shopWeb(), args: []string{"enable-injection", "shop"},
			wantErr: "no Istio sidecar injector found (no MutatingWebhookConfiguration with a *.sidecar-injector.istio.io webhook); install Istio first"},
		{name: "unknown namespace leaves the others alone", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "nope"},
			wantErr: `namespace "nope" not found; check the name with: kubectl get namespaces`},
		{name: "ambient and revision", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "--ambient", "--revision", "canary"},
			wantErr: "--ambient and --revision cannot be combined: ambient namespaces are not injected"},
		{name: "bad dry-run", objs: withIstio(shopWeb()...), args: []string{"enable-injection", "shop", "--dry-run=maybe"},
			wantErr: `Invalid dry-run value (maybe). Must be "none", "server", or "client".`},
		{name: "disable", objs: withIstio(append(shopWeb("istio-injection=enabled"), testWorkload("shop", "api", true)...)...),
			args:       []string{"disable-injection", "shop"},
			wantOut:    "namespace/shop labeled\n",
			wantErrOut: "1 workload needs a restart: deployment/api — run: kubectl mesh restart shop\n",
			wantPatch:  true},
		{name: "disable twice", objs: withIstio(shopWeb()...), args: []string{"disable-injection", "shop"},
			wantOut: "namespace/shop already disabled\n", wantErrOut: "no workloads in shop need a restart\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(tt.objs, nil)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
				}
				if p := patches(f); len(p) > 0 {
					t.Errorf("patched after an error: %v", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Out.String() != tt.wantOut {
				t.Errorf("stdout =\n%q\nwant\n%q", f.Out.String(), tt.wantOut)
			}
			if f.ErrOut.String() != tt.wantErrOut {
				t.Errorf("stderr =\n%q\nwant\n%q", f.ErrOut.String(), tt.wantErrOut)
			}
			if got := nsLabels(t, f, "shop"); got != tt.wantLabels {
				t.Errorf("shop labels = %q, want %q", got, tt.wantLabels)
			}
			if got := len(patches(f)) > 0; got != tt.wantPatch {
				t.Errorf("patched = %v, want %v (%v)", got, tt.wantPatch, patches(f))
			}
		})
	}
}

func TestEnableInjectionForbidden(t *testing.T) {
	f := fake.New([]runtime.Object{meshInjector(""), testNamespace("shop"), testNamespace("cart")}, nil)
	f.Kube.PrependReactor("patch", "namespaces", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, a.(k8stesting.PatchAction).GetName(),
			fmt.Errorf(`User "alice" cannot patch resource "namespaces" in API group "" at the cluster scope`))
	})
	f.Kube.PrependReactor("create", "selfsubjectreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := &authenticationv1.SelfSubjectReview{}
		r.Status.UserInfo.Username = "alice"
		return true, r, nil
	})
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"enable-injection", "shop", "cart"})
	err := cmd.Execute()
	want := `cannot label namespace shop: patching the Namespace object is forbidden, so nothing was changed. A Namespace is cluster-scoped, so the admin role bound inside shop does not cover it; ask a cluster admin to grant "patch" on namespaces/shop:
  kubectl create clusterrole label-namespace-shop --verb=get,patch --resource=namespaces --resource-name=shop
  kubectl create clusterrolebinding label-namespace-shop --clusterrole=label-namespace-shop --user=alice
(namespaces "shop" is forbidden: User "alice" cannot patch resource "namespaces" in API group "" at the cluster scope)`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
	if f.Out.String() != "" {
		t.Errorf("stdout = %q, want nothing", f.Out.String())
	}
	// Only the dry-run attempt on the first namespace was made.
	if p := patches(f); len(p) != 1 {
		t.Errorf("patch calls = %v", p)
	}
}

// waypointObjects is an ambient mesh (injector and a ready ztunnel) and
// namespace shop with the given labels.
func waypointObjects(nsLabels ...string) []runtime.Object {
	one := int32(1)
	z := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel", Labels: map[string]string{"app": "ztunnel"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: one, NumberReady: one}}
	return []runtime.Object{meshInjector(""), z, testNamespace("shop", nsLabels...)}
}

// waypointDeployment is the Deployment istiod deploys for a waypoint,
// available.
func waypointDeployment(name string) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name,
		Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": name}},
		Spec: appsv1.DeploymentSpec{Replicas: &one},
		Status: appsv1.DeploymentStatus{Replicas: 1, AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}}}
}

func gatewayObject(name, class string, annotations map[string]interface{}, conditions ...map[string]interface{}) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]interface{}{"name": name, "namespace": "shop"},
		"spec":     map[string]interface{}{"gatewayClassName": class},
	}}
	if annotations != nil {
		u.SetAnnotations(map[string]string{})
		for k, v := range annotations {
			unstructured.SetNestedField(u.Object, v, "metadata", "annotations", k)
		}
	}
	if len(conditions) > 0 {
		var c []interface{}
		for _, m := range conditions {
			c = append(c, m)
		}
		unstructured.SetNestedSlice(u.Object, c, "status", "conditions")
	}
	return u
}

// gateways lists the Gateways in shop as name:createdByUs.
func gateways(t *testing.T, f *fake.Options) string {
	t.Helper()
	list, err := f.Dynamic.Resource(traffic.Gateways).Namespace("shop").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range list.Items {
		out = append(out, fmt.Sprintf("%s:%v", g.GetName(), inject.CreatedByUs(&g)))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

const waypointYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  annotations:
    inject.kubectl-mesh.io/created-by: kubectl-mesh enable-injection
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: v1
kind: Namespace
metadata:
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
    kubernetes.io/metadata.name: shop
  name: shop
spec: {}
status: {}
`

func TestEnableInjectionWaypoint(t *testing.T) {
	const ready = "no workloads in shop need a restart\n" +
		"waiting up to 1m0s for the waypoint's deployment shop/waypoint\n" +
		"waypoint shop/waypoint ready: deployment shop/waypoint has 1 available, and istiod has programmed the Gateway\n"
	forbidden := func(verb string) func(*dynamicfake.FakeDynamicClient) {
		return func(d *dynamicfake.FakeDynamicClient) {
			d.PrependReactor(verb, "gateways", func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "gateway.networking.k8s.io", Resource: "gateways"}, "waypoint",
					fmt.Errorf(`User "alice" cannot %s resource "gateways" in API group "gateway.networking.k8s.io" in the namespace "shop"`, verb))
			})
		}
	}
	tests := []struct {
		name       string
		kube       []runtime.Object
		dyn        []*unstructured.Unstructured
		noAPIs     bool
		react      func(*dynamicfake.FakeDynamicClient)
		args       []string
		wantOut    string
		wantErrOut string
		wantErr    string
		wantLabels string
		wantGWs    string // shop's Gateways afterwards, name:createdByUs
		// istiod programs each Gateway created without a status, as its
		// gateway controller does once it has deployed it.
		istiod bool
	}{
		{name: "creates the waypoint, labels, waits for its deployment",
			kube: append(waypointObjects(), waypointDeployment("waypoint")), args: []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantOut:    "gateway.gateway.networking.k8s.io/waypoint created\nnamespace/shop labeled\n",
			wantErrOut: ready, wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:true", istiod: true},
		{name: "deployed but never programmed",
			kube: append(waypointObjects(), waypointDeployment("waypoint")), args: []string{"enable-injection", "shop", "--ambient", "--waypoint", "--timeout=300ms"},
			wantOut: "gateway.gateway.networking.k8s.io/waypoint created\nnamespace/shop labeled\n",
			wantErrOut: "no workloads in shop need a restart\n" +
				"waiting up to 300ms for the waypoint's deployment shop/waypoint\n",
			wantErr: "waypoint shop/waypoint is not ready: deployment shop/waypoint is available, but istiod has not programmed the Gateway after 300ms " +
				"(no Programmed condition for its current generation yet), so ztunnel does not send it traffic; " +
				"check the Gateway's conditions (kubectl get gateway waypoint -n shop -o yaml) and istiod's log, or wait longer with --timeout " +
				"(gateway status: no conditions, so no controller has accepted it); the Gateway and the namespace label are in place",
			wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:true"},
		{name: "a named waypoint replaces the namespace's one",
			kube:    append(waypointObjects("istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=old"), waypointDeployment("wp2")),
			args:    []string{"enable-injection", "shop", "--ambient", "--waypoint=wp2"},
			wantOut: "gateway.gateway.networking.k8s.io/wp2 created\nnamespace/shop labeled\n",
			wantErrOut: "note: namespace/shop: replacing istio.io/use-waypoint=old: the namespace's Services now use waypoint wp2\n" +
				"no workloads in shop need a restart\n" +
				"waiting up to 1m0s for the waypoint's deployment shop/wp2\n" +
				"waypoint shop/wp2 ready: deployment shop/wp2 has 1 available, and istiod has programmed the Gateway\n",
			wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=wp2", wantGWs: "wp2:true", istiod: true},
		{name: "a user's waypoint is used as it is",
			kube:       append(waypointObjects("istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint"), waypointDeployment("waypoint")),
			dyn:        []*unstructured.Unstructured{gatewayObject("waypoint", "istio-waypoint", nil)},
			args:       []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantOut:    "gateway.gateway.networking.k8s.io/waypoint unchanged\nnamespace/shop already enabled\n",
			wantErrOut: ready, wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:false", istiod: true},
		{name: "no deployment: says what is missing, with the gateway's conditions",
			kube: waypointObjects(),
			dyn: []*unstructured.Unstructured{gatewayObject("waypoint", "istio-waypoint", nil,
				map[string]interface{}{"type": "Accepted", "status": "False", "reason": "InvalidParameters", "message": "no waypoint template"},
				map[string]interface{}{"type": "Programmed", "status": "False", "reason": "Invalid"})},
			args:    []string{"enable-injection", "shop", "--ambient", "--waypoint", "--timeout=300ms"},
			wantOut: "gateway.gateway.networking.k8s.io/waypoint unchanged\nnamespace/shop labeled\n",
			wantErrOut: "no workloads in shop need a restart\n" +
				"waiting up to 300ms for the waypoint's deployment shop/waypoint\n",
			wantErr: "waypoint shop/waypoint is not ready: no Deployment waypoint in shop after 300ms: is istiod's gateway controller running? " +
				"check the Gateway's status conditions: kubectl get gateway waypoint -n shop -o yaml " +
				"(gateway status: Accepted=False (InvalidParameters: no waypoint template), Programmed=False (Invalid)); the Gateway and the namespace label are in place",
			wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:false"},
		{name: "no deployment and no controller",
			kube: waypointObjects(), args: []string{"enable-injection", "shop", "--ambient", "--waypoint", "--timeout=200ms"},
			wantOut: "gateway.gateway.networking.k8s.io/waypoint created\nnamespace/shop labeled\n",
			wantErrOut: "no workloads in shop need a restart\n" +
				"waiting up to 200ms for the waypoint's deployment shop/waypoint\n",
			wantErr: "waypoint shop/waypoint is not ready: no Deployment waypoint in shop after 200ms: is istiod's gateway controller running? " +
				"check the Gateway's status conditions: kubectl get gateway waypoint -n shop -o yaml " +
				"(gateway status: no conditions, so no controller has accepted it); the Gateway and the namespace label are in place",
			wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:true"},
		{name: "client dry run shows the gateway and the labels",
			kube: waypointObjects(), args: []string{"enable-injection", "shop", "--ambient", "--waypoint", "--dry-run=client", "-o", "yaml"},
			wantOut: waypointYAML, wantErrOut: "no workloads in shop need a restart\n"},
		{name: "client dry run message",
			kube: waypointObjects(), args: []string{"enable-injection", "shop", "--ambient", "--waypoint", "--dry-run=client"},
			wantOut:    "gateway.gateway.networking.k8s.io/waypoint created (dry run)\nnamespace/shop labeled (dry run)\n",
			wantErrOut: "no workloads in shop need a restart\n"},
		{name: "a gateway of another class is refused",
			kube: waypointObjects(), dyn: []*unstructured.Unstructured{gatewayObject("waypoint", "istio", nil)},
			args:    []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantErr: `gateway shop/waypoint exists with gatewayClassName "istio", not istio-waypoint, so it is no waypoint; choose another name with --waypoint NAME`,
			wantGWs: "waypoint:false"},
		{name: "waypoint without ambient", kube: waypointObjects(), args: []string{"enable-injection", "shop", "--waypoint"},
			wantErr: "--waypoint needs --ambient: waypoints serve ambient namespaces, while sidecars route traffic themselves; add --ambient"},
		{name: "reserved name", kube: waypointObjects(), args: []string{"enable-injection", "shop", "--ambient", "--waypoint=none"},
			wantErr: `--waypoint "none" is reserved by Istio (istio.io/use-waypoint=none opts out of a waypoint); choose another name`},
		{name: "without ztunnel nothing is created", kube: []runtime.Object{meshInjector(""), testNamespace("shop")},
			args:    []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantErr: "ambient mode needs ztunnel, and no ztunnel DaemonSet (label app=ztunnel) was found; install Istio with the ambient profile first (istioctl install --set profile=ambient), or drop --ambient to use sidecars"},
		{name: "no Gateway API", kube: waypointObjects(), noAPIs: true, args: []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantErr: "--waypoint: Gateway API CRDs are not installed in this cluster (no gateway.networking.k8s.io/v1 Gateway); install the Gateway API CRDs first (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"},
		{name: "creating gateways forbidden", kube: waypointObjects(), react: forbidden("create"),
			args: []string{"enable-injection", "shop", "--ambient", "--waypoint"},
			wantErr: `cannot create gateway shop/waypoint: create on gateways.gateway.networking.k8s.io in namespace shop is forbidden, so nothing was changed; ask an admin of shop to grant get, create and delete on them:
  kubectl create role waypoints -n shop --verb=get,create,delete --resource=gateways.gateway.networking.k8s.io
  kubectl create rolebinding waypoints -n shop --role=waypoints --user=alice
(gateways.gateway.networking.k8s.io "waypoint" is forbidden: User "alice" cannot create resource "gateways" in API group "gateway.networking.k8s.io" in the namespace "shop")`},
		{name: "disable deletes the waypoint it created",
			kube:    waypointObjects("istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint"),
			dyn:     []*unstructured.Unstructured{gatewayObject("waypoint", "istio-waypoint", map[string]interface{}{"inject.kubectl-mesh.io/created-by": "kubectl-mesh enable-injection"})},
			args:    []string{"disable-injection", "shop"},
			wantOut: "namespace/shop labeled\ngateway.gateway.networking.k8s.io/waypoint deleted\n", wantErrOut: "no workloads in shop need a restart\n"},
		{name: "disable keeps a user's waypoint",
			kube:    waypointObjects("istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint"),
			dyn:     []*unstructured.Unstructured{gatewayObject("waypoint", "istio-waypoint", nil)},
			args:    []string{"disable-injection", "shop"},
			wantOut: "namespace/shop labeled\n",
			wantErrOut: "note: namespace/shop: kept gateway shop/waypoint: kubectl mesh did not create it (no inject.kubectl-mesh.io/created-by annotation); delete it yourself when nothing uses it\n" +
				"no workloads in shop need a restart\n",
			wantGWs: "waypoint:false"},
		{name: "disable dry run deletes nothing",
			kube:    waypointObjects("istio.io/dataplane-mode=ambient", "istio.io/use-waypoint=waypoint"),
			dyn:     []*unstructured.Unstructured{gatewayObject("waypoint", "istio-waypoint", map[string]interface{}{"inject.kubectl-mesh.io/created-by": "kubectl-mesh enable-injection"})},
			args:    []string{"disable-injection", "shop", "--dry-run=client"},
			wantOut: "namespace/shop labeled (dry run)\ngateway.gateway.networking.k8s.io/waypoint deleted (dry run)\n", wantErrOut: "no workloads in shop need a restart\n",
			wantLabels: "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint", wantGWs: "waypoint:true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, dyn := trafficFake(tt.kube, tt.noAPIs)
			if tt.istiod {
				dyn.PrependReactor("create", "gateways", func(a k8stesting.Action) (bool, runtime.Object, error) {
					gw := a.(k8stesting.CreateAction).GetObject().(*unstructured.Unstructured)
					if _, ok := gw.Object["status"]; !ok {
						programmed := map[string]interface{}{"type": "Programmed", "status": "True", "reason": "Programmed"}
						_ = unstructured.SetNestedSlice(gw.Object, []interface{}{programmed}, "status", "conditions")
					}
					return false, nil, nil
				})
			}
			// The fake's constructor does not file unstructured objects
			// under their resource; created through the client, they are.
			for _, g := range tt.dyn {
				if _, err := dyn.Resource(traffic.Gateways).Namespace(g.GetNamespace()).Create(t.Context(), g, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			f.Kube.PrependReactor("create", "selfsubjectreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
				r := &authenticationv1.SelfSubjectReview{}
				r.Status.UserInfo.Username = "alice"
				return true, r, nil
			})
			if tt.react != nil {
				tt.react(dyn)
			}
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
				t.Errorf("stderr =\n%q\nwant\n%q", f.ErrOut.String(), tt.wantErrOut)
			}
			if got := nsLabels(t, f, "shop"); got != tt.wantLabels {
				t.Errorf("shop labels = %q, want %q", got, tt.wantLabels)
			}
			if got := gateways(t, f); got != tt.wantGWs {
				t.Errorf("gateways = %q, want %q", got, tt.wantGWs)
			}
		})
	}
}

// TestEnableInjectionWaypointUndo: when the namespace cannot be labelled
// after the Gateway was created, the Gateway is deleted again.
func TestEnableInjectionWaypointUndo(t *testing.T) {
	f, _ := trafficFake(waypointObjects(), false)
	f.Kube.PrependReactor("patch", "namespaces", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if len(a.(k8stesting.PatchActionImpl).PatchOptions.DryRun) > 0 {
			return true, testNamespace("shop"), nil // the fake would store it
		}
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "namespaces"}, "shop", fmt.Errorf("the object has been modified"))
	})
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"enable-injection", "shop", "--ambient", "--waypoint"})
	err := cmd.Execute()
	want := `patching namespace shop: Operation cannot be fulfilled on namespaces "shop": the object has been modified`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
	if got, want := f.ErrOut.String(), "deleted gateway shop/waypoint again: the namespace could not be labelled\n"; got != want {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	if got := gateways(t, f); got != "" {
		t.Errorf("gateways left: %q", got)
	}
	if got := nsLabels(t, f, "shop"); got != "" {
		t.Errorf("labels = %q", got)
	}
}
