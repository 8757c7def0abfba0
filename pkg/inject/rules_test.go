package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestEvaluate(t *testing.T) {
	def := []runtime.Object{injectorMWC("", ""), injectorCM("", "1.31.0", "policy: enabled\n")}
	canary := append([]runtime.Object{injectorMWC("canary", ""), injectorCM("canary", "1.32.0", "policy: enabled\n")}, def...)
	tagged := append([]runtime.Object{injectorMWC("", "prod")}, def...)
	disabledPolicy := []runtime.Object{injectorMWC("", ""), injectorCM("", "1.31.0", `policy: disabled
neverInjectSelector:
- matchExpressions:
  - {key: openshift.io/build.name, operator: Exists}
`)}
	selectors := []runtime.Object{injectorMWC("", ""), injectorCM("", "1.31.0", `policy: enabled
neverInjectSelector:
- matchLabels: {job: batch}
alwaysInjectSelector:
- matchLabels: {job: batch}
`)}
	tests := []struct {
		name     string
		objs     []runtime.Object
		ns       string
		nsLabels map[string]string
		labels   map[string]string
		annots   map[string]string
		hostNet  bool
		want     Decision
	}{
		{name: "no istio", objs: nil, nsLabels: map[string]string{LabelInjection: "enabled"},
			want: Decision{Reason: "no sidecar injector installed"}},
		{name: "unlabelled namespace", objs: def,
			want: Decision{Reason: "injection not enabled"}},
		{name: "istio-injection=enabled", objs: def, nsLabels: map[string]string{LabelInjection: "enabled"},
			want: Decision{Inject: true, Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "istio-injection=disabled", objs: def, nsLabels: map[string]string{LabelInjection: "disabled"},
			want: Decision{Reason: "namespace has istio-injection=disabled"}},
		{name: "istio-injection wins over istio.io/rev", objs: canary, nsLabels: map[string]string{LabelInjection: "enabled", LabelRev: "canary"},
			want: Decision{Inject: true, Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "istio.io/rev=canary", objs: canary, nsLabels: map[string]string{LabelRev: "canary"},
			want: Decision{Inject: true, Revision: "canary", Webhook: "istio-sidecar-injector-canary/rev.namespace.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "istio.io/rev=default", objs: canary, nsLabels: map[string]string{LabelRev: "default"},
			want: Decision{Inject: true, Revision: "default", Webhook: "istio-sidecar-injector/rev.namespace.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "tag resolves to its revision", objs: tagged, nsLabels: map[string]string{LabelRev: "prod"},
			want: Decision{Inject: true, Revision: "default", Webhook: "istio-revision-tag-prod/rev.namespace.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "unknown revision", objs: canary, nsLabels: map[string]string{LabelRev: "nope"},
			want: Decision{Reason: `namespace asks for revision "nope", which is not installed`}},
		{name: "pod label false beats namespace", objs: def, nsLabels: map[string]string{LabelInjection: "enabled"},
			labels: map[string]string{LabelSidecarInject: "false"},
			want:   Decision{Reason: "sidecar.istio.io/inject=false"}},
		{name: "pod annotation false reaches istiod, which skips it", objs: def, nsLabels: map[string]string{LabelInjection: "enabled"},
			annots: map[string]string{LabelSidecarInject: "false"},
			want:   Decision{Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "sidecar.istio.io/inject=false"}},
		{name: "pod label true in unlabelled namespace", objs: def, labels: map[string]string{LabelSidecarInject: "true"},
			want: Decision{Inject: true, Revision: "default", Webhook: "istio-sidecar-injector/object.sidecar-injector.istio.io", Reason: "sidecar.istio.io/inject=true"}},
		{name: "pod label true loses to namespace disabled", objs: def, nsLabels: map[string]string{LabelInjection: "disabled"},
			labels: map[string]string{LabelSidecarInject: "true"},
			want:   Decision{Reason: "namespace has istio-injection=disabled"}},
		{name: "pod revision label in unlabelled namespace", objs: canary, labels: map[string]string{LabelRev: "canary"},
			want: Decision{Inject: true, Revision: "canary", Webhook: "istio-sidecar-injector-canary/rev.object.sidecar-injector.istio.io", Reason: "namespace enabled"}},
		{name: "hostNetwork", objs: def, nsLabels: map[string]string{LabelInjection: "enabled"}, hostNet: true,
			want: Decision{Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "hostNetwork pods are never injected"}},
		{name: "kube-system is ignored by istiod", objs: def, ns: "kube-system", nsLabels: map[string]string{LabelInjection: "enabled"},
			want: Decision{Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "istiod never injects in kube-system"}},
		{name: "policy disabled without opt-in", objs: disabledPolicy, nsLabels: map[string]string{LabelInjection: "enabled"},
			want: Decision{Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "injector policy is disabled and the pod does not opt in"}},
		{name: "policy disabled with annotation opt-in", objs: disabledPolicy, nsLabels: map[string]string{LabelInjection: "enabled"},
			annots: map[string]string{LabelSidecarInject: "true"},
			want:   Decision{Inject: true, Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "sidecar.istio.io/inject=true"}},
		{name: "neverInjectSelector is checked before alwaysInjectSelector", objs: selectors, nsLabels: map[string]string{LabelInjection: "enabled"},
			labels: map[string]string{"job": "batch"},
			want:   Decision{Revision: "default", Webhook: "istio-sidecar-injector/namespace.sidecar-injector.istio.io", Reason: "matches the injector's neverInjectSelector"}},
		{name: "ambient namespace gets no sidecar", objs: def, nsLabels: map[string]string{LabelDataplaneMode: "ambient"},
			want: Decision{Reason: "injection not enabled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == "" {
				ns = "shop"
			}
			r := NewRules(inventory(t, tt.objs...))
			got := r.Evaluate(ns, tt.nsLabels, metav1.ObjectMeta{Labels: tt.labels, Annotations: tt.annots}, &corev1.PodSpec{HostNetwork: tt.hostNet})
			if got != tt.want {
				t.Errorf("Evaluate() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
