package mesh

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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

const (
	unset      = securityv1beta1.PeerAuthentication_MutualTLS_UNSET
	disable    = securityv1beta1.PeerAuthentication_MutualTLS_DISABLE
	permissive = securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE
	strict     = securityv1beta1.PeerAuthentication_MutualTLS_STRICT
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// pa builds a PeerAuthentication created age before epoch. sel nil is no
// selector; an empty map is `selector: {}`.
func pa(ns, name string, age time.Duration, sel map[string]string, mode securityv1beta1.PeerAuthentication_MutualTLS_Mode, ports map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode) *securityv1.PeerAuthentication {
	p := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(epoch.Add(-age))}}
	if sel != nil {
		p.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
	}
	if mode != unset {
		p.Spec.Mtls = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: mode}
	}
	for port, m := range ports {
		if p.Spec.PortLevelMtls == nil {
			p.Spec.PortLevelMtls = map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{}
		}
		p.Spec.PortLevelMtls[port] = &securityv1beta1.PeerAuthentication_MutualTLS{Mode: m}
	}
	return p
}

// got is a resolution in a comparable form: policies by namespace/name.
type got struct {
	Mode, Level, Policy, MeshWide, Namespace, Workload string
	Ports                                              []PortMTLS
	Unread                                             []string
}

func flatten(m MTLS) got {
	name := func(p *securityv1.PeerAuthentication) string {
		if p == nil {
			return ""
		}
		return p.Namespace + "/" + p.Name
	}
	return got{Mode: m.Mode, Level: string(m.Level), Policy: name(m.Policy), MeshWide: name(m.MeshWide),
		Namespace: name(m.Namespace), Workload: name(m.Workload), Ports: m.Ports, Unread: m.Unread}
}

