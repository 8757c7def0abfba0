package mesh

import (
	corev1 "k8s.io/api/core/v1"
)

// Labels and values of Istio's ambient mode.
const (
	// LabelDataplaneMode enrols a namespace or a pod in ambient mode
	// (value DataplaneAmbient); on a pod, DataplaneNone opts it out.
	LabelDataplaneMode = "istio.io/dataplane-mode"
	DataplaneAmbient   = "ambient"
	DataplaneNone      = "none"
	// LabelUseWaypoint on a namespace, Service or pod names the waypoint
	// (a Gateway of class WaypointClass) its traffic goes through; "none"
	// means none. LabelUseWaypointNamespace says the Gateway's namespace
	// when it is not the labelled object's own.
	LabelUseWaypoint          = "istio.io/use-waypoint"
	LabelUseWaypointNamespace = "istio.io/use-waypoint-namespace"
	WaypointClass             = "istio-waypoint"
)

// AmbientMode is how ambient mode treats one pod.
type AmbientMode string

const (
	// NotAmbient: neither the pod nor its namespace is labelled ambient.
	NotAmbient AmbientMode = ""
	// AmbientCaptured: ztunnel carries the pod's traffic.
	AmbientCaptured AmbientMode = "ambient"
	// AmbientOptedOut: the pod is labelled istio.io/dataplane-mode=none
	// (or another value than ambient) in an ambient namespace.
	AmbientOptedOut AmbientMode = "opted-out"
	// AmbientSidecar: enrolled by a label but the pod has a sidecar; Istio
	// does not redirect such pods to ztunnel, the sidecar takes precedence.
	AmbientSidecar AmbientMode = "sidecar"
	// AmbientHostNetwork: enrolled by a label but on the host network,
	// which ztunnel cannot capture.
	AmbientHostNetwork AmbientMode = "host-network"
	// AmbientWaypoint: the pod is a waypoint's proxy (IsWaypointPod),
	// mesh infrastructure whatever the labels around it say.
	AmbientWaypoint AmbientMode = "waypoint"
)

// Ambient is a pod's ambient enrolment.
type Ambient struct {
	Mode AmbientMode
	// By is the label that enrols it: "namespace" or "pod" ("" when none).
	By string
}

// NamespaceAmbient says whether a namespace's labels enrol its pods.
func NamespaceAmbient(nsLabels map[string]string) bool {
	return nsLabels[LabelDataplaneMode] == DataplaneAmbient
}

// AmbientOf applies istio-cni's rules (PodRedirectionEnabled) to a pod in
// a namespace with nsLabels, after setting waypoint proxies apart (their
// template opts them out with istio.io/dataplane-mode=none): enrolled when the namespace or the pod is
// labelled istio.io/dataplane-mode=ambient; then not captured when the pod
// has a sidecar (Istio judges that by the sidecar.istio.io/status
// annotation; an istio-proxy container counts too), when the pod's own
// label says another mode (istio.io/dataplane-mode=none), or when it uses
// the host network.
func AmbientOf(pod *corev1.Pod, nsLabels map[string]string) Ambient {
	if IsWaypointPod(pod) {
		return Ambient{Mode: AmbientWaypoint}
	}
	podMode, podLabelled := pod.Labels[LabelDataplaneMode]
	var a Ambient
	switch {
	case podMode == DataplaneAmbient:
		a.By = "pod"
	case NamespaceAmbient(nsLabels):
		a.By = "namespace"
	default:
		return a
	}
	_, injected := pod.Annotations[AnnotationSidecarStatus]
	switch {
	case injected || HasSidecar(pod):
		a.Mode = AmbientSidecar
	case podLabelled && podMode != DataplaneAmbient:
		a.Mode = AmbientOptedOut
	case pod.Spec.HostNetwork:
		a.Mode = AmbientHostNetwork
	default:
		a.Mode = AmbientCaptured
	}
	return a
}

// WaypointOf is the waypoint an object's labels name: the Gateway's
// namespace and name, the namespace defaulting to the object's own (ns).
// ok is false when there is no istio.io/use-waypoint label or it says
// "none".
func WaypointOf(labels map[string]string, ns string) (namespace, name string, ok bool) {
	name = labels[LabelUseWaypoint]
	if name == "" || name == "none" {
		return "", "", false
	}
	namespace = ns
	if n := labels[LabelUseWaypointNamespace]; n != "" {
		namespace = n
	}
	return namespace, name, true
}

// IsZtunnelPod says whether a pod is one of ztunnel's: Istio's ztunnel
// chart labels them app=ztunnel.
func IsZtunnelPod(pod *corev1.Pod) bool { return pod.Labels["app"] == "ztunnel" }
