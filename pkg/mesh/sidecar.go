package mesh

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
)

// Sidecar is the Istio proxy of a pod.
type Sidecar struct {
	Present bool
	// Native says it runs as a native sidecar: an init container with
	// restartPolicy Always (Istio's ENABLE_NATIVE_SIDECARS).
	Native bool
	// Image is the istio-proxy container's image.
	Image string
	// Version is the Istio version of that image ("" when unknown).
	Version string
	// Revision is the revision that injected it, from sidecar.istio.io/status
	// or else the pod's istio.io/rev label ("" when neither says).
	Revision string
}

// ProxyOf returns the istio-proxy container of a pod spec: a regular
// container, or a native sidecar. An init container named istio-proxy
// without restartPolicy Always runs to completion before the app starts,
// so it is not a proxy. nil when there is none.
func ProxyOf(spec *corev1.PodSpec) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == ProxyContainer {
			return &spec.Containers[i]
		}
	}
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		if c.Name == ProxyContainer && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return c
		}
	}
	return nil
}

// HasSidecar says whether the pod runs the Istio proxy.
func HasSidecar(pod *corev1.Pod) bool { return ProxyOf(&pod.Spec) != nil }

// SidecarOf describes a pod's Istio proxy.
func SidecarOf(pod *corev1.Pod) Sidecar {
	c := ProxyOf(&pod.Spec)
	if c == nil {
		return Sidecar{}
	}
	s := Sidecar{Present: true, Image: c.Image, Version: ImageVersion(c.Image), Revision: pod.Labels[LabelRev]}
	for i := range pod.Spec.InitContainers {
		if c == &pod.Spec.InitContainers[i] {
			s.Native = true
		}
	}
	var st struct {
		Revision string `json:"revision"`
	}
	if raw := pod.Annotations[AnnotationSidecarStatus]; raw != "" && json.Unmarshal([]byte(raw), &st) == nil && st.Revision != "" {
		s.Revision = st.Revision
	}
	return s
}
