package inject

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// AmbientNamespace is one namespace's ambient mode: the namespaces status
// reports here are those labelled ambient, labelled with a waypoint, or
// holding a pod labelled ambient.
type AmbientNamespace struct {
	Name string `json:"name"`
	// Enrolled says the namespace label enrols its pods.
	Enrolled bool `json:"enrolled"`
	// Waypoint is the waypoint the namespace label names (nil when none).
	Waypoint *Waypoint `json:"waypoint,omitempty"`
	// ServiceWaypoints are the Services that name their own waypoint.
	ServiceWaypoints []ServiceWaypoint `json:"serviceWaypoints,omitempty"`
	// Pods counts the live pods of the namespace's workloads, waypoint
	// proxies apart; the others count those pods by how ambient mode
	// treats them.
	Pods          int `json:"pods"`
	PodsAmbient   int `json:"podsAmbient"`
	PodsOptedOut  int `json:"podsOptedOut"`
	PodsSidecar   int `json:"podsSidecar"`
	PodsNoZtunnel int `json:"podsNoZtunnel"`
	PodsHostNet   int `json:"podsHostNetwork"`
	// Problems say what keeps ambient mode from working as labelled.
	Problems []string `json:"problems,omitempty"`
}

// Waypoint is a waypoint a label names and what became of it.
type Waypoint struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// State is "ok" (programmed by istiod, with a ready proxy pod when its
	// namespace is in scope), "missing", "not a waypoint (class X)", "not
	// programmed", "no ready pod" or "unchecked"; Detail says why when
	// it is not programmed.
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
	// ReadyPods counts the waypoint's ready proxy pods; nil when its
	// namespace is out of scope, so its pods were not listed.
	ReadyPods *int `json:"readyPods,omitempty"`
}

func (w *Waypoint) String() string { return w.Namespace + "/" + w.Name }

// problem is the state as a problem line says it, with its detail.
func (w *Waypoint) problem() string {
	if w.Detail != "" {
		return w.State + ": " + w.Detail
	}
	return w.State
}

// ServiceWaypoint is a Service labelled with its own waypoint.
type ServiceWaypoint struct {
	Service  string   `json:"service"`
	Waypoint Waypoint `json:"waypoint"`
}

// AmbientPod is how ambient mode treats one pod.
type AmbientPod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node,omitempty"`
	// Dataplane is "ambient", "opted-out", "sidecar", "host-network" or
	// "" (not enrolled); EnrolledBy is "namespace" or "pod".
	Dataplane  string `json:"dataplane"`
	EnrolledBy string `json:"enrolledBy,omitempty"`
	// Ztunnel is the ready ztunnel pod on the pod's node ("" when there is
	// none or it was not checked); only captured pods need one.
	Ztunnel string `json:"ztunnel,omitempty"`
	Problem string `json:"problem,omitempty"`
}

// Notes for ambient reads the user may not make.
var (
	uncheckedZtunnelPods = controlplane.Unchecked{What: "the ztunnel pods",
		Instead:    "whether a ready ztunnel runs on each ambient pod's node is not known",
		Permission: `"list" on pods`}
	uncheckedGateways = controlplane.Unchecked{What: "the waypoint Gateways",
		Instead:    "waypoints named by istio.io/use-waypoint are shown as unchecked",
		Permission: `"list" on gateways.gateway.networking.k8s.io`}
)

// ambientRelevant says whether status reports on a namespace's ambient
// mode: labelled ambient or with a waypoint, or with a pod labelled ambient.
func ambientRelevant(ns *corev1.Namespace, pods []*corev1.Pod) bool {
	if mesh.NamespaceAmbient(ns.Labels) {
		return true
	}
	if _, _, ok := mesh.WaypointOf(ns.Labels, ns.Name); ok {
		return true
	}
	for _, p := range pods {
		if p.Labels[mesh.LabelDataplaneMode] == mesh.DataplaneAmbient {
			return true
		}
	}
	return false
}

