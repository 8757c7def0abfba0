package sniff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func groupPod(ns, name, node string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func podNames(ps []*corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func TestGroupByNode(t *testing.T) {
	hostA := groupPod("kube-system", "agent-a", "node1", "10.0.0.4")
	hostA.Spec.HostNetwork = true
	hostB := groupPod("kube-system", "agent-b", "node1", "10.0.0.4")
	hostB.Spec.HostNetwork = true
	tests := []struct {
		name        string
		pods        []*corev1.Pod
		want        map[string][]string // node -> pods, in group order
		order       []string
		ips         map[string][]string
		unscheduled []string
	}{
		{name: "one pod", pods: []*corev1.Pod{groupPod("default", "web-1", "node1", "10.77.0.3")},
			order: []string{"node1"}, want: map[string][]string{"node1": {"default/web-1"}},
			ips: map[string][]string{"node1": {"10.77.0.3"}}},
		{name: "two nodes, sorted by node then namespace/name",
			pods: []*corev1.Pod{
				groupPod("default", "web-2", "node2", "10.78.0.2"),
				groupPod("default", "web-1", "node1", "10.77.0.3", "fd00::3"),
				groupPod("default", "api-1", "node1", "10.77.0.5"),
				groupPod("alpha", "web-9", "node1", "10.77.0.9"),
			},
			order: []string{"node1", "node2"},
			want: map[string][]string{
				"node1": {"alpha/web-9", "default/api-1", "default/web-1"},
				"node2": {"default/web-2"},
			},
			ips: map[string][]string{"node1": {"10.77.0.9", "10.77.0.5", "10.77.0.3", "fd00::3"}, "node2": {"10.78.0.2"}}},
		{name: "pods without a node or an IP are apart",
			pods: []*corev1.Pod{
				groupPod("default", "pending", ""),
				groupPod("default", "starting", "node1"),
				groupPod("default", "web-1", "node1", "10.77.0.3"),
			},
			order: []string{"node1"}, want: map[string][]string{"node1": {"default/web-1"}},
			ips:         map[string][]string{"node1": {"10.77.0.3"}},
			unscheduled: []string{"default/pending", "default/starting"}},
		{name: "host-network pods share the node's address once",
			pods:  []*corev1.Pod{hostB, hostA},
			order: []string{"node1"}, want: map[string][]string{"node1": {"kube-system/agent-a", "kube-system/agent-b"}},
			ips: map[string][]string{"node1": {"10.0.0.4"}}},
		{name: "nothing", pods: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups, unscheduled := GroupByNode(tt.pods)
			var order []string
			for _, g := range groups {
				order = append(order, g.Node)
				if got := podNames(g.Pods); !reflect.DeepEqual(got, tt.want[g.Node]) {
					t.Errorf("%s: pods %q, want %q", g.Node, got, tt.want[g.Node])
				}
				if got := g.IPs(); !reflect.DeepEqual(got, tt.ips[g.Node]) {
					t.Errorf("%s: IPs %q, want %q", g.Node, got, tt.ips[g.Node])
				}
			}
			if !reflect.DeepEqual(order, tt.order) {
				t.Errorf("nodes %q, want %q", order, tt.order)
			}
			if got := podNames(unscheduled); !reflect.DeepEqual(got, tt.unscheduled) {
				t.Errorf("unscheduled %q, want %q", got, tt.unscheduled)
			}
		})
	}
}

// barrierRunner replays a capture, but only once every runner of the test
// has started streaming: sequential captures never get there.
type barrierRunner struct {
	stubRunner
	name    string
	started chan<- string
	all     <-chan struct{}
	mu      sync.Mutex
}

func (b *barrierRunner) Stream(ctx context.Context, argv []string) (Stream, error) {
	b.mu.Lock()
	b.ran = append(b.ran, argv)
	b.mu.Unlock()
	b.started <- b.name
	select {
	case <-b.all:
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("%s: the other node's capture never started: captures do not run in parallel", b.name)
	}
	return &stubStream{r: bytes.NewReader(b.pcap)}, nil
}

func (b *barrierRunner) Output(ctx context.Context, argv []string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ran = append(b.ran, argv)
	return []byte("junk"), nil
}

func (b *barrierRunner) Describe() string { return b.name + " (stub)" }

func TestCaptureNodesInParallel(t *testing.T) {
	plain := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames)
	tlsPcap := pcapBytes(t, LinkTypeEthernet, newConv(LinkTypeEthernet, "10.78.0.2:40000", "10.78.0.5:443").handshake().play(httpsChunks(t), 1448).fin().frames)
	started := make(chan string, 2)
	all := make(chan struct{})
	go func() {
		<-started
		<-started
		close(all)
	}()
	runners := map[string]*barrierRunner{
		"node1": {stubRunner: stubRunner{pcap: plain}, name: "node1", started: started, all: all},
		"node2": {stubRunner: stubRunner{pcap: tlsPcap}, name: "node2", started: started, all: all},
	}
	groups, _ := GroupByNode([]*corev1.Pod{
		groupPod("default", "web-1", "node1", "10.77.0.3"),
		groupPod("default", "web-2", "node2", "10.78.0.5"),
		groupPod("default", "web-3", "node2", "10.78.0.6"),
	})
	var notes bytes.Buffer
	var events []string
	var evMu sync.Mutex
	cfg := GroupConfig{
		Spec:  CaptureSpec{Filter: "tcp"},
		Notes: &notes,
		Open: func(ctx context.Context, tc TransportConfig, node string) (Runner, error) {
			return runners[node], nil
		},
		OnEvent: func(node string, ev Event) {
			evMu.Lock()
			defer evMu.Unlock()
			events = append(events, node)
		},
	}
	got := CaptureNodes(context.Background(), cfg, groups)
	if len(got) != 2 || got[0].Node != "node1" || got[1].Node != "node2" {
		t.Fatalf("captures %+v, want node1 then node2", got)
	}
	for _, c := range got {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.Node, c.Err)
		}
	}
	if v := got[0].Report.Verdict; v != VerdictPlaintext {
		t.Errorf("node1 verdict %s, want plaintext", v)
	}
	if v := got[1].Report.Verdict; v != VerdictEncryptedTLS {
		t.Errorf("node2 verdict %s, want encrypted-tls", v)
	}
	if v := OverallVerdict(got); v != VerdictMixed {
		t.Errorf("overall %s, want mixed", v)
	}
	// node1 has one pod: its interface is discovered (and falls back to
	// any); node2 has two: any, without discovery, and both IPs.
	n1, n2 := runners["node1"].ran, runners["node2"].ran
	if len(n1) != 2 || len(n2) != 1 {
		t.Fatalf("node1 ran %q, node2 ran %q", n1, n2)
	}
	if f := n1[1][len(n1[1])-1]; f != "host 10.77.0.3 and (tcp)" {
		t.Errorf("node1 filter %q", f)
	}
	if f, iface := n2[0][len(n2[0])-1], n2[0][12]; f != "(host 10.78.0.5 or host 10.78.0.6) and (tcp)" || iface != "any" {
		t.Errorf("node2 filter %q on %q", f, iface)
	}
	lines := strings.Split(strings.TrimSpace(notes.String()), "\n")
	sort.Strings(lines)
	want := []string{
		"node1: capturing on node1 (stub) interface any: host 10.77.0.3 and (tcp)",
		"node1: could not find the host-side interface of 10.77.0.3 on node1 (stub); capturing on any (packets between pods on this node show twice)",
		"node1: sniffing pod default/web-1 (10.77.0.3) on node1 (stub)",
		"node2: capturing on node2 (stub) interface any: (host 10.78.0.5 or host 10.78.0.6) and (tcp)",
		"node2: sniffing pods default/web-2, default/web-3 (10.78.0.5, 10.78.0.6) on node2 (stub)",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if len(events) == 0 {
		t.Error("no events reached OnEvent")
	}
}

