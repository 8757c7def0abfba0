package verify

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// CaptureFunc runs one capture per node group, all at once (sniff's
// CaptureNodes with the command's transport and capture flags).
type CaptureFunc func(ctx context.Context, groups []sniff.NodeGroup) []sniff.NodeCapture

// EdgeUnproven is the verdict of an edge the API predicts but that carried
// no packet during the capture.
const EdgeUnproven = "unproven"

// Istio's ports: HBONE's, and the status port of a gateway's proxy, which
// only health checks call.
const (
	hbonePort         = 15008
	gatewayStatusPort = 15021
)

// WireSection is the wire part.
type WireSection struct {
	Nodes []NodeRow `json:"nodes"`
	// Edges are application traffic between endpoints, and the edges the
	// API predicts that carried nothing (verdict unproven).
	Edges []Edge `json:"edges"`
	// Infra is mesh infrastructure traffic (probes, scrapes, DNS, istiod).
	Infra   []Edge `json:"infra,omitempty"`
	Skipped string `json:"skipped,omitempty"`
}

// NodeRow is one node's capture.
type NodeRow struct {
	Node    string `json:"node"`
	Pods    int    `json:"pods"`
	Packets int    `json:"packets"`
	Flows   int    `json:"flows"`
	Error   string `json:"error,omitempty"`
}

// Edge is the traffic from one source to one destination port.
type Edge struct {
	// Src and Dst are NAMESPACE/WORKLOAD, "service NAMESPACE/NAME", "node
	// NAME", "external ADDRESS", or for a predicted edge's source "*".
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Port int    `json:"port,omitempty"`
	// Service is the Service a ClusterIP destination was resolved through.
	Service   string `json:"service,omitempty"`
	Transport string `json:"transport"`
	Protocol  string `json:"protocol"`
	// Verdict is sniff's flow verdict (plaintext, encrypted-istio, …),
	// mixed when flows disagree, or unproven.
	Verdict   string `json:"verdict"`
	Packets   int    `json:"packets"`
	Bytes     int    `json:"bytes"`
	Flows     int    `json:"flows"`
	Evidence  string `json:"evidence"`
	SrcMeshed bool   `json:"srcMeshed"`
	DstMeshed bool   `json:"dstMeshed"`
	// Infra names the mesh infrastructure rule of an infrastructure edge.
	Infra string `json:"infra,omitempty"`

	evidenceBytes int
	dstWorkload   *workload
}

// DstName is DST:PORT, with the Service it was reached through.
func (e Edge) DstName() string {
	s := e.Dst
	if e.Port > 0 {
		s += fmt.Sprintf(":%d", e.Port)
	}
	if e.Service != "" {
		s += " (service " + e.Service + ")"
	}
	return s
}

func (e Edge) plaintext() bool {
	return e.Verdict == string(sniff.VerdictPlaintext) || e.Verdict == string(sniff.VerdictMixed)
}

// wire captures every selected pod, one capture per node, and turns the
// flows into edges.
func wire(ctx context.Context, c Clients, cfg Config, inv *inventory) WireSection {
	var sec WireSection
	var pods []*corev1.Pod
	for _, w := range inv.workloads {
		pods = append(pods, w.pods...)
	}
	if len(pods) == 0 {
		return sec
	}
	if c.Capture == nil {
		sec.Skipped = cfg.WireSkipped
		if sec.Skipped == "" {
			sec.Skipped = "no way to reach the nodes"
		}
		return sec
	}
	groups, unscheduled := sniff.GroupByNode(pods)
	for _, p := range unscheduled {
		inv.notes = append(inv.notes, fmt.Sprintf("pod %s/%s has no node or no IP yet: not captured", p.Namespace, p.Name))
	}
	if len(groups) == 0 {
		sec.Skipped = "no selected pod runs on a node with an IP"
		return sec
	}
	fmt.Fprintf(cfg.Notes, "capturing %d pods on %d %s at once\n", len(pods)-len(unscheduled), len(groups), plural(len(groups), "node", "nodes"))
	caps := c.Capture(ctx, groups)
	captured := map[*workload]bool{}
	var app, infra []sniff.FlowSummary
	seen := map[string]int{}
	for _, nc := range caps {
		row := NodeRow{Node: nc.Node, Pods: len(nc.Pods)}
		if nc.Err != nil {
			row.Error = nc.Err.Error()
		}
		if nc.Report != nil {
			row.Packets, row.Flows = nc.Report.Packets, len(nc.Report.Flows)+len(nc.Report.Infra)
			// A flow between pods of two nodes is seen on both: keep the
			// view with more packets.
			app = mergeFlows(app, nc.Report.Flows, seen, "a")
			infra = mergeFlows(infra, nc.Report.Infra, seen, "i")
		}
		if nc.Err == nil {
			for _, p := range nc.Pods {
				for _, a := range podAddrs(p) {
					captured[inv.byPodIP[a]] = true
				}
			}
		}
		sec.Nodes = append(sec.Nodes, row)
	}
	sec.Edges = inv.edges(app)
	sec.Infra = inv.edges(infra)
	sec.Edges = append(sec.Edges, inv.predicted(sec.Edges, captured)...)
	sortEdges(sec.Edges)
	return sec
}

