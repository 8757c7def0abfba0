package mesh

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzSidecarOf feeds arbitrary pod annotations and images, which any user
// who can create pods controls, to the sidecar detection and the image
// parser.
func FuzzSidecarOf(f *testing.F) {
	f.Add(`{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"default"}`, "docker.io/istio/proxyv2:1.31.0", "canary")
	f.Add(`{"revision":`, "reg:5000/proxyv2@sha256:00", "")
	f.Add(`{}`, "[::1]:5000/proxyv2:1.31.0-distroless", "")
	f.Fuzz(func(t *testing.T, status, image, revLabel string) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelRev: revLabel}, Annotations: map[string]string{AnnotationSidecarStatus: status}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: ProxyContainer, Image: image}}},
		}
		s := SidecarOf(p)
		if !s.Present {
			t.Fatal("istio-proxy not detected")
		}
		if s.Revision == "" && revLabel != "" {
			t.Fatalf("revision lost: label %q, status %q", revLabel, status)
		}
		if s.Version != "" && !strings.Contains(image, s.Version) {
			t.Fatalf("version %q is not in image %q", s.Version, image)
		}
	})
}