func TestCaptureNodesUnreachableNode(t *testing.T) {
	plain := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames)
	groups, _ := GroupByNode([]*corev1.Pod{
		groupPod("default", "web-1", "node1", "10.77.0.3"),
		groupPod("default", "web-2", "node2", "10.78.0.5"),
	})
	noSSH := errors.New("no SSH settings for node node1: give --ssh-user")
	var notes bytes.Buffer
	cfg := GroupConfig{
		Spec:  CaptureSpec{Interface: "eth0"},
		Notes: &notes,
		Open: func(ctx context.Context, tc TransportConfig, node string) (Runner, error) {
			if node == "node1" {
				return nil, noSSH
			}
			return &stubRunner{pcap: plain}, nil
		},
	}
	got := CaptureNodes(context.Background(), cfg, groups)
	if !errors.Is(got[0].Err, noSSH) || got[0].Report != nil {
		t.Errorf("node1: %v %v, want the SSH error and no report", got[0].Report, got[0].Err)
	}
	if got[1].Err != nil || got[1].Report == nil || got[1].Report.Verdict != VerdictPlaintext {
		t.Errorf("node2: %+v, want a plaintext report", got[1])
	}
	if v := OverallVerdict(got); v != VerdictPlaintext {
		t.Errorf("overall %s, want plaintext (of the node that was captured)", v)
	}
	if want := "node2: sniffing pod default/web-2 (10.78.0.5) on node1 (10.0.0.4:22)\n"; !strings.Contains(notes.String(), want) {
		t.Errorf("notes %q lack %q", notes.String(), want)
	}
}

