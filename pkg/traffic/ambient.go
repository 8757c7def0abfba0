package traffic

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Labels and names of Istio's ambient mode that decide whether a route
// takes effect (the rest are in pkg/mesh). In ambient mode ztunnel carries
// traffic at L4 only; a VirtualService or HTTPRoute for a Service is
// applied by the waypoint that serves the Service, and without one Istio
// ignores it without a word.
const (
	// LabelWaypointFor says which traffic a waypoint serves: service,
	// workload, all or none.
	LabelWaypointFor = "istio.io/waypoint-for"
	// AnnotationRedirection is set by istio-cni on pods whose traffic
	// ztunnel captures.
	AnnotationRedirection = "ambient.istio.io/redirection"
	// hbonePort is the waypoint listener's port (protocol HBONE).
	hbonePort = 15008
)

// GatewayClasses are read for a waypoint's default istio.io/waypoint-for.
var GatewayClasses = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}

// NoWaypointError is split's refusal to write a route that no waypoint
// would apply.
type NoWaypointError struct {
	Namespace, Service string
	// Why the Service is ambient, e.g. "namespace shop has istio.io/dataplane-mode=ambient".
	Ambient string
	// Reason no waypoint serves it.
	Reason string
	// Fix says what to do.
	Fix string
}

func (e *NoWaypointError) Error() string {
	return fmt.Sprintf("service %s/%s is in ambient mode (%s), where only a waypoint applies L7 routes, and no waypoint serves it: %s; "+
		"Istio would ignore this split. %s, then split again; or pass --force to write the route anyway",
		e.Namespace, e.Service, e.Ambient, e.Reason, e.Fix)
}

// Warning is what --force prints instead of the refusal.
func (e *NoWaypointError) Warning() string {
	return fmt.Sprintf("warning: service %s/%s is in ambient mode and no waypoint serves it (%s): Istio ignores this route until one does. %s",
		e.Namespace, e.Service, e.Reason, e.Fix)
}

// ambientState is what split learned about ambient mode for a Service.
type ambientState struct {
	// refusal is set when the Service is ambient and no waypoint is known
	// to serve it.
	refusal *NoWaypointError
	// notes are remarks that do not stop the split.
	notes []string
}

// showNotes are the remarks when only showing the split: the refusal
// becomes a note, since nothing is written.
func (st *ambientState) showNotes() []string {
	if st.refusal == nil {
		return st.notes
	}
	return append(st.notes, fmt.Sprintf("service %s/%s is in ambient mode (%s) and no waypoint serves it: %s; Istio ignores its routes until one does. %s",
		st.refusal.Namespace, st.refusal.Service, st.refusal.Ambient, st.refusal.Reason, st.refusal.Fix))
}

// checkAmbient decides whether a route for b takes effect under ambient
// mode. Pods that all run a sidecar are not ambient (the sidecar applies
// the route), so the namespace is read only when some pod has none.
func checkAmbient(ctx context.Context, c Clients, b *backend) (*ambientState, error) {
	st := &ambientState{}
	ns, svc := b.svc.Namespace, b.svc.Name
	// Pods that would stay out of ztunnel even in an ambient namespace
	// (sidecars, opt-outs) leave nothing to check.
	enrolled := map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient}
	maybe := len(b.pods) == 0
	for i := range b.pods {
		if mesh.AmbientOf(&b.pods[i], enrolled).Mode == mesh.AmbientCaptured {
			maybe = true
		}
	}
	if !maybe {
		return st, nil
	}
	nsObj, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		nsObj = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	case apierrors.IsForbidden(err):
		nsObj = nil
	case err != nil:
		return nil, fmt.Errorf("getting namespace %s to check ambient mode: %w", ns, err)
	}
	why := ambientReason(nsObj, b)
	if why == "" {
		if nsObj == nil {
			st.notes = append(st.notes, fmt.Sprintf("could not read namespace %s (forbidden) to check whether it is in ambient mode; if it is, this route takes effect only through a waypoint (ask a cluster admin for \"get\" on namespaces to have it checked)", ns))
		}
		return st, nil
	}
	reason, fix, notes, err := waypointFor(ctx, c, b, nsObj)
	if err != nil {
		return nil, err
	}
	st.notes = notes
	if reason != "" {
		st.refusal = &NoWaypointError{Namespace: ns, Service: svc, Ambient: why, Reason: reason, Fix: fix}
	}
	return st, nil
}