func TestResolvePeerAuthentication(t *testing.T) {
	app := map[string]string{"app": "web"}
	podLabels := map[string]string{"app": "web", "version": "v1"}
	h := time.Hour
	tests := []struct {
		name       string
		pas        []*securityv1.PeerAuthentication
		unreadable []string
		root, ns   string
		labels     map[string]string
		want       got
		describe   string
	}{{
		name:     "no policy is PERMISSIVE by default",
		want:     got{Mode: "PERMISSIVE", Level: "default"},
		describe: "default (no PeerAuthentication)",
	}, {
		name:     "mesh-wide policy in the root namespace",
		pas:      []*securityv1.PeerAuthentication{pa("istio-system", "default", h, nil, strict, nil)},
		want:     got{Mode: "STRICT", Level: "mesh-wide", Policy: "istio-system/default", MeshWide: "istio-system/default"},
		describe: "PeerAuthentication istio-system/default (mesh-wide)",
	}, {
		name: "an empty selector in the root namespace is mesh-wide",
		pas:  []*securityv1.PeerAuthentication{pa("istio-system", "all", h, map[string]string{}, strict, nil)},
		want: got{Mode: "STRICT", Level: "mesh-wide", Policy: "istio-system/all", MeshWide: "istio-system/all"},
	}, {
		name: "a selector in the root namespace applies to no workload",
		pas:  []*securityv1.PeerAuthentication{pa("istio-system", "gw", h, app, strict, nil)},
		want: got{Mode: "PERMISSIVE", Level: "default"},
	}, {
		name: "namespace overrides mesh",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "default", h, nil, strict, nil),
			pa("shop", "ns", h, nil, disable, nil),
		},
		want:     got{Mode: "DISABLE", Level: "namespace", Policy: "shop/ns", MeshWide: "istio-system/default", Namespace: "shop/ns"},
		describe: "PeerAuthentication shop/ns (namespace)",
	}, {
		name: "an empty selector is namespace-wide, not workload-level",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "empty", h, map[string]string{}, strict, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: disable}),
		},
		want: got{Mode: "STRICT", Level: "namespace", Policy: "shop/empty", Namespace: "shop/empty"},
	}, {
		name: "namespace UNSET inherits the mesh",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "default", h, nil, strict, nil),
			pa("shop", "ns", h, nil, unset, nil),
		},
		want: got{Mode: "STRICT", Level: "mesh-wide", Policy: "istio-system/default", MeshWide: "istio-system/default", Namespace: "shop/ns"},
	}, {
		name: "workload overrides namespace",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "ns", h, nil, strict, nil),
			pa("shop", "web", h, app, permissive, nil),
		},
		want:     got{Mode: "PERMISSIVE", Level: "workload", Policy: "shop/web", Namespace: "shop/ns", Workload: "shop/web"},
		describe: "PeerAuthentication shop/web (workload)",
	}, {
		name: "workload UNSET inherits the namespace",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "ns", h, nil, disable, nil),
			pa("shop", "web", h, app, unset, nil),
		},
		want: got{Mode: "DISABLE", Level: "namespace", Policy: "shop/ns", Namespace: "shop/ns", Workload: "shop/web"},
	}, {
		name: "a selector that does not match is ignored",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "db", h, map[string]string{"app": "db"}, disable, nil),
			pa("shop", "web-v2", h, map[string]string{"app": "web", "version": "v2"}, disable, nil),
		},
		want: got{Mode: "PERMISSIVE", Level: "default"},
	}, {
		name: "oldest namespace-wide policy wins",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "newer", h, nil, strict, nil),
			pa("shop", "older", 2*h, map[string]string{}, disable, nil),
		},
		want: got{Mode: "DISABLE", Level: "namespace", Policy: "shop/older", Namespace: "shop/older"},
	}, {
		name: "same age: first by name wins",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "b", h, nil, strict, nil),
			pa("shop", "a", h, nil, disable, nil),
		},
		want: got{Mode: "DISABLE", Level: "namespace", Policy: "shop/a", Namespace: "shop/a"},
	}, {
		name: "oldest mesh-wide policy wins",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "a", h, nil, strict, nil),
			pa("istio-system", "z", 3*h, nil, disable, nil),
		},
		want: got{Mode: "DISABLE", Level: "mesh-wide", Policy: "istio-system/z", MeshWide: "istio-system/z"},
	}, {
		name: "oldest matching workload policy wins",
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "by-app", h, app, strict, nil),
			pa("shop", "by-version", 2*h, map[string]string{"version": "v1"}, disable, nil),
		},
		want: got{Mode: "DISABLE", Level: "workload", Policy: "shop/by-version", Workload: "shop/by-version"},
	}, {
		name: "port-level modes from the workload policy; UNSET ports inherit its mode",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "default", h, nil, strict, nil),
			pa("shop", "web", h, app, unset, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{9090: unset, 8080: disable}),
		},
		want: got{Mode: "STRICT", Level: "mesh-wide", Policy: "istio-system/default", MeshWide: "istio-system/default", Workload: "shop/web",
			Ports: []PortMTLS{{Port: 8080, Mode: "DISABLE"}, {Port: 9090, Mode: "STRICT"}}},
	}, {
		name: "port-level modes on a namespace-wide policy are ignored",
		pas:  []*securityv1.PeerAuthentication{pa("shop", "ns", h, nil, strict, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: disable})},
		want: got{Mode: "STRICT", Level: "namespace", Policy: "shop/ns", Namespace: "shop/ns"},
	}, {
		name: "other namespaces do not count",
		pas: []*securityv1.PeerAuthentication{
			pa("other", "ns", h, nil, disable, nil),
			pa("other", "web", h, app, disable, nil),
		},
		want: got{Mode: "PERMISSIVE", Level: "default"},
	}, {
		name: "a pod in the root namespace: its namespace policy is the mesh-wide one, selectors there are ignored",
		ns:   "istio-system",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "default", h, nil, strict, nil),
			pa("istio-system", "web", h, app, disable, nil),
		},
		want: got{Mode: "STRICT", Level: "mesh-wide", Policy: "istio-system/default", MeshWide: "istio-system/default"},
	}, {
		name: "the root namespace comes from the caller",
		root: "mesh-root",
		pas: []*securityv1.PeerAuthentication{
			pa("istio-system", "default", 2*h, nil, disable, nil),
			pa("mesh-root", "default", h, nil, strict, nil),
		},
		want: got{Mode: "STRICT", Level: "mesh-wide", Policy: "mesh-root/default", MeshWide: "mesh-root/default"},
	}, {
		name:   "no pod labels: the namespace's own mode",
		labels: map[string]string{},
		pas: []*securityv1.PeerAuthentication{
			pa("shop", "ns", h, nil, strict, nil),
			pa("shop", "web", h, app, disable, nil),
		},
		want: got{Mode: "STRICT", Level: "namespace", Policy: "shop/ns", Namespace: "shop/ns"},
	}, {
		name:       "root namespace unreadable, the namespace decides",
		unreadable: []string{"istio-system"},
		pas:        []*securityv1.PeerAuthentication{pa("shop", "ns", h, nil, strict, nil)},
		want:       got{Mode: "STRICT", Level: "namespace", Policy: "shop/ns", Namespace: "shop/ns", Unread: []string{"istio-system"}},
	}, {
		name:       "root namespace unreadable, nothing below sets a mode",
		unreadable: []string{"istio-system"},
		pas:        []*securityv1.PeerAuthentication{pa("shop", "web", h, app, unset, map[uint32]securityv1beta1.PeerAuthentication_MutualTLS_Mode{8080: unset})},
		want:       got{Mode: "UNKNOWN", Workload: "shop/web", Ports: []PortMTLS{{Port: 8080, Mode: "UNKNOWN"}}, Unread: []string{"istio-system"}},
		describe:   "the PeerAuthentications in namespace istio-system could not be read",
	}, {
		name:       "the pod's namespace unreadable: unknown whatever the mesh says",
		unreadable: []string{"shop"},
		pas:        []*securityv1.PeerAuthentication{pa("istio-system", "default", h, nil, strict, nil)},
		want:       got{Mode: "UNKNOWN", MeshWide: "istio-system/default", Unread: []string{"shop"}},
	}, {
		name:       "cluster-wide list refused",
		unreadable: []string{metav1.NamespaceAll},
		want:       got{Mode: "UNKNOWN", Unread: []string{"istio-system", "shop"}},
		describe:   "the PeerAuthentications in namespace istio-system and shop could not be read",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, labels := tt.ns, tt.labels
			if ns == "" {
				ns = "shop"
			}
			if labels == nil {
				labels = podLabels
			}
			m := ResolvePeerAuthentication(PeerAuthentications{Items: tt.pas, Unreadable: tt.unreadable}, tt.root, ns, labels)
			if g := flatten(m); !reflect.DeepEqual(g, tt.want) {
				t.Errorf("got  %+v\nwant %+v", g, tt.want)
			}
			if tt.describe != "" && m.Describe() != tt.describe {
				t.Errorf("Describe() = %q, want %q", m.Describe(), tt.describe)
			}
		})
	}
}