// One group: notes are not prefixed (sniff POD prints what it always did)
// and -w gets the stream; with several groups -w is refused before any
// capture.
func TestCaptureNodesOneGroup(t *testing.T) {
	plain := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames)
	pod := groupPod("default", "web-1", "node1", "10.77.0.3")
	pod.Spec.HostNetwork = true
	groups, _ := GroupByNode([]*corev1.Pod{pod})
	var notes, raw bytes.Buffer
	r := &stubRunner{pcap: plain}
	cfg := GroupConfig{Spec: CaptureSpec{Interface: "eth0"}, Notes: &notes, Raw: &raw,
		Open: func(context.Context, TransportConfig, string) (Runner, error) { return r, nil }}
	got := CaptureNodes(context.Background(), cfg, groups)
	if got[0].Err != nil {
		t.Fatal(got[0].Err)
	}
	want := "note: pod web-1 uses the host network: its address is the node's, so other traffic of the node shows too\n" +
		"sniffing pod default/web-1 (10.77.0.3) on node1 (10.0.0.4:22)\n" +
		"capturing on node1 (10.0.0.4:22) interface eth0: host 10.77.0.3\n"
	if notes.String() != want {
		t.Errorf("notes:\n%s\nwant:\n%s", notes.String(), want)
	}
	if !bytes.Equal(raw.Bytes(), plain) {
		t.Errorf("-w got %d bytes, want the %d of the capture", raw.Len(), len(plain))
	}

	groups, _ = GroupByNode([]*corev1.Pod{pod, groupPod("default", "web-2", "node2", "10.78.0.5")})
	r = &stubRunner{pcap: plain}
	got = CaptureNodes(context.Background(), cfg, groups)
	for _, c := range got {
		if c.Err == nil || c.Err.Error() != "-w writes one capture: name pods on a single node (these run on 2 nodes)" {
			t.Errorf("%s: %v", c.Node, c.Err)
		}
	}
	if len(r.ran) != 0 {
		t.Errorf("ran %q", r.ran)
	}
}

