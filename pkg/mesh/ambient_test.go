package mesh

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAmbientOf(t *testing.T) {
	amb := map[string]string{LabelDataplaneMode: "ambient"}
	pod := func(labels, annotations map[string]string, hostNet bool, containers ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations}}
		p.Spec.HostNetwork = hostNet
		for _, c := range append([]string{"app"}, containers...) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
		}
		return p
	}
	tests := []struct {
		name     string
		nsLabels map[string]string
		pod      *corev1.Pod
		want     Ambient
	}{
		{"plain namespace", nil, pod(nil, nil, false), Ambient{}},
		{"namespace labelled sidecar-free", map[string]string{LabelDataplaneMode: "none"}, pod(nil, nil, false), Ambient{}},
		{"ambient namespace", amb, pod(nil, nil, false), Ambient{AmbientCaptured, "namespace"}},
		{"pod label in a plain namespace", nil, pod(map[string]string{LabelDataplaneMode: "ambient"}, nil, false), Ambient{AmbientCaptured, "pod"}},
		{"opted out", amb, pod(map[string]string{LabelDataplaneMode: "none"}, nil, false), Ambient{AmbientOptedOut, "namespace"}},
		{"another pod value opts out too", amb, pod(map[string]string{LabelDataplaneMode: "sidecar"}, nil, false), Ambient{AmbientOptedOut, "namespace"}},
		{"opt-out label in a plain namespace", nil, pod(map[string]string{LabelDataplaneMode: "none"}, nil, false), Ambient{}},
		{"sidecar by annotation", amb, pod(nil, map[string]string{AnnotationSidecarStatus: "{}"}, false), Ambient{AmbientSidecar, "namespace"}},
		{"sidecar by container", amb, pod(nil, nil, false, ProxyContainer), Ambient{AmbientSidecar, "namespace"}},
		{"sidecar wins over the pod's own ambient label", nil, pod(map[string]string{LabelDataplaneMode: "ambient"}, nil, false, ProxyContainer), Ambient{AmbientSidecar, "pod"}},
		{"host network", amb, pod(nil, nil, true), Ambient{AmbientHostNetwork, "namespace"}},
		// istiod's waypoint template: the proxy is the pod, opted out by label.
		{"waypoint proxy", amb, pod(map[string]string{LabelGatewayClass: WaypointClass, LabelGatewayName: "waypoint", LabelDataplaneMode: "none"}, nil, false, ProxyContainer), Ambient{Mode: AmbientWaypoint}},
		{"waypoint proxy in a plain namespace", nil, pod(map[string]string{LabelGatewayClass: WaypointClass}, nil, false, ProxyContainer), Ambient{Mode: AmbientWaypoint}},
		{"ingress gateway of class istio is not a waypoint", amb, pod(map[string]string{LabelGatewayClass: "istio"}, nil, false, ProxyContainer), Ambient{AmbientSidecar, "namespace"}},
	}
	for _, tt := range tests {
		if got := AmbientOf(tt.pod, tt.nsLabels); got != tt.want {
			t.Errorf("%s: AmbientOf = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestWaypointOf(t *testing.T) {
	tests := []struct {
		labels         map[string]string
		wantNS, wantWP string
		wantOK         bool
	}{
		{nil, "", "", false},
		{map[string]string{LabelUseWaypoint: "none"}, "", "", false},
		{map[string]string{LabelUseWaypoint: "waypoint"}, "shop", "waypoint", true},
		{map[string]string{LabelUseWaypoint: "shared", LabelUseWaypointNamespace: "infra"}, "infra", "shared", true},
	}
	for _, tt := range tests {
		ns, name, ok := WaypointOf(tt.labels, "shop")
		if ns != tt.wantNS || name != tt.wantWP || ok != tt.wantOK {
			t.Errorf("WaypointOf(%v) = %q, %q, %v; want %q, %q, %v", tt.labels, ns, name, ok, tt.wantNS, tt.wantWP, tt.wantOK)
		}
	}
}
