package inject

import (
	"reflect"
	"sort"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestPlanEnable(t *testing.T) {
	def := []runtime.Object{injectorMWC("", "")}
	canaryOnly := []runtime.Object{injectorMWC("canary", "")}
	two := []runtime.Object{injectorMWC("canary", ""), injectorMWC("blue", "")}
	both := []runtime.Object{injectorMWC("", ""), injectorMWC("canary", ""), injectorMWC("", "prod")}
	ambient := []runtime.Object{injectorMWC("", ""), ztunnel(1, 1)}
	tests := []struct {
		name     string
		objs     []runtime.Object
		nsLabels map[string]string
		req      EnableRequest
		want     LabelChange
		wantErr  string
	}{
		{name: "default", objs: def,
			want: LabelChange{Set: map[string]string{LabelInjection: "enabled"}}},
		{name: "already enabled", objs: def, nsLabels: map[string]string{LabelInjection: "enabled"},
			want: LabelChange{Set: map[string]string{}}},
		{name: "default removes a revision label", objs: both, nsLabels: map[string]string{LabelRev: "canary"},
			want: LabelChange{Set: map[string]string{LabelInjection: "enabled"}, Remove: []string{LabelRev},
				Notes: []string{"removing istio.io/rev=canary: istio-injection=enabled takes precedence over it"}}},
		{name: "revision removes istio-injection", objs: both, nsLabels: map[string]string{LabelInjection: "enabled"}, req: EnableRequest{Revision: "canary"},
			want: LabelChange{Set: map[string]string{LabelRev: "canary"}, Remove: []string{LabelInjection},
				Notes: []string{"removing istio-injection=enabled: it takes precedence over istio.io/rev"}}},
		{name: "revision removes istio-injection=disabled too", objs: both, nsLabels: map[string]string{LabelInjection: "disabled"}, req: EnableRequest{Revision: "prod"},
			want: LabelChange{Set: map[string]string{LabelRev: "prod"}, Remove: []string{LabelInjection},
				Notes: []string{"removing istio-injection=disabled: it takes precedence over istio.io/rev"}}},
		{name: "revision already set", objs: both, nsLabels: map[string]string{LabelRev: "canary"}, req: EnableRequest{Revision: "canary"},
			want: LabelChange{Set: map[string]string{}}},
		{name: "sidecar leaves ambient", objs: def, nsLabels: map[string]string{LabelDataplaneMode: "ambient"},
			want: LabelChange{Set: map[string]string{LabelInjection: "enabled"}, Remove: []string{LabelDataplaneMode},
				Notes: []string{"removing istio.io/dataplane-mode=ambient: sidecar pods are not captured by ambient"}}},
		{name: "only a revision installed", objs: canaryOnly,
			want: LabelChange{Set: map[string]string{LabelRev: "canary"}, Notes: []string{"no default revision is installed; using revision canary"}}},
		{name: "two revisions, none default", objs: two,
			wantErr: "no default revision is installed; choose one with --revision: blue, canary"},
		{name: "unknown revision", objs: both, req: EnableRequest{Revision: "nope"},
			wantErr: `revision "nope" not found; revisions and tags installed: canary, default, prod (pass one of them to --revision)`},
		{name: "no injector", objs: nil,
			wantErr: "no Istio sidecar injector found (no MutatingWebhookConfiguration with a *.sidecar-injector.istio.io webhook); install Istio first"},
		{name: "ambient", objs: ambient, nsLabels: map[string]string{LabelInjection: "enabled", LabelRev: "canary"}, req: EnableRequest{Ambient: true},
			want: LabelChange{Set: map[string]string{LabelDataplaneMode: "ambient"}, Remove: []string{LabelInjection, LabelRev},
				Notes: []string{
					"removing istio-injection=enabled: pods with a sidecar are not captured by ambient",
					"removing istio.io/rev=canary: it would still inject sidecars, which ambient does not capture"}}},
		{name: "ambient without ztunnel", objs: append([]runtime.Object{kubeProxy()}, def...), req: EnableRequest{Ambient: true},
			wantErr: "ambient mode needs ztunnel, and no ztunnel DaemonSet (label app=ztunnel) was found; install Istio with the ambient profile first (istioctl install --set profile=ambient), or drop --ambient to use sidecars"},
		{name: "ambient with ztunnel not ready", objs: []runtime.Object{injectorMWC("", ""), ztunnel(0, 3)}, req: EnableRequest{Ambient: true},
			want: LabelChange{Set: map[string]string{LabelDataplaneMode: "ambient"},
				Notes: []string{"ztunnel istio-system/ztunnel has 0 of 3 pods ready; ambient traffic is not captured until it has (kubectl -n istio-system get pods -l app=ztunnel)"}}},
		{name: "ambient without istio", objs: nil, req: EnableRequest{Ambient: true},
			wantErr: "no Istio control plane found (no sidecar injector, istiod Deployment or istio-sidecar-injector ConfigMap); install Istio first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRules(inventory(t, tt.objs...))
			got, err := r.PlanEnable("shop", tt.nsLabels, tt.req)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PlanEnable() =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestPlanDisable(t *testing.T) {
	def := injectorMWC("", "")
	// enableNamespacesByDefault adds a webhook injecting unlabelled namespaces.
	auto := injectorMWC("", "")
	auto.Webhooks = append(auto.Webhooks, admissionregistrationv1.MutatingWebhook{Name: "auto.sidecar-injector.istio.io",
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			expr(LabelInjection, metav1.LabelSelectorOpDoesNotExist), expr(LabelRev, metav1.LabelSelectorOpDoesNotExist),
			expr("kubernetes.io/metadata.name", metav1.LabelSelectorOpNotIn, "kube-system")}},
		ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			expr(LabelSidecarInject, metav1.LabelSelectorOpDoesNotExist), expr(LabelRev, metav1.LabelSelectorOpDoesNotExist)}}})
	tests := []struct {
		name     string
		obj      runtime.Object
		nsLabels map[string]string
		want     LabelChange
	}{
		{name: "sidecar", obj: def, nsLabels: map[string]string{LabelInjection: "enabled", "team": "a"},
			want: LabelChange{Set: map[string]string{}, Remove: []string{LabelInjection}}},
		{name: "revision and ambient", obj: def, nsLabels: map[string]string{LabelRev: "canary", LabelDataplaneMode: "ambient"},
			want: LabelChange{Set: map[string]string{}, Remove: []string{LabelDataplaneMode, LabelRev}}},
		{name: "already disabled", obj: def, nsLabels: map[string]string{LabelInjection: "disabled"},
			want: LabelChange{Set: map[string]string{}}},
		{name: "nothing set", obj: def, nsLabels: nil,
			want: LabelChange{Set: map[string]string{}}},
		{name: "injector injects unlabelled namespaces", obj: auto, nsLabels: map[string]string{LabelInjection: "enabled"},
			want: LabelChange{Set: map[string]string{LabelInjection: "disabled"},
				Notes: []string{"setting istio-injection=disabled: the injector also injects namespaces without labels"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRules(inventory(t, tt.obj))
			got := r.PlanDisable("shop", tt.nsLabels)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PlanDisable() =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestMode(t *testing.T) {
	r := NewRules(inventory(t, injectorMWC("", ""), injectorMWC("canary", "")))
	tests := []struct {
		labels    map[string]string
		mode      string
		conflicts []string
	}{
		{nil, "off", nil},
		{map[string]string{LabelInjection: "enabled"}, "sidecar", nil},
		{map[string]string{LabelInjection: "disabled"}, "off", nil},
		{map[string]string{LabelRev: "canary"}, "revision canary", nil},
		{map[string]string{LabelRev: "gone"}, `revision gone (namespace asks for revision "gone", which is not installed)`, nil},
		{map[string]string{LabelDataplaneMode: "ambient"}, "ambient (no ztunnel)", nil},
		{map[string]string{LabelInjection: "enabled", LabelRev: "canary"}, "sidecar", []string{"istio-injection=enabled overrides istio.io/rev=canary"}},
		{map[string]string{LabelInjection: "disabled", LabelRev: "canary"}, "off", []string{"istio-injection=disabled overrides istio.io/rev=canary"}},
		{map[string]string{LabelRev: "canary", LabelDataplaneMode: "ambient"}, "revision canary",
			[]string{"istio.io/dataplane-mode=ambient with sidecar injection: sidecar pods bypass ambient"}},
	}
	for _, tt := range tests {
		mode, conflicts := r.Mode("shop", tt.labels)
		if mode != tt.mode || !reflect.DeepEqual(conflicts, tt.conflicts) {
			t.Errorf("Mode(%v) = %q, %q; want %q, %q", tt.labels, mode, conflicts, tt.mode, tt.conflicts)
		}
	}
	withZtunnel := NewRules(inventory(t, injectorMWC("", ""), ztunnel(1, 1)))
	if mode, _ := withZtunnel.Mode("shop", map[string]string{LabelDataplaneMode: "ambient"}); mode != "ambient" {
		t.Errorf("Mode(ambient) with ztunnel = %q, want ambient", mode)
	}
}

func TestLabelChangeMergePatch(t *testing.T) {
	c := LabelChange{Set: map[string]string{LabelRev: "canary"}, Remove: []string{LabelInjection}}
	want := map[string]any{"metadata": map[string]any{"labels": map[string]any{LabelRev: "canary", LabelInjection: nil}}}
	if got := c.MergePatch(); !reflect.DeepEqual(got, want) {
		t.Errorf("MergePatch() = %v, want %v", got, want)
	}
	after := c.Apply(map[string]string{LabelInjection: "enabled", "team": "a"})
	keys := []string{}
	for k := range after {
		keys = append(keys, k+"="+after[k])
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"istio.io/rev=canary", "team=a"}) {
		t.Errorf("Apply() = %v", keys)
	}
}