// buildAmbient fills rep.Ambient and rep.AmbientPods. It reads nothing
// unless a namespace in scope is ambient-relevant; then it lists Services
// and ztunnel pods, and Gateways when a label names a waypoint, each with
// one call for -A or one per namespace.
func buildAmbient(ctx context.Context, kube kubernetes.Interface, gateways dynamic.Interface, scope Scope, snap *Snapshot, rep *Report) error {
	podsByNS := map[string][]*corev1.Pod{}
	for _, ns := range snap.Namespaces {
		// A key for every namespace in scope, pods or not: checkWaypoints
		// counts a waypoint's ready pods only where they were listed.
		podsByNS[ns.Name] = nil
	}
	for _, w := range snap.Workloads {
		podsByNS[w.Namespace] = append(podsByNS[w.Namespace], w.Pods...)
	}
	var relevant []*corev1.Namespace
	for i := range snap.Namespaces {
		if ns := &snap.Namespaces[i]; ambientRelevant(ns, podsByNS[ns.Name]) {
			relevant = append(relevant, ns)
		}
	}
	if len(relevant) == 0 {
		return nil
	}
	listNS := []string{metav1.NamespaceAll}
	if !scope.AllNamespaces {
		listNS = nil
		for _, ns := range relevant {
			listNS = append(listNS, ns.Name)
		}
	}
	services := map[string][]corev1.Service{}
	for _, n := range listNS {
		list, err := kube.CoreV1().Services(n).List(ctx, metav1.ListOptions{})
		if err != nil {
			return mesh.Forbidden("list", "services", " in namespace "+n, err)
		}
		for _, s := range list.Items {
			services[s.Namespace] = append(services[s.Namespace], s)
		}
	}

	// The waypoints the labels name, then whether each exists.
	named := map[waypointRef]*Waypoint{}
	waypoint := func(labels map[string]string, ns string) *Waypoint {
		wns, name, ok := mesh.WaypointOf(labels, ns)
		if !ok {
			return nil
		}
		k := waypointRef{wns, name}
		if named[k] == nil {
			named[k] = &Waypoint{Namespace: wns, Name: name, State: "unchecked"}
		}
		return named[k]
	}
	type nsWaypoints struct {
		ns       *Waypoint
		services []string
		svcWP    []*Waypoint
	}
	wps := make([]nsWaypoints, len(relevant))
	for i, ns := range relevant {
		wps[i].ns = waypoint(ns.Labels, ns.Name)
		svcs := services[ns.Name]
		sort.Slice(svcs, func(a, b int) bool { return svcs[a].Name < svcs[b].Name })
		for _, s := range svcs {
			if wp := waypoint(s.Labels, s.Namespace); wp != nil {
				wps[i].services = append(wps[i].services, s.Name)
				wps[i].svcWP = append(wps[i].svcWP, wp)
			}
		}
	}
	if len(named) > 0 {
		var gwNS []string
		if scope.AllNamespaces {
			gwNS = []string{metav1.NamespaceAll}
		} else {
			seen := map[string]bool{}
			for k := range named {
				if !seen[k.ns] {
					seen[k.ns] = true
					gwNS = append(gwNS, k.ns)
				}
			}
			sort.Strings(gwNS)
		}
		if err := checkWaypoints(ctx, gateways, gwNS, named, podsByNS, rep); err != nil {
			return err
		}
	}

	// The ready ztunnel pod of each node.
	ztunnels, zErr := readyZtunnels(ctx, kube)
	switch {
	case apierrors.IsForbidden(zErr):
		rep.Unchecked = append(rep.Unchecked, uncheckedZtunnelPods)
	case zErr != nil:
		return fmt.Errorf("listing ztunnel pods (label app=ztunnel): %w", zErr)
	}

	for i, ns := range relevant {
		st := AmbientNamespace{Name: ns.Name, Enrolled: mesh.NamespaceAmbient(ns.Labels), Waypoint: wps[i].ns}
		for j, svc := range wps[i].services {
			st.ServiceWaypoints = append(st.ServiceWaypoints, ServiceWaypoint{Service: svc, Waypoint: *wps[i].svcWP[j]})
		}
		noZtunnel := map[string]int{}
		pods := podsByNS[ns.Name]
		sort.Slice(pods, func(a, b int) bool { return pods[a].Name < pods[b].Name })
		for _, p := range pods {
			a := mesh.AmbientOf(p, ns.Labels)
			ap := AmbientPod{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName, Dataplane: string(a.Mode), EnrolledBy: a.By}
			if a.Mode == mesh.AmbientWaypoint {
				rep.AmbientPods = append(rep.AmbientPods, ap)
				continue
			}
			st.Pods++
			switch a.Mode {
			case mesh.AmbientCaptured:
				st.PodsAmbient++
				switch z := ztunnels[p.Spec.NodeName]; {
				case zErr != nil:
				case p.Spec.NodeName == "":
					ap.Problem = "not scheduled to a node yet"
				case z == "":
					st.PodsNoZtunnel++
					noZtunnel[p.Spec.NodeName]++
					ap.Problem = "no ready ztunnel on node " + p.Spec.NodeName
				default:
					ap.Ztunnel = z
				}
			case mesh.AmbientOptedOut:
				st.PodsOptedOut++
			case mesh.AmbientSidecar:
				st.PodsSidecar++
				ap.Problem = "the sidecar takes precedence: Istio does not redirect a pod with a sidecar to ztunnel"
			case mesh.AmbientHostNetwork:
				st.PodsHostNet++
				ap.Problem = "uses the host network, which ztunnel cannot capture"
			}
			rep.AmbientPods = append(rep.AmbientPods, ap)
		}
		st.Problems = ambientProblems(st, noZtunnel)
		rep.Ambient = append(rep.Ambient, st)
	}
	return nil
}