func TestCaptureNodesCancel(t *testing.T) {
	groups, _ := GroupByNode([]*corev1.Pod{groupPod("default", "web-1", "node1", "10.77.0.3")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := GroupConfig{Spec: CaptureSpec{Interface: "eth0"}, Notes: io.Discard,
		Open: func(ctx context.Context, _ TransportConfig, _ string) (Runner, error) { return nil, ctx.Err() }}
	got := CaptureNodes(ctx, cfg, groups)
	if !errors.Is(got[0].Err, context.Canceled) {
		t.Errorf("err %v", got[0].Err)
	}
}

func TestOverallVerdict(t *testing.T) {
	tests := []struct {
		nodes []Verdict // "" is a node whose capture failed
		want  Verdict
	}{
		{[]Verdict{VerdictEncryptedIstio, VerdictEncryptedIstio}, VerdictEncryptedIstio},
		{[]Verdict{VerdictEncryptedIstio, VerdictNoTraffic}, VerdictEncryptedIstio},
		{[]Verdict{VerdictNoTraffic, VerdictNoTraffic}, VerdictNoTraffic},
		{[]Verdict{VerdictEncryptedIstio, VerdictEncryptedUnproven}, VerdictEncryptedUnproven},
		{[]Verdict{VerdictEncryptedUnproven, VerdictEncryptedTLS}, VerdictEncryptedTLS},
		{[]Verdict{VerdictEncryptedIstio, VerdictPlaintext}, VerdictMixed},
		{[]Verdict{VerdictPlaintext, VerdictPlaintext}, VerdictPlaintext},
		{[]Verdict{VerdictPlaintext, VerdictNoTraffic}, VerdictPlaintext},
		{[]Verdict{VerdictMixed, VerdictNoTraffic}, VerdictMixed},
		{[]Verdict{VerdictUnknown, VerdictEncryptedIstio}, VerdictMixed},
		{[]Verdict{VerdictUnknown, VerdictUnknown}, VerdictUnknown},
		{[]Verdict{VerdictUnknown, VerdictPlaintext}, VerdictMixed},
		{[]Verdict{"", VerdictEncryptedIstio}, VerdictEncryptedIstio},
		{[]Verdict{""}, VerdictNoTraffic},
		{nil, VerdictNoTraffic},
	}
	for _, tt := range tests {
		var caps []NodeCapture
		for _, v := range tt.nodes {
			c := NodeCapture{Node: "n"}
			if v != "" {
				c.Report = &Report{Verdict: v}
			}
			caps = append(caps, c)
		}
		if got := OverallVerdict(caps); got != tt.want {
			t.Errorf("%q: %s, want %s", tt.nodes, got, tt.want)
		}
	}
}

func TestWriteGroup(t *testing.T) {
	plain := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames)
	rep, err := Analyze(context.Background(), bytes.NewReader(plain), Config{})
	if err != nil {
		t.Fatal(err)
	}
	caps := []NodeCapture{
		{Node: "node1", Pods: []*corev1.Pod{groupPod("default", "web-1", "node1", "10.77.0.3")}, Report: rep},
		{Node: "node2", Pods: []*corev1.Pod{groupPod("default", "web-2", "node2", "10.78.0.5"), groupPod("default", "web-3", "node2", "10.78.0.6")},
			Err: errors.New("no SSH settings for node node2")},
	}
	gr := NewGroupReport(caps, []*corev1.Pod{groupPod("default", "web-4", "")})
	var b bytes.Buffer
	if err := WriteGroupSummary(&b, gr); err != nil {
		t.Fatal(err)
	}
	var one bytes.Buffer
	WriteSummary(&one, rep)
	want := "=== node node1: default/web-1 (10.77.0.3)\n" + one.String() + "\n" +
		"=== node node2: default/web-2, default/web-3 (10.78.0.5, 10.78.0.6)\n" +
		"Not captured: no SSH settings for node node2\n\n" +
		"Overall verdict: PLAINTEXT (3 pods on 2 nodes; 1 of 2 nodes not fully captured; pods not captured: default/web-4)\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	if err := gr.Err(); err == nil || err.Error() != "the capture failed on 1 of 2 nodes, so the verdict does not cover their pods:\nnode node2: no SSH settings for node node2" {
		t.Errorf("Err() = %v", err)
	}
	b.Reset()
	if err := WriteGroupJSON(&b, gr); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Verdict Verdict
		Nodes   []struct {
			Node   string
			Pods   []string
			PodIPs []string
			Error  string
			Report *struct{ Verdict Verdict }
		}
		Skipped []string
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Verdict != VerdictPlaintext || len(got.Nodes) != 2 || got.Nodes[0].Report == nil || got.Nodes[0].Report.Verdict != VerdictPlaintext ||
		got.Nodes[1].Report != nil || got.Nodes[1].Error != "no SSH settings for node node2" ||
		!reflect.DeepEqual(got.Nodes[1].PodIPs, []string{"10.78.0.5", "10.78.0.6"}) || !reflect.DeepEqual(got.Skipped, []string{"default/web-4"}) {
		t.Errorf("json:\n%s", b.String())
	}
}