func TestResolveMTLSIgnoresOrder(t *testing.T) {
	a := pa("shop", "a", time.Hour, nil, strict, nil)
	b := pa("shop", "b", 2*time.Hour, nil, disable, nil)
	for _, pas := range [][]*securityv1.PeerAuthentication{{a, b}, {b, a}} {
		if m := ResolveMTLS(pas, "", "shop", nil); m.Policy != b {
			t.Errorf("order %s,%s: picked %v, want b", pas[0].Name, pas[1].Name, m.Policy.Name)
		}
	}
}

func TestWorkloadPolicies(t *testing.T) {
	pas := []*securityv1.PeerAuthentication{
		pa("shop", "ns", time.Hour, nil, strict, nil),
		pa("shop", "empty", time.Hour, map[string]string{}, strict, nil),
		pa("shop", "web", time.Hour, map[string]string{"app": "web"}, strict, nil),
		pa("shop", "db", time.Hour, map[string]string{"app": "db"}, strict, nil),
		pa("istio-system", "gw", time.Hour, map[string]string{"app": "gw"}, strict, nil),
	}
	for ns, want := range map[string]int{"shop": 2, "istio-system": 0, "other": 0} {
		if got := WorkloadPolicies(pas, "", ns); got != want {
			t.Errorf("WorkloadPolicies(%s) = %d, want %d", ns, got, want)
		}
	}
}

func TestListPeerAuthentications(t *testing.T) {
	objs := []runtime.Object{
		pa("shop", "ns", time.Hour, nil, strict, nil),
		pa("istio-system", "default", time.Hour, nil, strict, nil),
		pa("other", "ns", time.Hour, nil, strict, nil),
	}
	tests := []struct {
		name       string
		namespaces []string
		forbid     string // namespace whose list is refused ("*" for none)
		notFound   bool
		want       []string
		unreadable []string
		err        string
	}{
		{name: "named namespaces, each once", namespaces: []string{"shop", "istio-system", "shop"}, forbid: "*", want: []string{"shop/ns", "istio-system/default"}},
		{name: "cluster-wide", forbid: "*", want: []string{"istio-system/default", "other/ns", "shop/ns"}},
		{name: "a refused namespace is recorded", namespaces: []string{"istio-system", "shop"}, forbid: "istio-system", want: []string{"shop/ns"}, unreadable: []string{"istio-system"}},
		{name: "refused cluster-wide", namespaces: []string{"shop", ""}, forbid: "", unreadable: []string{""}},
		{name: "CRD missing fails", namespaces: []string{"shop"}, forbid: "*", notFound: true,
			err: `listing peerauthentications in namespace shop: peerauthentications.security.istio.io "" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := istiofake.NewSimpleClientset(objs...)
			c.PrependReactor("list", "peerauthentications", func(a k8stesting.Action) (bool, runtime.Object, error) {
				gr := schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}
				if tt.notFound {
					return true, nil, apierrors.NewNotFound(gr, "")
				}
				if a.GetNamespace() == tt.forbid {
					return true, nil, apierrors.NewForbidden(gr, "", fmt.Errorf("no"))
				}
				return false, nil, nil
			})
			l, err := ListPeerAuthentications(context.Background(), c, tt.namespaces...)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %s", err, tt.err)
				}
				if !apierrors.IsNotFound(err) {
					t.Errorf("err does not wrap NotFound")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range l.Items {
				names = append(names, p.Namespace+"/"+p.Name)
			}
			if !reflect.DeepEqual(names, tt.want) || !reflect.DeepEqual(l.Unreadable, tt.unreadable) {
				t.Errorf("got %v unreadable %q, want %v unreadable %q", names, l.Unreadable, tt.want, tt.unreadable)
			}
		})
	}
}