type waypointRef struct{ ns, name string }

// checkWaypoints lists Gateways in namespaces and sets each named
// waypoint's State: programmed by istiod, and with a ready proxy pod when
// podsByNS holds its namespace. A refused list leaves them unchecked, with
// a note; no Gateway API makes them missing.
func checkWaypoints(ctx context.Context, gateways dynamic.Interface, namespaces []string, all map[waypointRef]*Waypoint, podsByNS map[string][]*corev1.Pod, rep *Report) error {
	if gateways == nil {
		rep.Unchecked = append(rep.Unchecked, uncheckedGateways)
		return nil
	}
	for _, w := range all {
		w.State = "missing"
	}
	for _, n := range namespaces {
		list, err := gateways.Resource(traffic.Gateways).Namespace(n).List(ctx, metav1.ListOptions{})
		switch {
		case apierrors.IsNotFound(err):
			for _, w := range all {
				w.State = "missing (Gateway API not installed)"
			}
			return nil
		case apierrors.IsForbidden(err):
			for _, w := range all {
				w.State = "unchecked"
			}
			rep.Unchecked = append(rep.Unchecked, uncheckedGateways)
			return nil
		case err != nil:
			return fmt.Errorf("listing gateways.gateway.networking.k8s.io: %w", err)
		}
		for _, gw := range list.Items {
			w := all[waypointRef{gw.GetNamespace(), gw.GetName()}]
			if w == nil {
				continue
			}
			class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
			if class != mesh.WaypointClass {
				w.State = fmt.Sprintf("not a waypoint (class %s)", class)
				continue
			}
			if pods, ok := podsByNS[w.Namespace]; ok {
				ready := 0
				for _, p := range pods {
					if p.Labels[mesh.LabelGatewayName] == w.Name && mesh.IsWaypointPod(p) && mesh.PodReady(p) {
						ready++
					}
				}
				w.ReadyPods = &ready
			}
			switch ok, why := mesh.WaypointProgrammed(&gw); {
			case !ok:
				w.State, w.Detail = "not programmed", why
			case w.ReadyPods != nil && *w.ReadyPods == 0:
				w.State = "no ready pod"
			default:
				w.State = "ok"
			}
		}
	}
	return nil
}