// mergeFlows adds flows to list, a flow already there (same endpoints)
// replaced when this view has more packets.
func mergeFlows(list, flows []sniff.FlowSummary, seen map[string]int, kind string) []sniff.FlowSummary {
	for _, f := range flows {
		k := kind + f.Transport + " " + f.Src + " " + f.Dst
		if i, ok := seen[k]; ok {
			if f.Packets > list[i].Packets {
				list[i] = f
			}
			continue
		}
		seen[k] = len(list)
		list = append(list, f)
	}
	return list
}

// endpoint names an address: a workload of the scope, a Service, a node,
// a pod outside the scope, or external.
func (inv *inventory) endpoint(a netip.Addr) (name string, meshed bool, w *workload, svc *corev1.Service) {
	if w := inv.byPodIP[a]; w != nil {
		return w.row.Name(), w.row.Meshed(), w, nil
	}
	if s := inv.byClusterIP[a]; s != nil {
		return "service " + s.Namespace + "/" + s.Name, false, nil, s
	}
	if n, ok := inv.nodeIPs[a]; ok {
		return "node " + n, false, nil, nil
	}
	if o, ok := inv.outside()[a]; ok {
		return o.name, o.meshed, nil, nil
	}
	return "external " + a.String(), false, nil, nil
}

// edges aggregates flows into edges SRC → DST:PORT.
func (inv *inventory) edges(flows []sniff.FlowSummary) []Edge {
	byKey := map[string]*Edge{}
	var order []string
	for _, f := range flows {
		src, dst, port, ok := parseEnds(f)
		if !ok {
			continue
		}
		e := Edge{Transport: f.Transport, Protocol: f.Protocol, Verdict: string(f.Verdict), Packets: f.Packets, Bytes: f.Bytes, Flows: 1, Evidence: f.Evidence, Infra: f.Infra, evidenceBytes: f.Bytes}
		e.Src, e.SrcMeshed, _, _ = inv.endpoint(src)
		var svc *corev1.Service
		e.Dst, e.DstMeshed, e.dstWorkload, svc = inv.endpoint(dst)
		e.Port = port
		if svc != nil {
			if w, p := inv.throughService(svc, port); w != nil {
				e.Dst, e.DstMeshed, e.dstWorkload, e.Port = w.row.Name(), w.row.Meshed(), w, p
				e.Service = svc.Namespace + "/" + svc.Name
			}
		}
		k := fmt.Sprintf("%s|%s|%d|%s|%s", e.Src, e.Dst, e.Port, e.Service, e.Transport)
		if prev := byKey[k]; prev != nil {
			prev.add(e)
			continue
		}
		byKey[k] = &e
		order = append(order, k)
	}
	out := make([]Edge, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	sortEdges(out)
	return out
}

func (e *Edge) add(o Edge) {
	e.Packets += o.Packets
	e.Bytes += o.Bytes
	e.Flows++
	if o.evidenceBytes > e.evidenceBytes {
		e.Evidence, e.evidenceBytes = o.Evidence, o.evidenceBytes
	}
	if !strings.Contains(","+e.Protocol+",", ","+o.Protocol+",") {
		e.Protocol += "," + o.Protocol
	}
	e.Verdict = combine(e.Verdict, o.Verdict)
}

// combine is the verdict of an edge whose flows have verdicts a and b: a
// flow without data changes nothing, plaintext with anything else is
// mixed, and among encrypted verdicts the weaker proof wins.
func combine(a, b string) string {
	nodata := string(sniff.VerdictNoData)
	switch {
	case a == b || b == nodata:
		return a
	case a == nodata:
		return b
	}
	rank := map[string]int{string(sniff.VerdictEncryptedIstio): 1, string(sniff.VerdictEncryptedTLS): 2, string(sniff.VerdictEncryptedUnproven): 3, string(sniff.VerdictUnknown): 4}
	ra, oka := rank[a]
	rb, okb := rank[b]
	if !oka || !okb {
		return string(sniff.VerdictMixed)
	}
	if ra > rb {
		return a
	}
	return b
}

func parseEnds(f sniff.FlowSummary) (src, dst netip.Addr, port int, ok bool) {
	addr := func(s string) (netip.Addr, int, bool) {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			return ap.Addr().Unmap(), int(ap.Port()), true
		}
		a, err := netip.ParseAddr(s)
		return a.Unmap(), 0, err == nil
	}
	src, _, ok1 := addr(f.Src)
	dst, port, ok2 := addr(f.Dst)
	return src, dst, port, ok1 && ok2
}

