package sniff

import "net/netip"

type dirKind uint8

const (
	kindNone    dirKind = iota // no payload yet
	kindPending                // payload, protocol not decided yet
	kindUnknown
	kindTLS
	kindHTTP
)

type pendingSeg struct {
	seq  uint32
	data []byte
}

// half is one direction of a TCP connection.
type half struct {
	started bool
	next    uint32
	pending []pendingSeg
	pendBuf int

	kind   dirKind
	text   bool // unrecognised, but printable text: plaintext
	buf    []byte
	tls    tlsInfo
	http   httpScan
	walker recordWalker
	// wholeOnly: judged TLS only because its few bytes are whole records
	// (recordWalker.whole), evidence that counts only if the other
	// direction is TLS too or silent.
	wholeOnly bool
	grep      *matcher
	hits      int
	holes     int
	fin       bool
	payload   int
	lastSeq   uint32
	lastAck   uint32
	lastFlag  uint8
	lastLen   int
	anyPkt    bool
}

type flowKey struct {
	a, b   netip.Addr
	pa, pb uint16
	proto  uint8 // 0 for TCP; the IP protocol of datagram flows
}

type flow struct {
	key     flowKey
	seq     int
	client  int // index of the client direction, -1 when unknown
	dirs    [2]half
	packets int
	bytes   int
	rst     bool
	done    bool // both FINs or a RST seen: waiting in the closed queue
	final   bool // summarized; no longer in the table
	emitted [2]bool
}

// tcp follows one TCP segment in its flow.
func (a *Analyzer) tcp(p *tcpPacket, length int) {
	k, dir := makeKey(p)
	f := a.flows[k]
	if f != nil && p.Flags&tcpSYN != 0 && p.Flags&tcpACK == 0 && f.dirs[dir].started && p.Seq+1 != f.dirs[dir].next {
		// A new connection reusing the ports of an old one.
		a.closeFlow(f)
		f = nil
	}
	if f == nil {
		if p.Flags&tcpSYN == 0 && len(p.Payload) == 0 {
			return // the tail of a closed connection, or an idle one
		}
		if len(a.flows) >= a.cfg.MaxFlows {
			a.report.UntrackedPackets++
			if a.report.UntrackedPackets == 1 {
				a.warn("more than %d flows at once: packets of further flows were judged one by one", a.cfg.MaxFlows)
			}
			a.loose(p.Payload)
			return
		}
		f = &flow{key: k, seq: a.nextSeq, client: -1}
		a.nextSeq++
		a.flows[k] = f
	}
	if f.final {
		return
	}
	h := &f.dirs[dir]
	// The same segment twice in a row is a capture duplicate (-i any).
	ack := p.Ack
	if h.anyPkt && h.lastSeq == p.Seq && h.lastAck == ack && h.lastFlag == p.Flags && h.lastLen == len(p.Payload) {
		a.report.Duplicates++
		return
	}
	h.anyPkt, h.lastSeq, h.lastAck, h.lastFlag, h.lastLen = true, p.Seq, ack, p.Flags, len(p.Payload)
	f.packets++
	f.bytes += length
	if p.Flags&tcpSYN != 0 {
		if p.Flags&tcpACK == 0 {
			f.client = dir
		} else if f.client < 0 {
			f.client = 1 - dir
		}
		if !h.started {
			h.started, h.next = true, p.Seq+1
		}
	}
	if len(p.Payload) > 0 || p.Missing > 0 {
		a.segment(f, dir, p.Seq, p.Payload, p.Missing)
	}
	if p.Flags&tcpFIN != 0 {
		h.fin = true
	}
	if p.Flags&tcpRST != 0 {
		f.rst = true
	}
	if !f.done && (f.rst || (f.dirs[0].fin && f.dirs[1].fin)) {
		f.done = true
		a.closed = append(a.closed, f)
		if len(a.closed) > maxClosedKept {
			old := a.closed[0]
			a.closed = a.closed[1:]
			a.closeFlow(old)
		}
	}
}

// maxClosedKept is how many finished flows stay in the table.
const maxClosedKept = 256

func makeKey(p *tcpPacket) (flowKey, int) {
	c := p.Src.Compare(p.Dst)
	if c < 0 || (c == 0 && p.SrcPort <= p.DstPort) {
		return flowKey{a: p.Src, b: p.Dst, pa: p.SrcPort, pb: p.DstPort}, 0
	}
	return flowKey{a: p.Dst, b: p.Src, pa: p.DstPort, pb: p.SrcPort}, 1
}

