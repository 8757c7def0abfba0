package sniff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeGroup is the selected pods that run on one node.
type NodeGroup struct {
	Node string        // spec.nodeName
	Pods []*corev1.Pod // sorted by namespace/name
}

// IPs are the group's pod addresses, in pod order, each once (pods on the
// host network share the node's).
func (g NodeGroup) IPs() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range g.Pods {
		for _, s := range rawIPs(p) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// rawIPs are the pod's addresses as the cluster gives them: Capture
// validates them, and refuses the capture with a clear message if one is
// not a plain address.
func rawIPs(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		if ip.IP != "" {
			out = append(out, ip.IP)
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		out = []string{p.Status.PodIP}
	}
	return out
}

// GroupByNode groups pods by node (pods without a node or without IPs are
// returned apart). Groups are sorted by node name, pods by namespace/name.
func GroupByNode(pods []*corev1.Pod) (groups []NodeGroup, unscheduled []*corev1.Pod) {
	byNode := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || len(rawIPs(p)) == 0 {
			unscheduled = append(unscheduled, p)
			continue
		}
		byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
	}
	for node, ps := range byNode {
		sortPods(ps)
		groups = append(groups, NodeGroup{Node: node, Pods: ps})
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Node < groups[j].Node })
	sortPods(unscheduled)
	return groups, unscheduled
}

func sortPods(ps []*corev1.Pod) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Namespace != ps[j].Namespace {
			return ps[i].Namespace < ps[j].Namespace
		}
		return ps[i].Name < ps[j].Name
	})
}

// GroupConfig is one capture per node, all nodes at once.
type GroupConfig struct {
	Transport TransportConfig // how to reach each node (SSH / pod), as sniff uses today
	Spec      CaptureSpec     // count/duration/filter/interface; PodIPs are filled per node from the group's pods
	Analysis  Config          // grep, include-infra, ...; PodContext is built per node from that node's pods
	Kube      kubernetes.Interface
	// Notes receives progress lines. With several groups each line is
	// prefixed with its node's name ("node2: "); with one it is not.
	Notes io.Writer

	// OnEvent, when set, receives each node's flow events, one call at a
	// time. Analysis.OnEvent, when set, is serialised the same way.
	OnEvent func(node string, ev Event)
	// Raw receives the pcap stream (-w); only with exactly one group.
	Raw io.Writer
	// Open reaches a node; nil is OpenRunner with Transport (tests replace it).
	Open func(ctx context.Context, transport TransportConfig, node string) (Runner, error)
}

// NodeCapture is one node's outcome. Report may be non-nil together with Err.
type NodeCapture struct {
	Node   string
	Pods   []*corev1.Pod
	Report *Report
	Err    error
}

// CaptureNodes runs one capture per group, all groups concurrently, and returns one
// NodeCapture per group in the order given. A node that cannot be reached does not stop
// the others: its Err says what is missing (SSH settings, host key, pods/exec, ...).
//
// A group of several pods is captured on every interface ("any") unless
// Spec.Interface names one: the host-side interface of one pod would miss
// the others. Packets between two pods of the node then show twice and are
// counted once (Report.Duplicates).
func CaptureNodes(ctx context.Context, cfg GroupConfig, groups []NodeGroup) []NodeCapture {
	out := make([]NodeCapture, len(groups))
	notes := cfg.Notes
	if notes == nil {
		notes = io.Discard
	}
	if cfg.Raw != nil && len(groups) > 1 {
		for i, g := range groups {
			out[i] = NodeCapture{Node: g.Node, Pods: g.Pods,
				Err: fmt.Errorf("-w writes one capture: name pods on a single node (these run on %d nodes)", len(groups))}
		}
		return out
	}
	var mu sync.Mutex // serialises events and notes of all nodes
	if ev := cfg.Analysis.OnEvent; ev != nil {
		cfg.Analysis.OnEvent = func(e Event) { mu.Lock(); defer mu.Unlock(); ev(e) }
	}
	var wg sync.WaitGroup
	for i, g := range groups {
		out[i] = NodeCapture{Node: g.Node, Pods: g.Pods}
		w := &prefixWriter{mu: &mu, w: notes}
		if len(groups) > 1 {
			w.prefix = g.Node + ": "
		}
		wg.Add(1)
		go func(i int, g NodeGroup, w *prefixWriter) {
			defer wg.Done()
			nc := cfg
			nc.Notes = w
			if cfg.OnEvent != nil {
				ev, node := cfg.OnEvent, g.Node
				prev := nc.Analysis.OnEvent
				nc.Analysis.OnEvent = func(e Event) {
					if prev != nil {
						prev(e)
					}
					mu.Lock()
					defer mu.Unlock()
					ev(node, e)
				}
			}
			out[i].Report, out[i].Err = captureGroup(ctx, nc, g)
			w.flush()
		}(i, g, w)
	}
	wg.Wait()
	return out
}

