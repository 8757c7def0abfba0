package controlplane

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func istiod(rev, image string) *appsv1.Deployment {
	l := map[string]string{"app": "istiod"}
	name := "istiod"
	if rev != "" {
		l[LabelRev] = rev
		name += "-" + rev
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: name, Labels: l}}
	d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "discovery", Image: image}}
	return d
}

func injectorCM(tag string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-sidecar-injector", Labels: map[string]string{LabelRev: "default"}},
		Data:       map[string]string{"values": fmt.Sprintf(`{"revision":"","global":{"tag":%q}}`, tag), "config": "policy: enabled\n"},
	}
}

// TestDiscoverVersion: a control plane's version is istiod's image version,
// else the injector's global.tag; image variants are the same version.
func TestDiscoverVersion(t *testing.T) {
	tests := []struct {
		name    string
		objects []runtime.Object
		want    string
	}{
		{"distroless istiod", []runtime.Object{istiod("", "docker.io/istio/pilot:1.31.0-distroless")}, "1.31.0"},
		{"debug istiod", []runtime.Object{istiod("", "docker.io/istio/pilot:1.31.0-debug")}, "1.31.0"},
		{"istiod wins over the injector's tag", []runtime.Object{istiod("", "gcr.io/istio-release/pilot:1.31.1"), injectorCM("1.31.0")}, "1.31.1"},
		{"istiod by digest: the injector's tag", []runtime.Object{istiod("", "docker.io/istio/pilot@sha256:4d2c5e4c8e2cbf7cbd1f2a1a7bd0e3e4b3f6a9b4c1a7d8e9f0a1b2c3d4e5f6a7"), injectorCM("1.31.0")}, "1.31.0"},
		{"istiod on latest: the injector's tag", []runtime.Object{istiod("", "istio/pilot:latest"), injectorCM("1.30.2")}, "1.30.2"},
		{"injector tag with a variant", []runtime.Object{injectorCM("1.31.0-distroless")}, "1.31.0"},
		{"nothing says", []runtime.Object{istiod("", "localhost:5000/istio/pilot")}, ""},
	}
	for _, tt := range tests {
		inv, err := Discover(context.Background(), fake.NewClientset(tt.objects...))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		cp, ok := inv.Find(DefaultRevision)
		if !ok || cp.Version != tt.want {
			t.Errorf("%s: version %q (found %v), want %q", tt.name, cp.Version, ok, tt.want)
		}
	}
}

// TestDiscoverForbidden: each refused cluster-wide read is recorded, in
// the order made, and the others still count.
func TestDiscoverForbidden(t *testing.T) {
	tests := []struct {
		name            string
		refuse          []string
		wantUnchecked   []Unchecked
		webhooksUnknown bool
		ztunnelUnknown  bool
		wantVersion     string
	}{
		{name: "all allowed", wantVersion: "1.31.0"},
		{name: "webhooks", refuse: []string{"mutatingwebhookconfigurations"}, wantUnchecked: []Unchecked{uncheckedWebhooks}, webhooksUnknown: true, wantVersion: "1.31.0"},
		{name: "deployments", refuse: []string{"deployments"}, wantUnchecked: []Unchecked{uncheckedIstiod}, wantVersion: "1.30.0"},
		{name: "namespace admin", refuse: []string{"mutatingwebhookconfigurations", "deployments", "configmaps", "daemonsets"},
			wantUnchecked: []Unchecked{uncheckedWebhooks, uncheckedIstiod, uncheckedInjectorConfig, uncheckedZtunnel}, webhooksUnknown: true, ztunnelUnknown: true},
	}
	for _, tt := range tests {
		kube := fake.NewClientset(istiod("", "docker.io/istio/pilot:1.31.0-distroless"), injectorCM("1.30.0"))
		for _, res := range tt.refuse {
			kube.PrependReactor("list", res, func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", fmt.Errorf("no"))
			})
		}
		inv, err := Discover(context.Background(), kube)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !reflect.DeepEqual(inv.Unchecked, tt.wantUnchecked) || inv.WebhooksUnknown != tt.webhooksUnknown || inv.ZtunnelUnknown != tt.ztunnelUnknown {
			t.Errorf("%s: unchecked %v, webhooks unknown %v, ztunnel unknown %v", tt.name, inv.Unchecked, inv.WebhooksUnknown, inv.ZtunnelUnknown)
		}
		cp, _ := inv.Find(DefaultRevision)
		if cp.Version != tt.wantVersion {
			t.Errorf("%s: version %q, want %q", tt.name, cp.Version, tt.wantVersion)
		}
	}
	// Other errors still fail.
	kube := fake.NewClientset()
	kube.PrependReactor("list", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	if _, err := Discover(context.Background(), kube); err == nil || err.Error() != "listing mutatingwebhookconfigurations to find the Istio sidecar injector: etcd is down" {
		t.Errorf("unavailable: %v", err)
	}
}

// TestStandardWebhooks: which of Istio's standard webhooks a pod reaches,
// by its namespace's and its own labels.
func TestStandardWebhooks(t *testing.T) {
	tests := []struct {
		name     string
		rev      string
		ns, pod  map[string]string
		wantHook string
		wantRev  string
	}{
		{"istio-injection=enabled", "", map[string]string{"istio-injection": "enabled"}, nil, "namespace.sidecar-injector.istio.io", "default"},
		{"opted out", "", map[string]string{"istio-injection": "enabled"}, map[string]string{"sidecar.istio.io/inject": "false"}, "", ""},
		{"istio-injection=disabled wins over pod opt-in", "", map[string]string{"istio-injection": "disabled"}, map[string]string{"sidecar.istio.io/inject": "true"}, "", ""},
		{"pod opt-in in a plain namespace", "", nil, map[string]string{"sidecar.istio.io/inject": "true"}, "object.sidecar-injector.istio.io", "default"},
		{"namespace istio.io/rev=default", "", map[string]string{"istio.io/rev": "default"}, nil, "rev.namespace.sidecar-injector.istio.io", "default"},
		{"namespace revision", "canary", map[string]string{"istio.io/rev": "canary"}, nil, "rev.namespace.sidecar-injector.istio.io", "canary"},
		{"pod revision", "canary", nil, map[string]string{"istio.io/rev": "canary"}, "rev.object.sidecar-injector.istio.io", "canary"},
		{"pod revision under a namespace label", "canary", map[string]string{"istio-injection": "enabled"}, map[string]string{"istio.io/rev": "canary"}, "", ""},
		{"plain", "", nil, nil, "", ""},
	}
	for _, tt := range tests {
		hook, rev := "", ""
		for _, w := range StandardWebhooks(tt.rev) {
			ns, err1 := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
			obj, err2 := metav1.LabelSelectorAsSelector(w.ObjectSelector)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s: %v %v", w.Name, err1, err2)
			}
			if ns.Matches(labels.Set(tt.ns)) && obj.Matches(labels.Set(tt.pod)) {
				if hook != "" {
					t.Errorf("%s: both %s and %s match", tt.name, hook, w.Name)
				}
				hook, rev = w.Name, w.Revision
			}
		}
		if hook != tt.wantHook || rev != tt.wantRev {
			t.Errorf("%s: matched %q (revision %q), want %q (%q)", tt.name, hook, rev, tt.wantHook, tt.wantRev)
		}
	}
}
