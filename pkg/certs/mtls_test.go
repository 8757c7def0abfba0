package certs

import (
	"context"
	"fmt"
	"reflect"
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
	k8stesting "k8s.io/client-go/testing"
)

func peerAuth(ns, name string, age time.Duration, selector map[string]string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode, ports map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode) *securityv1.PeerAuthentication {
	pa := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(now.Add(-age))},
	}
	if selector != nil {
		pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: selector}
	}
	if mode != securityv1beta1.PeerAuthentication_MutualTLS_UNSET {
		pa.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}
	}
	for p, m := range ports {
		if pa.Spec.PortLevelMtls == nil {
			pa.Spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		}
		pa.Spec.PortLevelMtls[p] = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
	}
	return pa
}

func TestEffectiveMTLS(t *testing.T) {
	const (
		unset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
		disable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
		permissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
		strict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
	)
	app := map[string]string{"app": "frontend"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "frontend-1", Labels: map[string]string{"app": "frontend", "version": "v1"}}}
	tests := []struct {
		name     string
		policies []runtime.Object
		// forbid are namespaces where listing PeerAuthentications is
		// refused (RBAC 403).
		forbid []string
		want   MTLS
	}{
		{
			name: "no policy",
			want: MTLS{Mode: "PERMISSIVE", From: "default (no PeerAuthentication)"},
		},
		{
			name:     "mesh-wide strict",
			policies: []runtime.Object{peerAuth("istio-system", "default", time.Hour, nil, strict, nil)},
			want:     MTLS{Mode: "STRICT", From: "PeerAuthentication istio-system/default (mesh-wide)"},
		},
		{
			name: "a selector in the root namespace is not mesh-wide",
			policies: []runtime.Object{
				peerAuth("istio-system", "gw", time.Hour, app, strict, nil),
			},
			want: MTLS{Mode: "PERMISSIVE", From: "default (no PeerAuthentication)"},
		},
		{
			name: "namespace overrides mesh",
			policies: []runtime.Object{
				peerAuth("istio-system", "default", time.Hour, nil, strict, nil),
				peerAuth("default", "ns", time.Hour, nil, disable, nil),
			},
			want: MTLS{Mode: "DISABLE", From: "PeerAuthentication default/ns (namespace)"},
		},
		{
			name: "unset namespace policy inherits mesh",
			policies: []runtime.Object{
				peerAuth("istio-system", "default", time.Hour, nil, strict, nil),
				peerAuth("default", "ns", time.Hour, nil, unset, nil),
			},
			want: MTLS{Mode: "STRICT", From: "PeerAuthentication istio-system/default (mesh-wide)"},
		},
		{
			name: "oldest namespace policy wins",
			policies: []runtime.Object{
				peerAuth("default", "b-old", 2*time.Hour, nil, strict, nil),
				peerAuth("default", "a-new", time.Hour, nil, disable, nil),
			},
			want: MTLS{Mode: "STRICT", From: "PeerAuthentication default/b-old (namespace)"},
		},
		{
			name: "workload with port-level override",
			policies: []runtime.Object{
				peerAuth("default", "ns", time.Hour, nil, permissive, nil),
				peerAuth("default", "frontend", time.Hour, app, strict, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: disable, 9090: unset, 80: permissive}),
				peerAuth("default", "other", time.Hour, map[string]string{"app": "backend"}, disable, nil),
			},
			want: MTLS{Mode: "STRICT", From: "PeerAuthentication default/frontend (workload)", Ports: []PortMTLS{
				{Port: 80, Mode: "PERMISSIVE", From: "PeerAuthentication default/frontend (port-level)"},
				{Port: 8080, Mode: "DISABLE", From: "PeerAuthentication default/frontend (port-level)"},
				{Port: 9090, Mode: "STRICT", From: "PeerAuthentication default/frontend (port-level)"},
			}},
		},
		{
			name: "an empty selector is namespace-wide: no port-level modes, a workload policy still overrides it",
			policies: []runtime.Object{
				peerAuth("default", "all", 2*time.Hour, map[string]string{}, disable, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: strict}),
			},
			want: MTLS{Mode: "DISABLE", From: "PeerAuthentication default/all (namespace)"},
		},
		{
			name: "an empty selector under a workload policy",
			policies: []runtime.Object{
				peerAuth("default", "all", 2*time.Hour, map[string]string{}, disable, nil),
				peerAuth("default", "frontend", time.Hour, app, unset, nil),
			},
			want: MTLS{Mode: "DISABLE", From: "PeerAuthentication default/all (namespace)"},
		},
		{
			name: "workload in another namespace does not apply",
			policies: []runtime.Object{
				peerAuth("shop", "frontend", time.Hour, app, disable, nil),
			},
			want: MTLS{Mode: "PERMISSIVE", From: "default (no PeerAuthentication)"},
		},
		{
			name:     "root namespace forbidden, namespace policy decides",
			policies: []runtime.Object{peerAuth("default", "ns", time.Hour, nil, strict, nil)},
			forbid:   []string{"istio-system"},
			want: MTLS{Mode: "STRICT", From: "PeerAuthentication default/ns (namespace)", Notes: []string{
				"could not check the mesh-wide PeerAuthentication: listing peerauthentications in namespace istio-system is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n istio-system)",
			}},
		},
		{
			name:     "root namespace forbidden, nothing else decides",
			policies: []runtime.Object{peerAuth("default", "other", time.Hour, map[string]string{"app": "backend"}, disable, nil)},
			forbid:   []string{"istio-system"},
			want: MTLS{Mode: ModeUnknown, From: "the PeerAuthentications that decide it could not be read (see the notes)", Notes: []string{
				"could not check the mesh-wide PeerAuthentication: listing peerauthentications in namespace istio-system is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n istio-system)",
			}},
		},
		{
			name:     "pod namespace forbidden: the mesh-wide mode is only a note",
			policies: []runtime.Object{peerAuth("istio-system", "default", time.Hour, nil, strict, nil)},
			forbid:   []string{"default"},
			want: MTLS{Mode: ModeUnknown, From: "the PeerAuthentications that decide it could not be read (see the notes)", Notes: []string{
				"could not check the namespace and workload PeerAuthentication: listing peerauthentications in namespace default is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n default)",
				"the mesh-wide PeerAuthentication istio-system/default says STRICT; a namespace or workload policy may override it",
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := istiofake.NewSimpleClientset(tt.policies...)
			forbidPeerAuthentications(client, tt.forbid...)
			got, err := EffectiveMTLS(context.Background(), client, "", pod)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// forbidPeerAuthentications makes listing PeerAuthentications in namespaces
// fail as the API server does without RBAC rights: 403 Forbidden.
func forbidPeerAuthentications(c *istiofake.Clientset, namespaces ...string) {
	for _, ns := range namespaces {
		c.PrependReactor("list", "peerauthentications", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetNamespace() != ns {
				return false, nil, nil
			}
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}, "", fmt.Errorf("User \"alice\" cannot list resource \"peerauthentications\" in API group \"security.istio.io\" in the namespace %q", ns))
		})
	}
}
