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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
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
