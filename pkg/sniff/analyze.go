// Package sniff captures a pod's traffic on its node and decides whether it is
// plaintext or encrypted, with evidence: it reassembles each TCP direction,
// recognises TLS handshakes and records, HTTP/1.x and cleartext HTTP/2, and
// counts a marker across segment boundaries. Memory stays bounded whatever
// the capture's size: only the first bytes of each direction are kept, and
// flows and out-of-order data are capped.
package sniff

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// Config tunes an analysis. Zero values take the defaults.
type Config struct {
	// Grep is counted in the reassembled payloads ("" counts nothing).
	Grep string
	// MaxPackets stops the analysis after this many packets (0: no limit).
	MaxPackets int
	// MaxFlows caps the TCP flows tracked at once; packets of further flows
	// are counted as untracked.
	MaxFlows int
	// MaxFlowSummaries caps the flows listed in the report; the verdict still
	// counts the others.
	MaxFlowSummaries int
	// ClassifyBytes is how much of each direction's start is kept to
	// recognise its protocol.
	ClassifyBytes int
	// MaxPendingBytes caps out-of-order data held per direction while
	// waiting for a hole to fill; past it the hole is skipped.
	MaxPendingBytes int
	// OnEvent, when set, is called for each flow event as it happens.
	OnEvent func(Event)
	// Pod, for a live capture, is what the cluster says about the captured
	// pods: flows caught mid-stream can then be Istio's by pod context, and
	// kubelet probes are named.
	Pod *PodContext
	// IncludeInfra counts mesh infrastructure traffic (probes, scrapes,
	// DNS, istiod) in the verdict instead of listing it apart.
	IncludeInfra bool
}

// Defaults.
const (
	DefaultMaxFlows         = 10000
	DefaultMaxFlowSummaries = 10000
	DefaultClassifyBytes    = 16 << 10
	DefaultMaxPendingBytes  = 64 << 10
	// budgetBytes caps the sum of classification and out-of-order buffers
	// over all flows.
	budgetBytes = 64 << 20
)

