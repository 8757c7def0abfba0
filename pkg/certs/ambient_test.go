package certs

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// ztunnelForwarder answers /config_dump for ztunnel pods only: a
// port-forward to the ambient pod itself would be a bug.
type ztunnelForwarder struct {
	body map[string][]byte // ztunnel namespace/name → dump
	err  error
	got  []string
}

func (z *ztunnelForwarder) Get(_ context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	ref := pod.Namespace + "/" + pod.Name
	z.got = append(z.got, ref+":"+path)
	if z.err != nil {
		return nil, z.err
	}
	if port != ZtunnelAdminPort || path != ZtunnelConfigDumpPath {
		return nil, errors.New("unexpected port-forward")
	}
	b, ok := z.body[ref]
	if !ok {
		return nil, errors.New("port-forward to a pod that is no ztunnel: " + ref)
	}
	return b, nil
}

func ztunnelPod(ns, name, node string, ready bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": ZtunnelApp}},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "istio-proxy"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	return p
}

func ambientPod(ns, name, sa, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:   corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "reviews"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
}

func TestInspectAmbient(t *testing.T) {
	// A dump recorded in ztunnel's shape: bookinfo-productpage and
	// bookinfo-reviews, valid at now.
	dump, err := os.ReadFile("testdata/ztunnel_config_dump.json")
	if err != nil {
		t.Fatal(err)
	}
	initializing := []byte(strings.Replace(string(dump), `"state": "Available"`, `"state": "Initializing"`, 2))
	enrolled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	reviews := ambientPod("bookinfo", "reviews-v1-1", "bookinfo-reviews", "node1", nil)
	zt := ztunnelPod("istio-system", "ztunnel-abcde", "node1", true)
	ztOther := ztunnelPod("istio-system", "ztunnel-zzzzz", "node2", true)
	const origin = "ztunnel istio-system/ztunnel-abcde on node node1, admin config_dump via port-forward to 15000"
	noSidecar := "has no istio-proxy container, so it has no mesh certificate"

	tests := []struct {
		name     string
		objects  []runtime.Object
		pod      *corev1.Pod
		source   Source
		fwd      *ztunnelForwarder
		forbid   bool // listing pods is forbidden everywhere
		forbidNS bool // reading the namespace is forbidden
		origin   string
		identity string
		pending  bool
		wantErr  string
		asked    []string // port-forwards made
	}{
		{name: "namespace enrolled", objects: []runtime.Object{enrolled, zt, ztOther}, pod: reviews,
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews", asked: []string{"istio-system/ztunnel-abcde:/config_dump"}},
		{name: "pod enrolled by its own label", objects: []runtime.Object{plainNS, zt},
			pod:    ambientPod("bookinfo", "productpage-1", "bookinfo-productpage", "node1", map[string]string{"istio.io/dataplane-mode": "ambient"}),
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage", asked: []string{"istio-system/ztunnel-abcde:/config_dump"}},
		{name: "ztunnel in another namespace", objects: []runtime.Object{enrolled, ztunnelPod("kube-system", "ztunnel-k", "node1", true)}, pod: reviews,
			fwd:    &ztunnelForwarder{body: map[string][]byte{"kube-system/ztunnel-k": dump}},
			origin: "ztunnel kube-system/ztunnel-k on node node1, admin config_dump via port-forward to 15000", identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
		{name: "a ready ztunnel before one that is not", objects: []runtime.Object{enrolled, ztunnelPod("istio-system", "ztunnel-aaaaa", "node1", false), zt}, pod: reviews,
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
		{name: "forced --source ztunnel", objects: []runtime.Object{plainNS, zt}, source: SourceZtunnel,
			pod:    ambientPod("bookinfo", "reviews-v1-1", "bookinfo-reviews", "node1", nil),
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
		{name: "identity still initializing is pending", objects: []runtime.Object{enrolled, zt}, pod: reviews,
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": initializing}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews", pending: true},
		{name: "no ztunnel on the node", objects: []runtime.Object{enrolled, ztOther}, pod: reviews, fwd: &ztunnelForwarder{},
			wantErr: "pod bookinfo/reviews-v1-1 is enrolled in ambient mode but no ztunnel pod (label app=ztunnel) runs on its node node1, so it has no mesh certificate and its traffic is not in the mesh; check Istio's ztunnel DaemonSet (kubectl get pods -A -l app=ztunnel -o wide)"},
		{name: "no certificate for the identity yet", objects: []runtime.Object{enrolled, zt},
			pod:     ambientPod("bookinfo", "ratings-1", "bookinfo-ratings", "node1", nil),
			fwd:     &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			wantErr: "the ztunnel istio-system/ztunnel-abcde on node node1 has no certificate for pod bookinfo/ratings-1 (namespace bookinfo, service account bookinfo-ratings) yet: ztunnel fetches a workload's certificate from istiod on its first traffic; send a request to or from the pod and try again"},
		{name: "ztunnel without any certificate", objects: []runtime.Object{enrolled, zt}, pod: reviews,
			fwd:     &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": []byte(`{"workloads": [], "certificates": []}`)}},
			wantErr: "the ztunnel istio-system/ztunnel-abcde on node node1 has no certificate for pod bookinfo/reviews-v1-1 (namespace bookinfo, service account bookinfo-reviews) yet: ztunnel fetches"},
		{name: "port-forward to ztunnel forbidden", objects: []runtime.Object{enrolled, zt}, pod: reviews,
			fwd:     &ztunnelForwarder{err: &ForbiddenError{Namespace: "istio-system", Pod: "ztunnel-abcde", Subresource: "portforward", Err: errors.New("forbidden by RBAC")}},
			wantErr: "not allowed to port-forward to pod istio-system/ztunnel-abcde: forbidden by RBAC; ask for RBAC rights to create pods/portforward in namespace istio-system (check with: kubectl auth can-i create pods/portforward -n istio-system)"},
		{name: "ztunnel admin unreachable", objects: []runtime.Object{enrolled, zt}, pod: reviews,
			fwd:     &ztunnelForwarder{err: &UnreachableError{Namespace: "istio-system", Pod: "ztunnel-abcde", Port: 15000, Err: errors.New("connection refused")}},
			wantErr: "ztunnel admin port 15000 of pod istio-system/ztunnel-abcde is unreachable: connection refused; check the ztunnel (kubectl logs ztunnel-abcde -n istio-system)"},
		{name: "an Envoy answers instead", objects: []runtime.Object{enrolled, zt}, pod: reviews,
			fwd:     &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": []byte(`{"configs": []}`)}},
			wantErr: "reading the config_dump of the ztunnel istio-system/ztunnel-abcde: "},
		{name: "pods may not be listed", objects: []runtime.Object{enrolled, zt}, pod: reviews, fwd: &ztunnelForwarder{}, forbid: true,
			wantErr: "cannot look for the ztunnel on node node1: not allowed to list pods in namespace istio-system nor all namespaces; ask for RBAC rights to list pods in istio-system (check with: kubectl auth can-i list pods -n istio-system)"},
		{name: "opted out is no ambient pod", objects: []runtime.Object{enrolled, zt},
			pod: ambientPod("bookinfo", "reviews-v1-1", "bookinfo-reviews", "node1", map[string]string{"istio.io/dataplane-mode": "none"}),
			fwd: &ztunnelForwarder{}, wantErr: "pod bookinfo/reviews-v1-1 " + noSidecar},
		{name: "namespace not enrolled", objects: []runtime.Object{plainNS, zt},
			pod: ambientPod("plain", "web-1", "", "node1", nil), fwd: &ztunnelForwarder{}, wantErr: "pod plain/web-1 " + noSidecar},
		{name: "namespace unreadable: the ztunnel knows the pod", objects: []runtime.Object{enrolled, zt}, pod: reviews, forbidNS: true,
			fwd:    &ztunnelForwarder{body: map[string][]byte{"istio-system/ztunnel-abcde": dump}},
			origin: origin, identity: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"},
		{name: "namespace unreadable and no ztunnel", objects: []runtime.Object{enrolled}, pod: reviews, forbidNS: true, fwd: &ztunnelForwarder{},
			wantErr: "pod bookinfo/reviews-v1-1 " + noSidecar + "; enable sidecar injection and restart its workloads:\n  kubectl mesh enable-injection bookinfo\n  kubectl mesh restart bookinfo\n" +
				"(namespace bookinfo could not be read to tell whether the pod is in ambient mode; asking the ztunnel on its node: pod bookinfo/reviews-v1-1 is enrolled in ambient mode but no ztunnel pod"},
		{name: "not scheduled", objects: []runtime.Object{enrolled, zt}, pod: ambientPod("bookinfo", "reviews-v1-1", "bookinfo-reviews", "", nil),
			fwd: &ztunnelForwarder{}, wantErr: "pod bookinfo/reviews-v1-1 is not scheduled to a node yet, so no ztunnel holds its certificate; wait for it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := kubefake.NewClientset(tt.objects...)
			if tt.forbidNS {
				kube.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "bookinfo", errors.New("RBAC"))
				})
			}
			if tt.forbid {
				kube.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("RBAC"))
				})
			}
			rs, err := Inspect(context.Background(), Clients{Forwarder: tt.fwd, Executor: stubExecutor{}, Kube: kube}, Config{Source: tt.source, Now: now}, tt.pod)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 {
				t.Fatalf("%d reports, want 1", len(rs))
			}
			r := rs[0]
			if r.Source != SourceZtunnel || r.Origin != tt.origin || r.Identity != tt.identity {
				t.Errorf("source %s origin %q identity %q", r.Source, r.Origin, r.Identity)
			}
			if tt.pending {
				if !r.Verdict.Pending || r.Verdict.OK {
					t.Errorf("verdict %+v, want pending", r.Verdict)
				}
			} else if !r.Verdict.OK {
				t.Errorf("verdict %+v", r.Verdict)
			}
			if r.Workload == nil || r.Workload.Pod != tt.pod.Name || r.Workload.ServiceAccount != tt.pod.Spec.ServiceAccountName {
				t.Errorf("workload %+v", r.Workload)
			}
			if tt.asked != nil && strings.Join(tt.fwd.got, " ") != strings.Join(tt.asked, " ") {
				t.Errorf("port-forwards %q, want %q", tt.fwd.got, tt.asked)
			}
		})
	}
}
