package inject

import (
	"context"
	"fmt"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func peerAuth(ns, name string, age time.Duration, sel map[string]string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode) *securityv1.PeerAuthentication {
	pa := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(-age))}}
	if sel != nil {
		pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
	}
	pa.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}
	return pa
}

func meshConfigMap(name, rev, mesh string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: name, Labels: map[string]string{"istio.io/rev": rev}},
		Data: map[string]string{"mesh": mesh}}
}

// TestStatusMTLS: status resolves each namespace's mode with the one
// PeerAuthentication resolver, in the root namespace meshConfig names.
func TestStatusMTLS(t *testing.T) {
	const strict, disable = securityv1beta1.PeerAuthentication_MutualTLS_STRICT, securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
	tests := []struct {
		name     string
		kube     []runtime.Object
		pas      []runtime.Object
		root     string // --root-namespace
		forbid   string
		want     string
		policies int
	}{{
		name: "no policy",
		want: "PERMISSIVE (default)",
	}, {
		name: "an empty selector is namespace-wide",
		pas:  []runtime.Object{peerAuth("shop", "all", time.Hour, map[string]string{}, strict)},
		want: "STRICT (namespace policy all)",
	}, {
		name:     "workload policies are counted, not applied",
		pas:      []runtime.Object{peerAuth("istio-system", "default", time.Hour, nil, disable), peerAuth("shop", "web", time.Hour, map[string]string{"app": "web"}, strict)},
		want:     "DISABLE (mesh policy istio-system/default)",
		policies: 1,
	}, {
		name: "meshConfig names the root namespace",
		kube: []runtime.Object{meshConfigMap("istio", "default", "rootNamespace: mesh-root\n")},
		pas:  []runtime.Object{peerAuth("istio-system", "default", 2*time.Hour, nil, disable), peerAuth("mesh-root", "default", time.Hour, nil, strict)},
		want: "STRICT (mesh policy mesh-root/default)",
	}, {
		name: "--root-namespace when meshConfig does not say",
		kube: []runtime.Object{meshConfigMap("istio", "default", "defaultConfig: {}\n")},
		root: "mesh-root",
		pas:  []runtime.Object{peerAuth("istio-system", "default", 2*time.Hour, nil, disable), peerAuth("mesh-root", "default", time.Hour, nil, strict)},
		want: "STRICT (mesh policy mesh-root/default)",
	}, {
		name:   "root namespace forbidden, the namespace policy decides",
		pas:    []runtime.Object{peerAuth("shop", "ns", time.Hour, nil, strict)},
		forbid: "istio-system",
		want:   "STRICT (namespace policy ns)",
	}, {
		name:   "root namespace forbidden, nothing below decides",
		forbid: "istio-system",
		want:   "unknown (forbidden to list peerauthentications)",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := kubefake.NewClientset(append(tt.kube, namespace("shop", nil))...)
			istio := istiofake.NewSimpleClientset(tt.pas...)
			istio.PrependReactor("list", "peerauthentications", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetNamespace() == tt.forbid {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}, "", fmt.Errorf("no"))
				}
				return false, nil, nil
			})
			rep, err := BuildStatus(context.Background(), kube, istio, Scope{Namespaces: []string{"shop"}, RootNamespace: tt.root})
			if err != nil {
				t.Fatal(err)
			}
			if st := rep.Namespaces[0]; st.MTLS != tt.want || st.WorkloadPolicies != tt.policies {
				t.Errorf("mtls %q with %d workload policies, want %q with %d", st.MTLS, st.WorkloadPolicies, tt.want, tt.policies)
			}
			if noted := len(rep.Unchecked) > 0 && rep.Unchecked[len(rep.Unchecked)-1] == uncheckedMTLS; noted != (tt.forbid != "") {
				t.Errorf("unchecked %v", rep.Unchecked)
			}
		})
	}
}