// ambientReason says why the Service's traffic is ambient, or "" when it
// is not: a pod without a sidecar that ztunnel captures (pod label, CNI
// annotation, or the namespace label without a pod opt-out).
func ambientReason(nsObj *corev1.Namespace, b *backend) string {
	var nsLabels map[string]string
	if nsObj != nil {
		nsLabels = nsObj.Labels
	}
	if len(b.pods) == 0 && mesh.NamespaceAmbient(nsLabels) {
		return fmt.Sprintf("namespace %s has %s=%s", nsObj.Name, mesh.LabelDataplaneMode, mesh.DataplaneAmbient)
	}
	for i := range b.pods {
		p := &b.pods[i]
		a := mesh.AmbientOf(p, nsLabels)
		switch {
		case a.Mode == mesh.AmbientCaptured && a.By == "pod":
			return fmt.Sprintf("pod %s has %s=%s", p.Name, mesh.LabelDataplaneMode, mesh.DataplaneAmbient)
		case a.Mode == mesh.AmbientCaptured:
			return fmt.Sprintf("namespace %s has %s=%s and pod %s has no sidecar", nsObj.Name, mesh.LabelDataplaneMode, mesh.DataplaneAmbient, p.Name)
		case a.Mode == mesh.NotAmbient && nsObj == nil && p.Annotations[AnnotationRedirection] == "enabled":
			return fmt.Sprintf("pod %s has %s=enabled", p.Name, AnnotationRedirection)
		}
	}
	return ""
}

// waypointFor finds the waypoint Istio would use for the Service, as
// istiod does: the Service's istio.io/use-waypoint label, else the
// namespace's ("none" on the Service opts out); the Gateway in
// istio.io/use-waypoint-namespace or the Service's namespace; its
// istio.io/waypoint-for (Gateway, else GatewayClass, else "service") must
// be service or all; its HBONE listener must accept the Service's
// namespace. reason is "" when a waypoint serves the Service.
func waypointFor(ctx context.Context, c Clients, b *backend, nsObj *corev1.Namespace) (reason, fix string, notes []string, err error) {
	ns, svc := b.svc.Namespace, b.svc.Name
	create := fmt.Sprintf("create one with: kubectl mesh enable-injection %s --ambient --waypoint (or: istioctl waypoint apply -n %s --enroll-namespace)", ns, ns)
	owner, lbls := "service "+ns+"/"+svc, b.svc.Labels
	if lbls[mesh.LabelUseWaypoint] == mesh.DataplaneNone {
		return fmt.Sprintf("service %s/%s opts out of waypoints with %s=none", ns, svc, mesh.LabelUseWaypoint),
			fmt.Sprintf("Remove the label (kubectl label service %s -n %s %s-) and %s", svc, ns, mesh.LabelUseWaypoint, create), nil, nil
	}
	wpNS, name, ok := mesh.WaypointOf(lbls, ns)
	if !ok {
		if nsObj == nil {
			return fmt.Sprintf("service %s/%s has no %s label, and namespace %s could not be read (forbidden) to see whether it names one", ns, svc, mesh.LabelUseWaypoint, ns),
				"Ask a cluster admin for \"get\" on namespaces, or " + create, nil, nil
		}
		owner, lbls = "namespace "+ns, nsObj.Labels
		if lbls[mesh.LabelUseWaypoint] == mesh.DataplaneNone {
			return fmt.Sprintf("namespace %s opts out of waypoints with %s=none", ns, mesh.LabelUseWaypoint),
				fmt.Sprintf("Label the service for a waypoint (kubectl label service %s -n %s %s=NAME) or %s", svc, ns, mesh.LabelUseWaypoint, create), nil, nil
		}
		if wpNS, name, ok = mesh.WaypointOf(lbls, ns); !ok {
			return fmt.Sprintf("neither the service nor namespace %s has the label %s", ns, mesh.LabelUseWaypoint), strings.ToUpper(create[:1]) + create[1:], nil, nil
		}
	}
	ref := wpNS + "/" + name
	via := fmt.Sprintf("%s has %s=%s", owner, mesh.LabelUseWaypoint, name)
	createNamed := fmt.Sprintf("Create it with: kubectl mesh enable-injection %s --ambient --waypoint=%s (or: istioctl waypoint apply -n %s --name %s)", wpNS, name, wpNS, name)
	gw, err := c.Dynamic.Resource(Gateways).Namespace(wpNS).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("%s, and no Gateway %s exists", via, ref), createNamed, nil, nil
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("%s, and Gateway %s could not be read to check that it exists and serves services (forbidden)", via, ref),
			fmt.Sprintf("Ask a cluster admin for \"get\" on %s in namespace %s", qualifiedResource(Gateways), wpNS), nil, nil
	case err != nil:
		return "", "", nil, fmt.Errorf("getting waypoint gateway %s: %w", ref, err)
	}
	class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	forType, src := gw.GetLabels()[LabelWaypointFor], "Gateway "+ref
	if forType == "" {
		forType, src = "service", "Istio's default"
		gc, err := c.Dynamic.Resource(GatewayClasses).Get(ctx, class, metav1.GetOptions{})
		switch {
		case err == nil && gc.GetLabels()[LabelWaypointFor] != "":
			forType, src = gc.GetLabels()[LabelWaypointFor], "GatewayClass "+class
		case err != nil && !apierrors.IsNotFound(err):
			notes = append(notes, fmt.Sprintf("could not read GatewayClass %s (%s); assuming Istio's default %s=service for waypoint %s", class, errReason(err), LabelWaypointFor, ref))
		}
	}
	if forType != "service" && forType != "all" {
		return fmt.Sprintf("%s, and %s sets %s=%s, so it serves no traffic addressed to services", via, src, LabelWaypointFor, forType),
			fmt.Sprintf("Label it for services: kubectl label gateway %s -n %s %s=service --overwrite", name, wpNS, LabelWaypointFor), notes, nil
	}
	if from, ok := allowedFrom(gw, wpNS, nsObj); !ok {
		return fmt.Sprintf("%s, and the HBONE listener of Gateway %s accepts only %s", via, ref, from),
			fmt.Sprintf("Allow namespace %s in the listener's allowedRoutes, or use a waypoint in namespace %s", ns, ns), notes, nil
	}
	if class != mesh.WaypointClass {
		notes = append(notes, fmt.Sprintf("waypoint %s has gatewayClassName %q, not %s; Istio uses it only if it runs a waypoint", ref, class, mesh.WaypointClass))
	}
	if ok, why := mesh.WaypointProgrammed(gw); !ok {
		notes = append(notes, fmt.Sprintf("waypoint %s is not programmed yet (%s): ztunnel sends it traffic once istiod has programmed it and its Deployment has a ready pod (kubectl get gateway %s -n %s)", ref, why, name, wpNS))
	} else if addrs, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses"); len(addrs) == 0 {
		notes = append(notes, fmt.Sprintf("waypoint %s has no address yet (status.addresses is empty): Istio routes through it once its Deployment has a ready pod (kubectl get gateway %s -n %s)", ref, name, wpNS))
	}
	return "", "", notes, nil
}