// readyZtunnels maps each node to the name of a ready ztunnel pod on it.
func readyZtunnels(ctx context.Context, kube kubernetes.Interface) (map[string]string, error) {
	list, err := mesh.List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"}, kube.CoreV1().Pods(metav1.NamespaceAll).List)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i := range list.Items {
		p := &list.Items[i]
		if mesh.IsZtunnelPod(p) && mesh.PodLive(p) && mesh.PodReady(p) && p.Spec.NodeName != "" && out[p.Spec.NodeName] == "" {
			out[p.Spec.NodeName] = p.Namespace + "/" + p.Name
		}
	}
	return out, nil
}

// ambientProblems is the namespace's problems, most serious first.
func ambientProblems(st AmbientNamespace, noZtunnel map[string]int) []string {
	var out []string
	nodes := make([]string, 0, len(noZtunnel))
	for n := range noZtunnel {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		out = append(out, fmt.Sprintf("no ztunnel on node %s (%s not captured)", n, plural(noZtunnel[n], "pod")))
	}
	if w := st.Waypoint; w != nil && w.State != "ok" && w.State != "unchecked" {
		out = append(out, fmt.Sprintf("waypoint %s %s", w, w.problem()))
	}
	for _, s := range st.ServiceWaypoints {
		if w := s.Waypoint; w.State != "ok" && w.State != "unchecked" {
			out = append(out, fmt.Sprintf("service %s: waypoint %s %s", s.Service, w.String(), w.problem()))
		}
	}
	if st.PodsHostNet > 0 {
		out = append(out, fmt.Sprintf("%s on the host network (not captured)", plural(st.PodsHostNet, "pod")))
	}
	if st.PodsSidecar > 0 {
		out = append(out, fmt.Sprintf("%s with a sidecar (the sidecar takes precedence over ambient)", plural(st.PodsSidecar, "pod")))
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// WriteAmbient prints the ambient table when the report has ambient
// namespaces; wide adds one row per pod.
func WriteAmbient(out io.Writer, rep *Report, wide bool) error {
	if len(rep.Ambient) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	w := printers.GetNewTabWriter(out)
	fmt.Fprintln(w, "AMBIENT\tENROLLED\tPODS IN AMBIENT\tOPTED OUT\tSIDECAR\tWAYPOINT\tSERVICE WAYPOINTS\tPROBLEMS")
	for _, ns := range rep.Ambient {
		enrolled := "no"
		switch {
		case ns.Enrolled:
			enrolled = "namespace"
		case ns.PodsAmbient+ns.PodsOptedOut+ns.PodsSidecar > 0:
			enrolled = "pod labels"
		}
		wp := "-"
		if ns.Waypoint != nil {
			wp = ns.Waypoint.Name
			if ns.Waypoint.Namespace != ns.Name {
				wp = ns.Waypoint.String()
			}
			if ns.Waypoint.State != "ok" {
				wp += " (" + ns.Waypoint.State + ")"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d\t%d\t%s\t%d\t%s\n", ns.Name, enrolled, ns.PodsAmbient, ns.Pods, ns.PodsOptedOut, ns.PodsSidecar,
			wp, len(ns.ServiceWaypoints), dash(strings.Join(ns.Problems, "; ")))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !wide || len(rep.AmbientPods) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	w = printers.GetNewTabWriter(out)
	fmt.Fprintln(w, "POD\tNODE\tDATAPLANE\tZTUNNEL\tPROBLEM")
	for _, p := range rep.AmbientPods {
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, dash(p.Node), dataplaneText(p), dash(p.Ztunnel), dash(p.Problem))
	}
	return w.Flush()
}

// dataplaneText is a pod's DATAPLANE cell.
func dataplaneText(p AmbientPod) string {
	switch mesh.AmbientMode(p.Dataplane) {
	case mesh.AmbientCaptured:
		return "ambient (" + p.EnrolledBy + " label)"
	case mesh.AmbientOptedOut:
		return "opted out (pod label)"
	case mesh.AmbientSidecar:
		return "sidecar, not ztunnel"
	case mesh.AmbientHostNetwork:
		return "host network"
	case mesh.AmbientWaypoint:
		return "waypoint proxy"
	}
	return "none"
}
