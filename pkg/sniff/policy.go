package sniff

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The verdict policy, written once as data: what each flow showed (its
// evidence) is matched against flowRules in order, the first match gives
// the flow's verdict; infraRules set mesh infrastructure apart; the
// capture's verdict comes from captureRules over the application flows.
// `sniff --help` and docs/verdicts.md print these tables, and each row has
// a test (policy_test.go).

// helloKind is what a ClientHello said about its sender.
type helloKind uint8

const (
	helloNone  helloKind = iota
	helloIstio           // Istio's ALPN or outbound_ SNI: a sidecar's mTLS
	helloHBONE           // to 15008, ALPN exactly h2, no SNI: ztunnel or a waypoint
	helloOther           // any other TLS client
)

// flowEvidence is what one flow showed: the input of the policy.
type flowEvidence struct {
	Transport      string // tcp, udp, icmp or ip
	Client, Server netip.AddrPort
	// Cleartext names a recognised cleartext protocol (HTTP/1.1, h2c, DNS, text).
	Cleartext string
	// Request is an HTTP/1.x request line's method and target ("GET /ready").
	Request string
	// GrepHits counts --grep hits outside TLS streams.
	GrepHits int
	Hello    helloKind
	// NoHandshake: TLS records or a ServerHello, but no ClientHello captured
	// (a pooled connection opened before the capture).
	NoHandshake bool
	// Cipher names a non-TLS-over-TCP encrypted protocol (QUIC, DTLS).
	Cipher  string
	Data    bool
	Pending bool // data, but too little to recognise
	// Associated counts flows in the same capture that proved Istio by
	// their handshake to the same server endpoint.
	Associated int
	// Context says why the live pod's own facts make the flow Istio's
	// ("" when they do not or the capture is a file).
	Context string
}

// flowRule is one row of the per-flow table.
type flowRule struct {
	Name    string
	When    string
	Verdict Verdict
	Istio   string // "sidecar", "hbone" or ""
	match   func(e *flowEvidence) bool
	explain func(e *flowEvidence) string
}

// flowRules, first match wins.
var flowRules = []flowRule{
	{"mesh-bypass", "live capture of a pod in ambient mode: unencrypted TCP between it and another enrolled pod on an application port; ztunnel carries enrolled pods' traffic as HBONE on 15008, so this went around the mesh", VerdictPlaintext, "",
		func(e *flowEvidence) bool {
			return strings.HasPrefix(e.Context, bypassContext) && e.Hello == helloNone && !e.NoHandshake && e.Cipher == "" &&
				(e.Data || e.Cleartext != "" || e.GrepHits > 0)
		},
		func(e *flowEvidence) string {
			what := "unrecognised data"
			if e.Cleartext != "" {
				what = "cleartext " + e.Cleartext
			}
			return what + "; " + e.Context
		}},
	{"cleartext", "a cleartext protocol is recognised: HTTP/1.x, h2c, DNS, ICMP, printable text", VerdictPlaintext, "",
		func(e *flowEvidence) bool { return e.Cleartext != "" },
		func(e *flowEvidence) string { return "cleartext " + e.Cleartext }},
	{"grep-in-clear", "--grep matched outside TLS", VerdictPlaintext, "",
		func(e *flowEvidence) bool { return e.GrepHits > 0 },
		func(e *flowEvidence) string { return "grep pattern visible outside TLS" }},
	{"istio-hello", "a TLS ClientHello offers Istio's ALPN (istio, istio-peer-exchange, istio-http/*, istio-h2) or SNI outbound_.*", VerdictEncryptedIstio, "sidecar",
		func(e *flowEvidence) bool { return e.Hello == helloIstio },
		func(e *flowEvidence) string { return "TLS ClientHello with Istio ALPN/SNI" }},
	{"hbone-hello", "a TLS ClientHello to port 15008 offers exactly ALPN h2 and no SNI (HBONE: ztunnel, waypoints)", VerdictEncryptedIstio, "hbone",
		func(e *flowEvidence) bool { return e.Hello == helloHBONE },
		func(e *flowEvidence) string { return "TLS ClientHello to 15008, ALPN h2, no SNI (HBONE)" }},
	{"other-hello", "a TLS ClientHello without Istio's ALPN/SNI: encrypted, and proven not Istio", VerdictEncryptedTLS, "",
		func(e *flowEvidence) bool { return e.Hello == helloOther },
		func(e *flowEvidence) string { return "TLS ClientHello without Istio ALPN/SNI" }},
	{"other-cipher", "QUIC or DTLS: encrypted, not Istio", VerdictEncryptedTLS, "",
		func(e *flowEvidence) bool { return e.Cipher != "" },
		func(e *flowEvidence) string { return e.Cipher + " (encrypted, not Istio)" }},
	{"hbone-pooled", "TLS records on port 15008, handshake not captured (a pooled HBONE connection)", VerdictEncryptedIstio, "hbone",
		func(e *flowEvidence) bool { return e.NoHandshake && e.Server.Port() == hbonePort },
		func(e *flowEvidence) string { return "TLS records on 15008 (HBONE), handshake not captured" }},
	{"associated", "handshake not captured, to a server endpoint that flows with an Istio ClientHello in this capture also reach", VerdictEncryptedIstio, "sidecar",
		func(e *flowEvidence) bool { return e.NoHandshake && e.Associated > 0 },
		func(e *flowEvidence) string {
			return fmt.Sprintf("handshake not captured; Istio by association with %d proven %s to %s", e.Associated, plural(e.Associated, "flow", "flows"), e.Server)
		}},
	{"pod-context", "handshake not captured, live capture: inbound to the pod's sidecar, or from the pod's sidecar to a pod with a sidecar", VerdictEncryptedIstio, "sidecar",
		func(e *flowEvidence) bool {
			return e.NoHandshake && e.Context != "" && !strings.HasPrefix(e.Context, bypassContext)
		},
		func(e *flowEvidence) string { return "handshake not captured; Istio by pod context: " + e.Context }},
	{"no-handshake", "TLS records or a ServerHello, handshake not captured, nothing proves Istio or not", VerdictEncryptedUnproven, "",
		func(e *flowEvidence) bool { return e.NoHandshake },
		func(e *flowEvidence) string { return "TLS records; handshake not captured, Istio not proven" }},
	{"too-little", "data, but too little to recognise", VerdictUnknown, "",
		func(e *flowEvidence) bool { return e.Pending },
		func(e *flowEvidence) string { return "too little data to recognise" }},
	{"unrecognised", "data of no recognised protocol", VerdictUnknown, "",
		func(e *flowEvidence) bool { return e.Data },
		func(e *flowEvidence) string { return "unrecognised bytes" }},
	{"no-payload", "no payload (refused, idle, or only handshakes of TCP)", VerdictNoData, "",
		func(*flowEvidence) bool { return true },
		func(*flowEvidence) string { return "no payload" }},
}

// decideFlow applies flowRules to e and explains the verdict.
func decideFlow(e *flowEvidence) (rule *flowRule, evidence string) {
	r := ruleFor(e)
	return r, r.explain(e)
}

// ruleFor is the first flow rule that matches e.
func ruleFor(e *flowEvidence) *flowRule {
	for i := range flowRules {
		if flowRules[i].match(e) {
			return &flowRules[i]
		}
	}
	panic("unreachable: the last flow rule matches everything")
}

// infraRule sets a flow apart as mesh infrastructure: plaintext or TLS by
// design, not application traffic, so not part of the verdict unless
// --include-infra. A --grep hit outside TLS in such a flow still counts.
type infraRule struct {
	Name  string
	When  string
	match func(e *flowEvidence, pod *PodContext) bool
}

// Istio's ports that carry infrastructure traffic to a workload pod.
const (
	portIstioAgent   = 15020 // merged metrics, rewritten app probes (/app-health/…)
	portIstioHealth  = 15021 // istio-proxy readiness (/healthz/ready)
	portEnvoyMetrics = 15090 // Envoy's /stats/prometheus
	portIstiodXDS    = 15012 // istiod: xDS and certificates over TLS
)

// istioLocalPorts serve the pod itself (Envoy admin, debug, DNS proxy).
var istioLocalPorts = []uint16{15000, 15004, 15053}

var infraRules = []infraRule{
	{"istio-health", "TCP to 15021: the kubelet's readiness probe of istio-proxy (GET /healthz/ready)",
		func(e *flowEvidence, _ *PodContext) bool {
			return e.Transport == "tcp" && e.Server.Port() == portIstioHealth
		}},
	{"istio-agent", "TCP to 15020: the kubelet's app probes rewritten by injection (/app-health/…) and the merged metrics scrape",
		func(e *flowEvidence, _ *PodContext) bool {
			return e.Transport == "tcp" && e.Server.Port() == portIstioAgent
		}},
	{"envoy-metrics", "TCP to 15090: Prometheus scraping Envoy (/stats/prometheus)",
		func(e *flowEvidence, _ *PodContext) bool {
			return e.Transport == "tcp" && e.Server.Port() == portEnvoyMetrics
		}},
	{"istiod", "TCP to 15012: the sidecar's xDS and certificate stream to istiod (TLS)",
		func(e *flowEvidence, _ *PodContext) bool {
			return e.Transport == "tcp" && e.Server.Port() == portIstiodXDS
		}},
	{"istio-local", "to 15000, 15004 or 15053: the Istio agent's local ports (Envoy admin, debug, DNS proxy)",
		func(e *flowEvidence, _ *PodContext) bool { return slices.Contains(istioLocalPorts, e.Server.Port()) }},
	{"kubelet-probe", "live capture: from the node's IP (for a pod in ambient mode, istio-cni's probe address 169.254.7.127, to which it rewrites the source of every connection from the node) to a port the pod's spec probes, as that probe: GET of its path, a bare TCP connection, or gRPC",
		func(e *flowEvidence, pod *PodContext) bool {
			if pod == nil || !slices.Contains(pod.IPs, e.Server.Addr()) {
				return false
			}
			c := e.Client.Addr()
			return (pod.NodeIP.IsValid() && c == pod.NodeIP || pod.Ambient && (c == ambientProbeSNAT4 || c == ambientProbeSNAT6)) &&
				probeShaped(e, pod.ProbeRequests[e.Server.Port()])
		}},
	{"cluster-dns", "DNS on port 53: Istio does not carry DNS, so it is cleartext with or without the mesh",
		func(e *flowEvidence, _ *PodContext) bool {
			return e.Server.Port() == 53 && (e.Cleartext == "DNS" || !e.Data)
		}},
	{"icmp", "ICMP and ICMPv6: control messages",
		func(e *flowEvidence, _ *PodContext) bool { return e.Transport == "icmp" }},
}

// istioPortRules hold for Istio's ports: in a live capture of a pod without
// a sidecar those ports are the app's own, so they do not apply.
var istioPortRules = []string{"istio-health", "istio-agent", "envoy-metrics", "istiod", "istio-local"}

// istioPorts says whether Istio's ports may be Istio's: always in a saved
// capture (nothing says otherwise), only with a sidecar in a live one.
func (pc *PodContext) istioPorts() bool { return pc == nil || pc.Sidecar }

// infraOf names the infrastructure rule e falls under ("" for application traffic).
func infraOf(e *flowEvidence, pod *PodContext) *infraRule {
	for i := range infraRules {
		r := &infraRules[i]
		if !pod.istioPorts() && slices.Contains(istioPortRules, r.Name) {
			continue
		}
		if r.match(e, pod) {
			return r
		}
	}
	return nil
}

// tally counts application flows (and loose packets) by verdict.
type tally struct {
	plain, istio, tls, unproven, unknown int
}

func (t *tally) add(v Verdict, n int) {
	switch v {
	case VerdictPlaintext:
		t.plain += n
	case VerdictEncryptedIstio:
		t.istio += n
	case VerdictEncryptedTLS:
		t.tls += n
	case VerdictEncryptedUnproven:
		t.unproven += n
	case VerdictUnknown:
		t.unknown += n
	}
}

// captureRule is one row of the capture-level table.
type captureRule struct {
	Name    string
	When    string
	Verdict Verdict
	match   func(t tally) bool
}

func (t tally) encrypted() int { return t.istio + t.tls + t.unproven }

// captureRules, first match wins.
var captureRules = []captureRule{
	{"no-traffic", "no application flow carried payload", VerdictNoTraffic,
		func(t tally) bool { return t.plain+t.encrypted()+t.unknown == 0 }},
	{"mixed", "plaintext beside encrypted or unrecognised traffic, or unrecognised beside encrypted", VerdictMixed,
		func(t tally) bool {
			return (t.plain > 0 && t.encrypted()+t.unknown > 0) || (t.unknown > 0 && t.encrypted() > 0)
		}},
	{"plaintext", "all plaintext", VerdictPlaintext, func(t tally) bool { return t.plain > 0 }},
	{"unknown", "all unrecognised", VerdictUnknown, func(t tally) bool { return t.unknown > 0 }},
	{"not-istio", "all encrypted, and some TLS handshake proves a flow is not Istio's", VerdictEncryptedTLS,
		func(t tally) bool { return t.tls > 0 }},
	{"unproven", "all encrypted, some flows without a handshake or other evidence of Istio", VerdictEncryptedUnproven,
		func(t tally) bool { return t.unproven > 0 }},
	{"istio", "all encrypted, every flow proven Istio's (handshake, HBONE port, association or pod context)", VerdictEncryptedIstio,
		func(tally) bool { return true }},
}

func decideCapture(t tally) Verdict {
	for _, r := range captureRules {
		if r.match(t) {
			return r.Verdict
		}
	}
	return VerdictUnknown
}

// PolicyText renders the three tables for help texts and docs/verdicts.md.
func PolicyText() string {
	var b strings.Builder
	b.WriteString("Each flow, first matching rule:\n")
	for _, r := range flowRules {
		row(&b, fmt.Sprintf("  %-14s %-17s ", r.Name, flowLabel(FlowSummary{Verdict: r.Verdict, Istio: r.Istio})), r.When)
	}
	b.WriteString("\nMesh infrastructure, listed apart and left out of the verdict (--include-infra\nputs it back; a --grep hit outside TLS always counts). In a live capture of a\npod without a sidecar, Istio's ports (the first five rows) are the app's own:\n")
	for _, r := range infraRules {
		row(&b, fmt.Sprintf("  %-14s ", r.Name), r.When)
	}
	b.WriteString("\nThe capture, over application flows, first matching rule:\n")
	for _, r := range captureRules {
		row(&b, fmt.Sprintf("  %-14s %-18s ", r.Name, string(r.Verdict)), r.When)
	}
	return b.String()
}

// row writes head and text wrapped at 80 columns, continuation lines
// indented under the text.
func row(b *strings.Builder, head, text string) {
	const width = 80
	line := head
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > width && len(line) > len(head) {
			b.WriteString(strings.TrimRight(line, " ") + "\n")
			line = strings.Repeat(" ", len(head))
		}
		if len(line) > len(head) {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
}

// PodContext is what the cluster says about a pod captured live. It lets
// flows caught mid-stream count as Istio's, and names kubelet probes.
type PodContext struct {
	// IPs are the captured pods' addresses.
	IPs []netip.Addr
	// NodeIP is the node's address: the kubelet probes from it.
	NodeIP netip.Addr
	// Sidecar: the pods run istio-proxy, so their inbound ports (bar
	// ExcludedInbound) and their outbound traffic to meshed pods are mTLS.
	Sidecar         bool
	ExcludedInbound []uint16
	// ProbeRequests are what the kubelet sends for the pods' probes, by
	// port: "GET PATH", ProbeTCP or ProbeGRPC.
	ProbeRequests map[uint16][]string
	// MeshedPeers are addresses of other pods that run a sidecar.
	MeshedPeers []netip.Addr
	// Ambient: the pods are enrolled in ambient mode (mesh.AmbientOf says
	// captured), so ztunnel should carry their traffic as HBONE on 15008.
	// AmbientPeers names the other enrolled pods of the namespace
	// (NAMESPACE/NAME) by address.
	Ambient      bool
	AmbientPeers map[netip.Addr]string
	// LookupAmbientPeer, when set, names an enrolled pod of another
	// namespace by address ("" when the address is no such pod).
	LookupAmbientPeer func(netip.Addr) string
}

// ambientPeer names the enrolled pod at a ("" when none is known); with
// lookup, addresses of other namespaces are looked up, bar those no pod of
// the pod network has (the node's, link-local ones, istio-cni's probe
// address).
func (pc *PodContext) ambientPeer(a netip.Addr, lookup bool) string {
	if p := pc.AmbientPeers[a]; p != "" {
		return p
	}
	if !lookup || pc.LookupAmbientPeer == nil || slices.Contains(pc.IPs, a) || a == pc.NodeIP ||
		a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a == ambientProbeSNAT6 {
		return ""
	}
	return pc.LookupAmbientPeer(a)
}

// What a TCP and a gRPC probe send, in PodContext.ProbeRequests.
const (
	ProbeTCP  = "tcp"
	ProbeGRPC = "grpc"
)

// probeShaped says whether a flow is one of the kubelet's probes of its
// port: anything else from the node (a host-network agent calling the app)
// is application traffic, even on a probed port.
func probeShaped(e *flowEvidence, probes []string) bool {
	for _, p := range probes {
		switch p {
		case ProbeTCP:
			if !e.Data {
				return true
			}
		case ProbeGRPC:
			if !e.Data || e.Cleartext == "HTTP/2 (h2c)" {
				return true
			}
		default:
			if e.Request == p {
				return true
			}
		}
	}
	return false
}

// istio-cni's HOST_PROBE_SNAT_ADDRESS defaults: on the node it rewrites the
// source of the kubelet's probes of ambient pods to them, so that inside
// the pod they skip ztunnel.
var (
	ambientProbeSNAT4 = netip.MustParseAddr("169.254.7.127")
	ambientProbeSNAT6 = netip.MustParseAddr("fd16:9254:7127:1337:ffff:ffff:ffff:ffff")
)

// bypassContext starts the context of a flow that went around ztunnel.
const bypassContext = "mesh bypass: "

// context explains why pod facts make a mid-stream flow Istio's, or name
// a mesh bypass. lookup allows asking the API for a peer of another
// namespace: only for a finished flow that would be a bypass, never while
// packets are being read.
func (pc *PodContext) context(e *flowEvidence, lookup bool) string {
	if pc != nil && pc.Ambient && e.Transport == "tcp" && e.Server.Port() != hbonePort {
		lookup = lookup && e.Hello == helloNone && !e.NoHandshake && e.Cipher == "" && (e.Data || e.Cleartext != "")
		if peer := pc.bypassPeer(e, lookup); peer != "" {
			return bypassContext + peer
		}
	}
	if pc == nil || !pc.Sidecar || e.Transport != "tcp" {
		return ""
	}
	switch {
	case slices.Contains(pc.IPs, e.Server.Addr()) && !slices.Contains(pc.ExcludedInbound, e.Server.Port()):
		return "inbound to the captured pod's sidecar"
	case slices.Contains(pc.IPs, e.Client.Addr()) && slices.Contains(pc.MeshedPeers, e.Server.Addr()):
		return "from the captured pod's sidecar to a pod with a sidecar"
	}
	return ""
}

// bypassPeer names the enrolled peer of a flow between the captured pod
// and another enrolled pod off HBONE's port ("" for other flows).
func (pc *PodContext) bypassPeer(e *flowEvidence, lookup bool) string {
	switch {
	case slices.Contains(pc.IPs, e.Client.Addr()):
		if peer := pc.ambientPeer(e.Server.Addr(), lookup); peer != "" {
			return fmt.Sprintf("from the captured pod to enrolled pod %s (%s) on port %d, not through ztunnel's HBONE (15008)", peer, e.Server.Addr(), e.Server.Port())
		}
	case slices.Contains(pc.IPs, e.Server.Addr()):
		if peer := pc.ambientPeer(e.Client.Addr(), lookup); peer != "" {
			return fmt.Sprintf("from enrolled pod %s (%s) to the captured pod on port %d, not through ztunnel's HBONE (15008)", peer, e.Client.Addr(), e.Server.Port())
		}
	}
	return ""
}