// allowedFrom checks the namespaces the waypoint's HBONE listener (port
// 15008) accepts, as Istio does: allowedRoutes.namespaces.from, default
// Same. It returns a description of what is allowed when ns is not.
func allowedFrom(gw *unstructured.Unstructured, wpNS string, nsObj *corev1.Namespace) (string, bool) {
	ns := wpNS
	if nsObj != nil {
		ns = nsObj.Name
	}
	listeners, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
	var rn map[string]interface{}
	for _, l := range listeners {
		m, _ := l.(map[string]interface{})
		port, _, _ := unstructured.NestedInt64(m, "port")
		if m["protocol"] == "HBONE" && port == hbonePort {
			rn, _, _ = unstructured.NestedMap(m, "allowedRoutes", "namespaces")
			break
		}
	}
	from, _ := rn["from"].(string)
	switch from {
	case "All":
		return "", true
	case "Selector":
		sel, _ := rn["selector"].(map[string]interface{})
		var ls metav1.LabelSelector
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sel, &ls); err != nil || nsObj == nil {
			return "namespaces matching its selector, which could not be checked", false
		}
		s, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil || !s.Matches(labels.Set(nsObj.Labels)) {
			return "namespaces matching its selector, and namespace " + ns + " does not", false
		}
		return "", true
	}
	if ns == wpNS {
		return "", true
	}
	return "routes from its own namespace " + wpNS + " (allowedRoutes from Same)", false
}

// errReason is a short reason for a failed read: "forbidden", "not found",
// or the error.
func errReason(err error) string {
	if apierrors.IsForbidden(err) {
		return "forbidden"
	}
	return err.Error()
}