// closeFlow finishes a flow and hands it to the policy.
func (a *Analyzer) closeFlow(f *flow) {
	if f.final {
		return
	}
	f.final = true
	for i := range f.dirs {
		a.skipHole(f, i)
		a.decide(f, i, true)
		if g := f.dirs[i].grep; g != nil {
			g.flush()
		}
	}
	if a.flows[f.key] == f {
		delete(a.flows, f.key)
	}
	c, _ := f.roles()
	e := f.evidence()
	for i := range f.dirs {
		if f.dirs[i].kind == kindTLS {
			a.report.GrepHitsInTLS += f.dirs[i].hits
		}
	}
	fs := FlowSummary{
		Src: e.Client.String(), Dst: e.Server.String(), Transport: "tcp",
		Packets: f.packets, Bytes: f.bytes, ALPN: []string{}, seq: f.seq,
		GrepHits: f.dirs[0].hits + f.dirs[1].hits, Holes: f.dirs[0].holes + f.dirs[1].holes,
	}
	ch, sh := &f.dirs[c], &f.dirs[1-c]
	switch {
	case ch.kind == kindHTTP || sh.kind == kindHTTP:
		h := ch
		if h.kind != kindHTTP {
			h = sh
		}
		fs.Protocol = h.http.Proto
		if ch.kind == kindHTTP && ch.http.Request {
			fs.Request = ch.http.Line
		}
	case ch.kind == kindTLS || sh.kind == kindTLS:
		fs.Protocol = "TLS"
		fs.SNI = ch.tls.SNI
		if len(ch.tls.ALPN) > 0 {
			fs.ALPN = ch.tls.ALPN
		}
		switch {
		case sh.tls.ServerHello:
			fs.TLSVersion = TLSVersionName(sh.tls.Selected)
		case ch.tls.ClientHello:
			fs.TLSVersion = offeredName(ch.tls.Offered)
		}
	case ch.text || sh.text:
		fs.Protocol = "text"
	case !e.Data:
		fs.Protocol = "-"
	default:
		fs.Protocol = "unrecognised"
	}
	a.conclude(e, &fs)
}

// roles returns the client and server directions: as seen in the
// handshake or first bytes, else the lower port is most likely the server.
func (f *flow) roles() (client, server int) {
	k := f.key
	if f.client == 1 || (f.client < 0 && k.pa < k.pb) {
		return 1, 0
	}
	return 0, 1
}

// evidence is what the flow showed, for the policy.
func (f *flow) evidence() flowEvidence {
	c, _ := f.roles()
	k := f.key
	ends := [2]netip.AddrPort{netip.AddrPortFrom(k.a, k.pa), netip.AddrPortFrom(k.b, k.pb)}
	e := flowEvidence{Transport: "tcp", Client: ends[c], Server: ends[1-c]}
	tlsNoHello, short := false, true
	for i := range f.dirs {
		h := &f.dirs[i]
		if h.payload > 0 {
			e.Data = true
		}
		kind := h.kind
		if other := &f.dirs[1-i]; kind == kindTLS && h.wholeOnly && other.payload > 0 && other.kind != kindTLS {
			// A few record-shaped bytes answering bytes of another kind
			// prove nothing: this direction counts as unrecognised.
			kind = kindUnknown
		}
		if kind != kindTLS {
			e.GrepHits += h.hits
		}
		switch kind {
		case kindHTTP:
			e.Cleartext = h.http.Proto
			if h.http.Request && e.Request == "" {
				e.Request = h.http.Line
			}
		case kindTLS:
			if h.tls.ClientHello {
				e.Hello = helloOf(&h.tls, e.Server.Port())
			} else {
				tlsNoHello = true
			}
		case kindUnknown, kindPending:
			if h.text && e.Cleartext == "" {
				e.Cleartext = "text"
			}
			if h.kind == kindPending {
				e.Pending = true
			}
		}
		if h.payload >= minRecogniseBytes || h.kind == kindTLS || h.kind == kindHTTP {
			short = false
		}
	}
	e.NoHandshake = tlsNoHello && e.Hello == helloNone
	e.Pending = e.Pending || (e.Data && short)
	return e
}

// minRecogniseBytes: a direction that carried fewer bytes than this and
// matched nothing is "too little to recognise", not "unrecognised".
const minRecogniseBytes = 8
