package mesh

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestImageVersion(t *testing.T) {
	const digest = "sha256:4d2c5e4c8e2cbf7cbd1f2a1a7bd0e3e4b3f6a9b4c1a7d8e9f0a1b2c3d4e5f6a7"
	tests := []struct {
		image, want string
	}{
		{"gcr.io/istio-release/proxyv2:1.31.0", "1.31.0"},
		{"docker.io/istio/pilot:1.31.0-distroless", "1.31.0"},
		{"docker.io/istio/proxyv2:1.31.0-debug", "1.31.0"},
		{"istio/proxyv2:1.30.2", "1.30.2"},
		{"proxyv2:1.31.0-beta.1", "1.31.0-beta.1"},
		{"gcr.io/istio-testing/pilot:1.31-alpha.0b6c3f5e-distroless", "1.31-alpha.0b6c3f5e"},
		{"registry.local:5000/istio/proxyv2:1.31.0", "1.31.0"},
		{"registry.local:5000/istio/proxyv2", ""},
		{"[fd00::1]:5000/istio/proxyv2:1.31.0-distroless", "1.31.0"},
		{"docker.io/istio/proxyv2@" + digest, ""},
		{"registry.local:5000/istio/proxyv2@" + digest, ""},
		{"docker.io/istio/proxyv2:1.31.0@" + digest, "1.31.0"},
		{"docker.io/istio/proxyv2:latest", ""},
		{"docker.io/istio/proxyv2:latest-distroless", ""},
		{"docker.io/istio/proxyv2", ""},
		{"auto", ""},
		{"", ""},
		{"Docker.io/Istio/Proxyv2:1.31.0", ""},
		{"docker.io/istio/proxyv2:", ""},
	}
	for _, tt := range tests {
		if got := ImageVersion(tt.image); got != tt.want {
			t.Errorf("ImageVersion(%q) = %q, want %q", tt.image, got, tt.want)
		}
	}
}

func TestTagVersion(t *testing.T) {
	tests := []struct{ tag, want string }{
		{"1.31.0", "1.31.0"},
		{"1.31.0-distroless", "1.31.0"},
		{"1.31.0-debug", "1.31.0"},
		{"latest", ""},
		{"", ""},
		{"1.31-dev", "1.31-dev"},
	}
	for _, tt := range tests {
		if got := TagVersion(tt.tag); got != tt.want {
			t.Errorf("TagVersion(%q) = %q, want %q", tt.tag, got, tt.want)
		}
	}
}

func TestIstiodVersion(t *testing.T) {
	dep := func(cs ...corev1.Container) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		d.Spec.Template.Spec.Containers = cs
		return d
	}
	tests := []struct {
		name string
		d    *appsv1.Deployment
		want string
	}{
		{"distroless", dep(corev1.Container{Name: "discovery", Image: "docker.io/istio/pilot:1.31.0-distroless"}), "1.31.0"},
		{"plain", dep(corev1.Container{Name: "discovery", Image: "gcr.io/istio-release/pilot:1.30.1"}), "1.30.1"},
		{"discovery after another container", dep(corev1.Container{Name: "sidecar", Image: "x:9"}, corev1.Container{Name: "discovery", Image: "pilot:1.29.0"}), "1.29.0"},
		{"no discovery container", dep(corev1.Container{Name: "pilot", Image: "pilot:1.29.0"}), ""},
		{"digest only", dep(corev1.Container{Name: "discovery", Image: "pilot@sha256:4d2c5e4c8e2cbf7cbd1f2a1a7bd0e3e4b3f6a9b4c1a7d8e9f0a1b2c3d4e5f6a7"}), ""},
	}
	for _, tt := range tests {
		if got := IstiodVersion(tt.d); got != tt.want {
			t.Errorf("%s: IstiodVersion = %q, want %q", tt.name, got, tt.want)
		}
	}
}