// captureGroup is one node's capture: its pods' context, the runner, and
// Capture with that node's pod IPs.
func captureGroup(ctx context.Context, cfg GroupConfig, g NodeGroup) (*Report, error) {
	if len(g.Pods) == 0 {
		return nil, fmt.Errorf("no pods to capture on node %s", g.Node)
	}
	ips := g.IPs()
	spec := cfg.Spec
	spec.PodIPs = ips
	if spec.Interface == "" && len(g.Pods) > 1 {
		spec.Interface = "any"
	}
	analysis := cfg.Analysis
	analysis.Pod = NewPodContext(ctx, cfg.Kube, g.Pods)
	for _, p := range g.Pods {
		if p.Spec.HostNetwork {
			fmt.Fprintf(cfg.Notes, "note: pod %s uses the host network: its address is the node's, so other traffic of the node shows too\n", p.Name)
		}
	}
	if _, err := TcpdumpArgs(spec, "any"); err != nil {
		return nil, fmt.Errorf("%s: %w", describePods(g.Pods), err)
	}
	open := cfg.Open
	if open == nil {
		open = OpenRunner
	}
	tc := cfg.Transport
	tc.Notes = cfg.Notes
	if tc.Kube == nil {
		tc.Kube = cfg.Kube
	}
	runner, err := open(ctx, tc, g.Node)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := runner.Close(); cerr != nil {
			fmt.Fprintf(cfg.Notes, "warning: %v\n", cerr)
		}
	}()
	fmt.Fprintf(cfg.Notes, "sniffing %s (%s) on %s\n", describePods(g.Pods), strings.Join(ips, ", "), runner.Describe())
	return Capture(ctx, runner, CaptureConfig{Spec: spec, Analysis: analysis, Notes: cfg.Notes, Raw: cfg.Raw})
}

// describePods is "pod ns/a" or "pods ns/a, ns/b".
func describePods(pods []*corev1.Pod) string {
	names := make([]string, len(pods))
	for i, p := range pods {
		names[i] = p.Namespace + "/" + p.Name
	}
	if len(names) == 1 {
		return "pod " + names[0]
	}
	return "pods " + strings.Join(names, ", ")
}

// OverallVerdict combines the nodes' verdicts with the capture-level
// policy, as if all flows had been one capture: the worst wins, nodes
// without traffic add nothing, and an unproven node keeps the whole from
// being proven Istio's. A node without a report (its capture failed) is not
// counted: callers must report its error, as the verdict does not cover it.
func OverallVerdict(captures []NodeCapture) Verdict {
	var t tally
	for _, c := range captures {
		if c.Report == nil {
			continue
		}
		switch v := c.Report.Verdict; v {
		case VerdictMixed:
			t.add(VerdictPlaintext, 1)
			t.add(VerdictUnknown, 1)
		default:
			t.add(v, 1)
		}
	}
	return decideCapture(t)
}

