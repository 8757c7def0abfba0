package mesh

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSidecarOf(t *testing.T) {
	always, never := corev1.ContainerRestartPolicyAlways, corev1.ContainerRestartPolicy("Never")
	const proxy = "docker.io/istio/proxyv2:1.31.0-distroless"
	app := corev1.Container{Name: "app", Image: "app:1"}
	tests := []struct {
		name string
		pod  corev1.Pod
		want Sidecar
	}{
		{name: "no proxy", pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app}}}},
		{name: "regular sidecar, revision from the status annotation",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"istio.io/rev": "default"},
					Annotations: map[string]string{"sidecar.istio.io/status": `{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"canary"}`}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{app, {Name: "istio-proxy", Image: proxy}}}},
			want: Sidecar{Present: true, Image: proxy, Version: "1.31.0", Revision: "canary"}},
		{name: "revision from the label when the annotation has none",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"istio.io/rev": "stable"}, Annotations: map[string]string{"sidecar.istio.io/status": `not json`}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Image: "proxyv2:1.30.0"}}}},
			want: Sidecar{Present: true, Image: "proxyv2:1.30.0", Version: "1.30.0", Revision: "stable"}},
		{name: "native sidecar",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app},
				InitContainers: []corev1.Container{{Name: "istio-validation", Image: proxy}, {Name: "istio-proxy", Image: proxy, RestartPolicy: &always}}}},
			want: Sidecar{Present: true, Native: true, Image: proxy, Version: "1.31.0"}},
		{name: "init container named istio-proxy that runs once is no sidecar",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app},
				InitContainers: []corev1.Container{{Name: "istio-proxy", Image: proxy}}}}},
		{name: "init container with another restart policy is no sidecar",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app},
				InitContainers: []corev1.Container{{Name: "istio-proxy", Image: proxy, RestartPolicy: &never}}}}},
		{name: "istio-init alone is no sidecar",
			pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app},
				InitContainers: []corev1.Container{{Name: "istio-init", Image: proxy}}}}},
		{name: "unknown version", pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Image: "auto"}}}},
			want: Sidecar{Present: true, Image: "auto"}},
	}
	for _, tt := range tests {
		got := SidecarOf(&tt.pod)
		if got != tt.want {
			t.Errorf("%s: SidecarOf = %+v, want %+v", tt.name, got, tt.want)
		}
		if HasSidecar(&tt.pod) != tt.want.Present {
			t.Errorf("%s: HasSidecar = %v, want %v", tt.name, !tt.want.Present, tt.want.Present)
		}
	}
}