func (c Config) withDefaults() Config {
	if c.MaxFlows <= 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.MaxFlowSummaries <= 0 {
		c.MaxFlowSummaries = DefaultMaxFlowSummaries
	}
	if c.ClassifyBytes <= 0 {
		c.ClassifyBytes = DefaultClassifyBytes
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	return c
}

// EventKind says what happened in a flow.
type EventKind string

// Event kinds.
const (
	// EventProtocol: a direction's protocol was recognised (or not).
	EventProtocol EventKind = "protocol"
	// EventGrep: the first --grep hit in a direction.
	EventGrep EventKind = "grep"
)

// Event is one line of live output.
type Event struct {
	Time     time.Time      `json:"time"`
	Kind     EventKind      `json:"kind"`
	Src      netip.AddrPort `json:"src"`
	Dst      netip.AddrPort `json:"dst"`
	Protocol string         `json:"protocol"`
	// Detail is the protocol-specific part (request line, SNI and ALPN).
	Detail  string  `json:"detail,omitempty"`
	Verdict Verdict `json:"verdict"`
	// Snippet shows the bytes around a grep hit.
	Snippet string `json:"snippet,omitempty"`
}

// FlowSummary is one flow in the report (a TCP connection, or the datagrams
// between two UDP ports or two hosts), oriented client → server when that
// could be told.
type FlowSummary struct {
	Src        string   `json:"src"`
	Dst        string   `json:"dst"`
	Transport  string   `json:"transport"`
	Protocol   string   `json:"protocol"`
	Request    string   `json:"request,omitempty"`
	SNI        string   `json:"sni"`
	ALPN       []string `json:"alpn"`
	TLSVersion string   `json:"tlsVersion"`
	Verdict    Verdict  `json:"verdict"`
	// Istio says how Istio carries an encrypted-istio flow: sidecar or hbone.
	Istio string `json:"istio,omitempty"`
	// Rule is the row of the verdict policy that decided the flow.
	Rule string `json:"rule"`
	// Evidence says what the verdict rests on.
	Evidence string `json:"evidence"`
	// Infra names the mesh infrastructure rule that set the flow apart.
	Infra    string `json:"infra,omitempty"`
	Packets  int    `json:"packets"`
	Bytes    int    `json:"bytes"`
	GrepHits int    `json:"grepHits"`
	// Holes counts gaps in the reassembled data (lost or uncaptured segments).
	Holes int `json:"holes,omitempty"`

	seq int
}

// Report is the result of an analysis.
type Report struct {
	Verdict  Verdict `json:"verdict"`
	Grep     string  `json:"grep,omitempty"`
	GrepHits int     `json:"grepHits"`
	// LinkType is the capture's pcap link type.
	LinkType uint32 `json:"linkType"`
	Packets  int    `json:"packets"`
	// Duplicates are packets seen twice (`tcpdump -i any` captures each
	// packet on both veths); they are not counted in flows.
	Duplicates int `json:"duplicates,omitempty"`
	// OtherPackets are not IP (ARP, LLDP…) or could not be decoded.
	OtherPackets int `json:"otherPackets"`
	// DatagramPackets are UDP, ICMP and other IP packets that are not TCP.
	DatagramPackets int `json:"datagramPackets"`
	// Fragments are IP fragments; Reassembled counts the datagrams they
	// made whole, FragmentsLost those given up (time-out, caps, snap length).
	Fragments     int `json:"fragments,omitempty"`
	Reassembled   int `json:"reassembled,omitempty"`
	FragmentsLost int `json:"fragmentsLost,omitempty"`
	// UntrackedPackets belong to flows over the flow limit, or to
	// connections whose start and data were not seen.
	UntrackedPackets int `json:"untrackedPackets,omitempty"`
	// Flows are the application flows: the verdict is theirs.
	Flows []FlowSummary `json:"flows"`
	// Infra is mesh infrastructure traffic (probes, scrapes, DNS, istiod),
	// listed apart and not in the verdict unless IncludeInfra.
	Infra []FlowSummary `json:"infra"`
	// FlowsOmitted were counted in the verdict but not listed.
	FlowsOmitted int `json:"flowsOmitted,omitempty"`
	// GrepHitsInTLS are the grep hits inside TLS streams: a short pattern
	// matches ciphertext by chance, so they do not make a flow plaintext.
	GrepHitsInTLS int `json:"grepHitsInTLS,omitempty"`
	// Why names the flows that kept the verdict from being encrypted.
	Why []string `json:"why,omitempty"`
	// Incomplete is set when the capture ended early (connection lost,
	// truncated file); the verdict covers what was seen.
	Incomplete bool     `json:"incomplete,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// Analyzer consumes packets and builds a Report.
type Analyzer struct {
	cfg   Config
	grep  []byte
	flows map[flowKey]*flow
	// closed holds finished flows for a while, so the last ACK and
	// capture duplicates still land in them.
	closed   []*flow
	nextSeq  int
	buffered int
	report   Report
	pkt      tcpPacket
	linkType uint32
	now      time.Time

	defrag *defragmenter
	dgrams map[flowKey]*dgram
	// The verdict's inputs: tallies of application flows, Istio-proven
	// server endpoints, and mid-stream flows waiting for association.
	flowList     summaryList
	infraList    summaryList
	tally        tally
	istioServers map[netip.AddrPort]int
	deferred     []deferredFlow
	whyCount     map[Verdict]int
}

// NewAnalyzer returns an analyzer with cfg.
func NewAnalyzer(cfg Config) *Analyzer {
	cfg = cfg.withDefaults()
	a := &Analyzer{cfg: cfg, flows: map[flowKey]*flow{}, defrag: newDefragmenter(), dgrams: map[flowKey]*dgram{},
		istioServers: map[netip.AddrPort]int{}, whyCount: map[Verdict]int{}}
	if cfg.Grep != "" {
		a.grep = []byte(cfg.Grep)
	}
	a.report.Grep = cfg.Grep
	return a
}

// ErrPacketLimit is returned by Analyze when MaxPackets was reached.
var ErrPacketLimit = errors.New("packet limit reached")

// Analyze reads a pcap or pcapng stream from r until EOF, ctx is done or
// MaxPackets is reached (ErrPacketLimit), and returns the report so far. A
// stream cut in the middle of a packet is reported as incomplete, not an
// error.
func Analyze(ctx context.Context, r io.Reader, cfg Config) (*Report, error) {
	a := NewAnalyzer(cfg)
	err := a.ReadFrom(ctx, r)
	rep := a.Finish()
	return rep, err
}

// ReadFrom feeds the packets of a pcap or pcapng stream to the analyzer.
func (a *Analyzer) ReadFrom(ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		if errors.Is(err, io.EOF) && len(magic) == 0 {
			a.warn("the capture is empty: no pcap header was received")
			a.report.Incomplete = true
			return nil
		}
		return fmt.Errorf("reading the capture header: %w", err)
	}
	var next func() ([]byte, time.Time, int, error)
	if binary.LittleEndian.Uint32(magic) == 0x0a0d0d0a {
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{})
		if err != nil {
			return fmt.Errorf("reading pcapng: %w", err)
		}
		a.linkType = uint32(ng.LinkType())
		next = func() ([]byte, time.Time, int, error) {
			d, ci, err := ng.ZeroCopyReadPacketData()
			return d, ci.Timestamp, ci.Length, err
		}
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return fmt.Errorf("not a pcap or pcapng capture: %w", err)
		}
		a.linkType = uint32(pr.LinkType())
		next = func() ([]byte, time.Time, int, error) {
			d, ci, err := pr.ZeroCopyReadPacketData()
			return d, ci.Timestamp, ci.Length, err
		}
	}
	a.report.LinkType = a.linkType
	if !SupportedLinkType(a.linkType) {
		return fmt.Errorf("unsupported link type %d: capture on an Ethernet interface or `any`", a.linkType)
	}
	for i := 0; ; i++ {
		if i&0xfff == 0 && ctx.Err() != nil {
			return nil
		}
		data, ts, length, err := next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				a.report.Incomplete = true
				a.warn("the capture ended in the middle of a packet")
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading packet %d: %w", a.report.Packets+1, err)
		}
		a.Packet(ts, data, length)
		if a.cfg.MaxPackets > 0 && a.report.Packets >= a.cfg.MaxPackets {
			return ErrPacketLimit
		}
	}
}

// SetLinkType sets the link type for packets fed with Packet directly.
func (a *Analyzer) SetLinkType(lt uint32) {
	a.linkType = lt
	a.report.LinkType = lt
}

func (a *Analyzer) warn(format string, args ...any) {
	a.report.Warnings = append(a.report.Warnings, fmt.Sprintf(format, args...))
}

// Packet analyses one captured frame; length is its length on the wire.
func (a *Analyzer) Packet(ts time.Time, data []byte, length int) {
	a.report.Packets++
	a.now = ts
	p := &a.pkt
	r := decodePacket(a.linkType, data, p)
	if r == skipFragment {
		a.report.Fragments++
		b := a.defrag.add(ts, p)
		a.takeLost()
		if b == nil {
			return
		}
		a.report.Reassembled++
		length = len(b)
		r = decodeUpper(p, p.Proto, b)
		if r == skipFragment {
			r = skipMalformed // a fragment inside a fragment
		}
	}
	switch r {
	case notSkipped:
		a.tcp(p, length)
	case skipNotTCP:
		a.datagram(p, length)
	default:
		a.report.OtherPackets++
	}
	if a.report.Packets&0xfff == 0 {
		a.expireDatagrams()
	}
}

// Finish closes the open flows and returns the report.
func (a *Analyzer) Finish() *Report {
	open := make([]*flow, 0, len(a.flows))
	for _, f := range a.flows {
		open = append(open, f)
	}
	sort.Slice(open, func(i, j int) bool { return open[i].seq < open[j].seq })
	for _, f := range open {
		a.closeFlow(f)
	}
	a.defrag.flush()
	a.takeLost()
	a.closeDatagrams(time.Time{})
	a.resolveDeferred()
	a.report.Flows, a.report.Infra = a.flowList.slice(), a.infraList.slice()
	for _, l := range []([]FlowSummary){a.report.Flows, a.report.Infra} {
		sort.SliceStable(l, func(i, j int) bool { return l[i].seq < l[j].seq })
	}
	a.report.Verdict = decideCapture(a.tally)
	r := a.report
	return &r
}