// throughService is the workload a Service port leads to, when the
// Service selects exactly one workload of the scope, and its target port.
func (inv *inventory) throughService(svc *corev1.Service, port int) (*workload, int) {
	ws := inv.selectedBy(svc)
	if len(ws) != 1 {
		return nil, 0
	}
	for _, sp := range svc.Spec.Ports {
		if int(sp.Port) == port {
			if t := targetPort(sp, ws[0]); t > 0 {
				return ws[0], t
			}
		}
	}
	return nil, 0
}

func (inv *inventory) selectedBy(svc *corev1.Service) []*workload {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []*workload
	for _, w := range inv.workloads {
		if w.row.Namespace == svc.Namespace && len(w.pods) > 0 && sel.Matches(labels.Set(w.pods[0].Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// targetPort resolves a Service port's targetPort (a number, or a named
// container port of the workload's pods).
func targetPort(sp corev1.ServicePort, w *workload) int {
	switch {
	case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal > 0:
		return int(sp.TargetPort.IntVal)
	case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
		for _, c := range w.pods[0].Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == sp.TargetPort.StrVal {
					return int(p.ContainerPort)
				}
			}
		}
		return 0
	}
	return int(sp.Port)
}

// predicted are the Service ports of the scope whose workloads were
// captured but received nothing on that port: unproven edges. An ambient
// workload's Service ports are carried inside HBONE to its 15008 (the
// port a CONNECT names is encrypted), so Istio HBONE seen reaching it
// covers them; a gateway's status port only answers health checks.
func (inv *inventory) predicted(seen []Edge, captured map[*workload]bool) []Edge {
	got := map[string]bool{}
	hbone := map[string]bool{}
	for _, e := range seen {
		got[fmt.Sprintf("%s:%d", e.Dst, e.Port)] = true
		if e.Port == hbonePort && e.Verdict == string(sniff.VerdictEncryptedIstio) {
			hbone[e.Dst] = true
		}
	}
	var out []Edge
	for i := range inv.services {
		svc := &inv.services[i]
		for _, w := range inv.selectedBy(svc) {
			if !captured[w] || w.row.Mesh == MeshAmbient && hbone[w.row.Name()] {
				continue
			}
			for _, sp := range svc.Spec.Ports {
				t := targetPort(sp, w)
				if w.row.Mesh == MeshGateway && t == gatewayStatusPort {
					continue
				}
				if t == 0 || (sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP) || got[fmt.Sprintf("%s:%d", w.row.Name(), t)] {
					continue
				}
				got[fmt.Sprintf("%s:%d", w.row.Name(), t)] = true
				out = append(out, Edge{Src: "*", Dst: w.row.Name(), Port: t, Service: svc.Namespace + "/" + svc.Name, Transport: "tcp", Protocol: "-",
					Verdict: EdgeUnproven, DstMeshed: w.row.Meshed(), Evidence: "the Service selects it, but no packet reached this port during the capture", dstWorkload: w})
			}
		}
	}
	return out
}

func sortEdges(es []Edge) {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Src != b.Src {
			return a.Src < b.Src
		}
		if a.Dst != b.Dst {
			return a.Dst < b.Dst
		}
		return a.Port < b.Port
	})
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
