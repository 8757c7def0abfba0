package inject

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// ambientCluster is an ambient namespace "amb" whose label names a
// waypoint that does not exist, with Services naming a real waypoint and a
// Gateway of another class; pods captured on a node with and one without a
// ready ztunnel, opted out, with a sidecar and on the host network; a pod
// labelled ambient in a plain namespace; and a namespace with nothing
// ambient.
func ambientCluster() []runtime.Object {
	onNode := func(p *corev1.Pod, node string) *corev1.Pod { p.Spec.NodeName = node; return p }
	bare := func(ns, name, node string, labels, annotations map[string]string, hostNet bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
			Spec:   corev1.PodSpec{NodeName: node, HostNetwork: hostNet, Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		return p
	}
	zt := func(name, node string, ready corev1.ConditionStatus) *corev1.Pod {
		p := bare("istio-system", name, node, map[string]string{"app": "ztunnel"}, nil, false)
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		return p
	}
	svc := func(ns, name string, labels map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
	}
	// api-wp's proxy, as istiod's waypoint template labels it.
	waypointPod := bare("amb", "api-wp-6c8f9", "node2", map[string]string{"gateway.networking.k8s.io/gateway-name": "api-wp",
		"gateway.networking.k8s.io/gateway-class-name": "istio-waypoint", LabelDataplaneMode: "none"}, nil, false)
	waypointPod.Spec.Containers = []corev1.Container{{Name: "istio-proxy", Image: "docker.io/istio/proxyv2:1.31.0"}}
	waypointPod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	d := deployment("amb", "app", 2, nil, nil)
	side := deployment("amb", "side", 1, nil, nil)
	return []runtime.Object{
		namespace("amb", map[string]string{LabelDataplaneMode: "ambient", "istio.io/use-waypoint": "waypoint"}),
		namespace("plain", nil), namespace("off", nil), namespace("istio-system", nil),
		d, onNode(pod(d, 0, "", ""), "node1"), onNode(pod(d, 1, "", ""), "node2"),
		side, onNode(pod(side, 0, "default", "1.31.0"), "node1"),
		bare("amb", "opt", "node1", map[string]string{LabelDataplaneMode: "none"}, nil, false),
		bare("amb", "hostnet", "node1", nil, nil, true),
		waypointPod,
		bare("plain", "solo", "node2", map[string]string{LabelDataplaneMode: "ambient"}, nil, false),
		bare("off", "quiet", "node1", nil, nil, false),
		zt("ztunnel-a", "node1", corev1.ConditionTrue), zt("ztunnel-b", "node2", corev1.ConditionFalse),
		svc("amb", "api", map[string]string{"istio.io/use-waypoint": "api-wp"}),
		svc("amb", "web", map[string]string{"istio.io/use-waypoint": "gw"}),
		svc("amb", "db", map[string]string{"istio.io/use-waypoint": "none"}),
		svc("amb", "cache", nil),
	}
}

func gateway(ns, name, class string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("gateway.networking.k8s.io/v1")
	u.SetKind("Gateway")
	u.SetNamespace(ns)
	u.SetName(name)
	_ = unstructured.SetNestedField(u.Object, class, "spec", "gatewayClassName")
	u.SetGeneration(1)
	programmed := map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": int64(1)}
	_ = unstructured.SetNestedSlice(u.Object, []any{programmed}, "status", "conditions")
	return u
}

// pendingGateway is a Gateway no controller has taken: the CRD's default
// status.
func pendingGateway(ns, name, class string) *unstructured.Unstructured {
	u := gateway(ns, name, class)
	pending := map[string]any{"type": "Programmed", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller"}
	_ = unstructured.SetNestedSlice(u.Object, []any{pending}, "status", "conditions")
	return u
}

// gatewayClient holds gws under traffic.Gateways (the fake's constructor would
// guess another resource for them).
func gatewayClient(gws ...*unstructured.Unstructured) *dynamicfake.FakeDynamicClient {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{traffic.Gateways: "GatewayList"})
	for _, gw := range gws {
		if err := dyn.Tracker().Create(traffic.Gateways, gw, gw.GetNamespace()); err != nil {
			panic(err)
		}
	}
	return dyn
}

func TestBuildAmbientStatus(t *testing.T) {
	gws := []*unstructured.Unstructured{gateway("amb", "api-wp", "istio-waypoint"), gateway("amb", "gw", "istio")}
	const wantTable = `
AMBIENT   ENROLLED     PODS IN AMBIENT   OPTED OUT   SIDECAR   WAYPOINT             SERVICE WAYPOINTS   PROBLEMS
amb       namespace    2/5               1           1         waypoint (missing)   2                   no ztunnel on node node2 (1 pod not captured); waypoint amb/waypoint missing; service web: waypoint amb/gw not a waypoint (class istio); 1 pod on the host network (not captured); 1 pod with a sidecar (the sidecar takes precedence over ambient)
plain     pod labels   1/1               0           0         -                    0                   no ztunnel on node node2 (1 pod not captured)

POD                NODE    DATAPLANE                   ZTUNNEL                  PROBLEM
amb/api-wp-6c8f9   node2   waypoint proxy              -                        -
amb/app-abc12-a    node1   ambient (namespace label)   istio-system/ztunnel-a   -
amb/app-abc12-b    node2   ambient (namespace label)   -                        no ready ztunnel on node node2
amb/hostnet        node1   host network                -                        uses the host network, which ztunnel cannot capture
amb/opt            node1   opted out (pod label)       -                        -
amb/side-abc12-a   node1   sidecar, not ztunnel        -                        the sidecar takes precedence: Istio does not redirect a pod with a sidecar to ztunnel
plain/solo         node2   ambient (pod label)         -                        no ready ztunnel on node node2
`
	tests := []struct {
		name      string
		scope     Scope
		gateways  func() *dynamicfake.FakeDynamicClient
		refuse    string // resource whose list is forbidden
		wantWP    string
		wantNotes []string
	}{
		{name: "all namespaces", scope: Scope{AllNamespaces: true}, gateways: func() *dynamicfake.FakeDynamicClient { return gatewayClient(gws...) },
			wantWP: "amb/waypoint missing; api amb/api-wp ok; web amb/gw not a waypoint (class istio)"},
		{name: "one namespace", scope: Scope{Namespaces: []string{"amb"}}, gateways: func() *dynamicfake.FakeDynamicClient { return gatewayClient(gws...) },
			wantWP: "amb/waypoint missing; api amb/api-wp ok; web amb/gw not a waypoint (class istio)"},
		{name: "the waypoint exists", scope: Scope{Namespaces: []string{"amb"}},
			gateways: func() *dynamicfake.FakeDynamicClient {
				return gatewayClient(append([]*unstructured.Unstructured{gateway("amb", "waypoint", "istio-waypoint")}, gws...)...)
			},
			wantWP: "amb/waypoint no ready pod; api amb/api-wp ok; web amb/gw not a waypoint (class istio)"},
		{name: "the waypoint is not programmed", scope: Scope{Namespaces: []string{"amb"}},
			gateways: func() *dynamicfake.FakeDynamicClient {
				return gatewayClient(append([]*unstructured.Unstructured{pendingGateway("amb", "waypoint", "istio-waypoint")}, gws...)...)
			},
			wantWP: "amb/waypoint not programmed; api amb/api-wp ok; web amb/gw not a waypoint (class istio)"},
		{name: "gateways forbidden", scope: Scope{Namespaces: []string{"amb"}}, refuse: "gateways",
			gateways:  func() *dynamicfake.FakeDynamicClient { return gatewayClient(gws...) },
			wantWP:    "amb/waypoint unchecked; api amb/api-wp unchecked; web amb/gw unchecked",
			wantNotes: []string{uncheckedGateways.String()}},
		{name: "ztunnel pods forbidden", scope: Scope{Namespaces: []string{"amb"}}, refuse: "pods",
			gateways:  func() *dynamicfake.FakeDynamicClient { return gatewayClient(gws...) },
			wantWP:    "amb/waypoint missing; api amb/api-wp ok; web amb/gw not a waypoint (class istio)",
			wantNotes: []string{uncheckedZtunnelPods.String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := kubefake.NewClientset(ambientCluster()...)
			dyn := tt.gateways()
			forbid := func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetNamespace() != "" && tt.refuse == "pods" {
					return false, nil, nil // the namespace's own pods stay readable
				}
				return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", fmt.Errorf("no"))
			}
			switch tt.refuse {
			case "gateways":
				dyn.PrependReactor("list", "gateways", forbid)
			case "pods":
				kube.PrependReactor("list", "pods", forbid)
			}
			rep, err := BuildStatusWithGateways(context.Background(), kube, istiofake.NewSimpleClientset(), dyn, tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			var wp bytes.Buffer
			ns := rep.Ambient[0]
			fmt.Fprintf(&wp, "%s %s", ns.Waypoint, ns.Waypoint.State)
			for _, s := range ns.ServiceWaypoints {
				fmt.Fprintf(&wp, "; %s %s %s", s.Service, s.Waypoint.String(), s.Waypoint.State)
			}
			if wp.String() != tt.wantWP {
				t.Errorf("waypoints = %s, want %s", wp.String(), tt.wantWP)
			}
			var notes []string
			for _, u := range rep.Unchecked {
				notes = append(notes, u.String())
			}
			if fmt.Sprint(notes) != fmt.Sprint(tt.wantNotes) {
				t.Errorf("notes = %q, want %q", notes, tt.wantNotes)
			}
			if tt.name != "all namespaces" {
				return
			}
			var out bytes.Buffer
			if err := WriteAmbient(&out, rep, true); err != nil {
				t.Fatal(err)
			}
			if out.String() != wantTable {
				t.Errorf("WriteAmbient =\n%s\nwant\n%s", out.String(), wantTable)
			}
			// "off" has nothing ambient, so it has no row; ztunnel pods are not workloads of a namespace in scope.
			if len(rep.Ambient) != 2 || len(rep.AmbientPods) != 7 {
				t.Errorf("%d ambient namespaces and %d pods, want 2 and 7", len(rep.Ambient), len(rep.AmbientPods))
			}
		})
	}
}

// TestAmbientWaypointElsewhere: a waypoint in another namespace
// (istio.io/use-waypoint-namespace) is looked up there, and a cluster
// without the Gateway API has every waypoint missing.
func TestAmbientWaypointElsewhere(t *testing.T) {
	objs := []runtime.Object{namespace("amb", map[string]string{LabelDataplaneMode: "ambient",
		"istio.io/use-waypoint": "shared", "istio.io/use-waypoint-namespace": "infra"}), namespace("infra", nil)}
	tests := []struct {
		name      string
		noAPI     bool
		want      string
		wantLists string
	}{
		{name: "in infra", want: "infra/shared ok", wantLists: "[infra]"},
		{name: "no Gateway API", noAPI: true, want: "infra/shared missing (Gateway API not installed)", wantLists: "[infra]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dyn := gatewayClient(gateway("infra", "shared", "istio-waypoint"), gateway("amb", "shared", "istio-waypoint"))
			if tt.noAPI {
				dyn.PrependReactor("list", "gateways", func(a k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewNotFound(a.GetResource().GroupResource(), "")
				})
			}
			rep, err := BuildStatusWithGateways(context.Background(), kubefake.NewClientset(objs...), istiofake.NewSimpleClientset(), dyn, Scope{Namespaces: []string{"amb"}})
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(rep.Ambient[0].Waypoint, " ", rep.Ambient[0].Waypoint.State); got != tt.want {
				t.Errorf("waypoint = %s, want %s", got, tt.want)
			}
			var lists []string
			for _, a := range dyn.Actions() {
				lists = append(lists, a.GetNamespace())
			}
			if fmt.Sprint(lists) != tt.wantLists {
				t.Errorf("gateways listed in %v, want %s", lists, tt.wantLists)
			}
		})
	}
}
