package mesh

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Labels Istio's gateway controller puts on the Deployment, Service and
// pods it creates for a Gateway.
const (
	LabelGatewayName  = "gateway.networking.k8s.io/gateway-name"
	LabelGatewayClass = "gateway.networking.k8s.io/gateway-class-name"
)

// IsWaypointPod says whether a pod is a waypoint's proxy: istiod's
// waypoint template labels its pods with the Gateway's class. Such a pod
// is mesh infrastructure (an Envoy of its own, opted out of ztunnel), not
// a workload with a sidecar.
func IsWaypointPod(pod *corev1.Pod) bool { return pod.Labels[LabelGatewayClass] == WaypointClass }

// GatewayCondition is the Gateway status condition of type t. ok is false
// when there is none, or when it was written for an older generation of
// the Gateway (a controller has not looked at the latest spec yet).
func GatewayCondition(gw *unstructured.Unstructured, t string) (status, reason, message string, ok bool) {
	conds, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != t {
			continue
		}
		if og, found, _ := unstructured.NestedInt64(m, "observedGeneration"); found && og < gw.GetGeneration() {
			return "", "", "", false
		}
		status, _ = m["status"].(string)
		reason, _ = m["reason"].(string)
		message, _ = m["message"].(string)
		return status, reason, message, true
	}
	return "", "", "", false
}

// WaypointProgrammed says whether istiod programmed a waypoint Gateway
// (condition Programmed=True for its current generation): only then do
// ztunnels send it traffic. why says what is missing otherwise.
func WaypointProgrammed(gw *unstructured.Unstructured) (ok bool, why string) {
	status, reason, msg, found := GatewayCondition(gw, "Programmed")
	switch {
	case !found:
		return false, "no Programmed condition for its current generation yet"
	case status == "True":
		return true, ""
	case reason == "Pending" && msg == "Waiting for controller":
		// The Gateway CRD's default status: no controller wrote one.
		return false, "Programmed=" + status + " (Pending: Waiting for controller), so no controller has taken it"
	}
	why = fmt.Sprintf("Programmed=%s", status)
	if reason != "" {
		why += " (" + reason
		if msg != "" {
			why += ": " + msg
		}
		why += ")"
	}
	return false, why
}