// prefixWriter writes whole lines, each prefixed, under a shared lock.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "%s%s", p.prefix, p.buf[:i+1]); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// flush writes a last line that did not end in a newline.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf)
		p.buf = nil
	}
}

// GroupReport is the JSON of a capture on several nodes: the overall
// verdict (as in a one-node report, so `.verdict` reads both) and each
// node's report or error.
type GroupReport struct {
	Verdict Verdict      `json:"verdict"`
	Nodes   []NodeReport `json:"nodes"`
	// Skipped are pods not captured: not scheduled or without an address.
	Skipped []string `json:"skipped,omitempty"`
}

// NodeReport is one node of a GroupReport.
type NodeReport struct {
	Node   string   `json:"node"`
	Pods   []string `json:"pods"`
	PodIPs []string `json:"podIPs"`
	Error  string   `json:"error,omitempty"`
	Report *Report  `json:"report,omitempty"`
}

// NewGroupReport gathers the captures' outcomes.
func NewGroupReport(captures []NodeCapture, skipped []*corev1.Pod) GroupReport {
	gr := GroupReport{Verdict: OverallVerdict(captures), Nodes: []NodeReport{}}
	for _, c := range captures {
		nr := NodeReport{Node: c.Node, Pods: podRefs(c.Pods), PodIPs: NodeGroup{Pods: c.Pods}.IPs(), Report: c.Report}
		if c.Err != nil {
			nr.Error = c.Err.Error()
		}
		gr.Nodes = append(gr.Nodes, nr)
	}
	gr.Skipped = podRefs(skipped)
	return gr
}

// Err names the nodes whose capture failed, or is nil.
func (gr GroupReport) Err() error {
	var failed []string
	for _, n := range gr.Nodes {
		if n.Error != "" {
			failed = append(failed, fmt.Sprintf("node %s: %s", n.Node, n.Error))
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("the capture failed on %d of %d nodes, so the verdict does not cover their pods:\n%s", len(failed), len(gr.Nodes), strings.Join(failed, "\n"))
}

func podRefs(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

// WriteGroupJSON prints a GroupReport as one indented JSON object.
func WriteGroupJSON(w io.Writer, gr GroupReport) error {
	b, err := json.MarshalIndent(gr, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// WriteGroupSummary prints each node's summary under a header naming its
// pods, then the overall verdict.
func WriteGroupSummary(w io.Writer, gr GroupReport) error {
	failed := 0
	for _, n := range gr.Nodes {
		fmt.Fprintf(w, "=== node %s: %s (%s)\n", n.Node, strings.Join(n.Pods, ", "), strings.Join(n.PodIPs, ", "))
		if n.Report != nil {
			if err := WriteSummary(w, n.Report); err != nil {
				return err
			}
		}
		if n.Error != "" {
			failed++
			fmt.Fprintf(w, "Not captured: %s\n", n.Error)
		}
		fmt.Fprintln(w)
	}
	var notes []string
	if failed > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d nodes not fully captured", failed, len(gr.Nodes)))
	}
	if len(gr.Skipped) > 0 {
		notes = append(notes, fmt.Sprintf("pods not captured: %s", strings.Join(gr.Skipped, ", ")))
	}
	tail := ""
	if len(notes) > 0 {
		tail = "; " + strings.Join(notes, "; ")
	}
	_, err := fmt.Fprintf(w, "Overall verdict: %s (%s on %s%s)\n", gr.Verdict,
		plural(countPods(gr), "1 pod", fmt.Sprintf("%d pods", countPods(gr))),
		plural(len(gr.Nodes), "1 node", fmt.Sprintf("%d nodes", len(gr.Nodes))), tail)
	return err
}

func countPods(gr GroupReport) int {
	n := 0
	for _, nr := range gr.Nodes {
		n += len(nr.Pods)
	}
	return n
}
