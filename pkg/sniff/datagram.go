package sniff

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Datagram flows: UDP between two ports, and ICMP or any other IP protocol
// between two hosts. Every datagram is classified on its own (there is no
// stream to follow) and searched by --grep; a flow takes the strongest
// evidence any of its datagrams gave: cleartext, then encryption, then
// unrecognised.

// dgramIdle is how long a datagram flow may stay silent before it is
// summarised: UDP has no close, and each DNS query is a new flow.
const dgramIdle = 30 * time.Second

type dgram struct {
	key     flowKey
	proto   uint8
	seq     int
	first   int // direction of the first datagram
	client  int // direction of the client when a DNS query told it, else -1
	packets int
	bytes   int
	payload int
	hits    int
	clear   string // DNS or text
	cipher  string // QUIC or DTLS
	detail  string
	last    time.Time
}

// datagram follows one non-TCP IP packet.
func (a *Analyzer) datagram(p *tcpPacket, length int) {
	a.report.DatagramPackets++
	k, dir := makeKey(p)
	k.proto = p.Proto
	d := a.dgrams[k]
	if d == nil {
		if len(a.dgrams) >= a.cfg.MaxFlows {
			a.expireDatagrams()
		}
		if len(a.dgrams) >= a.cfg.MaxFlows {
			a.report.UntrackedPackets++
			a.loose(p.Payload)
			return
		}
		d = &dgram{key: k, proto: p.Proto, seq: a.nextSeq, first: dir, client: -1}
		a.nextSeq++
		a.dgrams[k] = d
	}
	d.packets++
	d.bytes += length
	d.payload += len(p.Payload)
	d.last = a.now
	if a.grep != nil && len(p.Payload) > 0 {
		n := bytes.Count(p.Payload, a.grep)
		if n > 0 && a.cfg.OnEvent != nil && d.hits == 0 {
			ev := a.dgramEvent(d, dir, EventGrep)
			ev.Snippet = snippetAt(p.Payload, bytes.Index(p.Payload, a.grep), len(a.grep))
			a.cfg.OnEvent(ev)
		}
		d.hits += n
		a.report.GrepHits += n
	}
	if len(p.Payload) == 0 {
		return
	}
	before := d.clear + d.cipher
	switch {
	case p.Proto == 17 && isDNSPort(p.SrcPort, p.DstPort):
		if q, query, ok := parseDNS(p.Payload); ok {
			d.clear = "DNS"
			if d.detail == "" || query {
				d.detail = q
			}
			if query {
				d.client = dir
			} else if d.client < 0 {
				d.client = 1 - dir
			}
		}
	case p.Proto == 17 && isQUICLong(p.Payload):
		d.cipher = "QUIC"
	case p.Proto == 17 && isDTLS(p.Payload):
		d.cipher = "DTLS"
	}
	switch {
	case d.clear == "" && isICMP(p.Proto):
		d.clear = "ICMP" // control messages, never encrypted
	case d.clear == "" && isText(p.Payload):
		d.clear = "text"
	}
	if a.cfg.OnEvent != nil && before == "" && d.clear+d.cipher != "" {
		a.cfg.OnEvent(a.dgramEvent(d, dir, EventProtocol))
	}
}

func isICMP(proto uint8) bool { return proto == 1 || proto == 58 }

func isDNSPort(a, b uint16) bool {
	for _, p := range []uint16{a, b} {
		if p == 53 || p == 5353 || p == 5355 || p == 15053 {
			return true
		}
	}
	return false
}

// parseDNS reads a DNS message's first question: "A backend.default.svc.cluster.local."
func parseDNS(b []byte) (question string, query, ok bool) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return "", false, false
	}
	q, err := p.Question()
	if err != nil {
		return "", false, false
	}
	t := strings.TrimPrefix(q.Type.String(), "Type")
	if h.Response {
		return fmt.Sprintf("response %s %s %s", t, q.Name.String(), strings.TrimPrefix(h.RCode.String(), "RCode")), false, true
	}
	return fmt.Sprintf("query %s %s", t, q.Name.String()), true, true
}

// isQUICLong recognises a QUIC long header (RFC 9000 §17.2) of a known
// version: encrypted from the first packet on.
func isQUICLong(b []byte) bool {
	if len(b) < 7 || b[0]&0xc0 != 0xc0 {
		return false
	}
	v := binary.BigEndian.Uint32(b[1:5])
	return v == 1 || v == 0x6b3343cf || v>>8 == 0xff0000
}

// isDTLS recognises a DTLS 1.0/1.2/1.3 record header.
func isDTLS(b []byte) bool {
	return len(b) >= 13 && b[0] >= recChangeCipherSpec && b[0] <= recApplicationData && b[1] == 0xfe && (b[2] == 0xff || b[2] == 0xfd || b[2] == 0xfc)
}

func transportName(proto uint8) string {
	switch proto {
	case 17:
		return "udp"
	case 1, 58:
		return "icmp"
	}
	return "ip"
}

// ends orients the flow: the DNS client, else the first sender unless it
// used a well-known port and the other side did not.
func (d *dgram) ends() (client, server netip.AddrPort) {
	k := d.key
	e := [2]netip.AddrPort{netip.AddrPortFrom(k.a, k.pa), netip.AddrPortFrom(k.b, k.pb)}
	c := d.first
	if d.client >= 0 {
		c = d.client
	} else if e[c].Port() < 1024 && e[c].Port() != 0 && e[1-c].Port() >= 1024 {
		c = 1 - c
	}
	return e[c], e[1-c]
}

func (d *dgram) evidence() flowEvidence {
	c, s := d.ends()
	e := flowEvidence{Transport: transportName(d.proto), Client: c, Server: s, Cleartext: d.clear, Cipher: d.cipher,
		GrepHits: d.hits, Data: d.payload > 0}
	return e
}

func (d *dgram) summary() FlowSummary {
	c, s := d.ends()
	ports := d.proto == 17
	fs := FlowSummary{Src: endpoint(c.Addr(), c.Port(), ports), Dst: endpoint(s.Addr(), s.Port(), ports),
		Transport: transportName(d.proto), Packets: d.packets, Bytes: d.bytes, GrepHits: d.hits, ALPN: []string{},
		Request: d.detail, seq: d.seq}
	switch {
	case d.proto == 1:
		fs.Protocol = "ICMP"
	case d.proto == 58:
		fs.Protocol = "ICMPv6"
	case d.clear != "":
		fs.Protocol = d.clear
	case d.cipher != "":
		fs.Protocol = d.cipher
	case d.payload == 0:
		fs.Protocol = "-"
	case d.proto == 17:
		fs.Protocol = "unrecognised"
	default:
		fs.Protocol = fmt.Sprintf("IP protocol %d", d.proto)
	}
	return fs
}

// expireDatagrams summarises datagram flows idle for dgramIdle.
func (a *Analyzer) expireDatagrams() {
	if len(a.dgrams) > 0 {
		a.closeDatagrams(a.now.Add(-dgramIdle))
	}
}

// closeDatagrams summarises the datagram flows last seen before cutoff (all
// of them for a zero cutoff), in the order they started.
func (a *Analyzer) closeDatagrams(cutoff time.Time) {
	var done []*dgram
	for _, d := range a.dgrams {
		if cutoff.IsZero() || d.last.Before(cutoff) {
			done = append(done, d)
		}
	}
	slices.SortFunc(done, func(x, y *dgram) int { return x.seq - y.seq })
	for _, d := range done {
		delete(a.dgrams, d.key)
		fs := d.summary()
		a.conclude(d.evidence(), &fs)
	}
}

func (a *Analyzer) dgramEvent(d *dgram, dir int, kind EventKind) Event {
	k := d.key
	src, dst := netip.AddrPortFrom(k.a, k.pa), netip.AddrPortFrom(k.b, k.pb)
	if dir == 1 {
		src, dst = dst, src
	}
	e := d.evidence()
	r := ruleFor(&e)
	fs := d.summary()
	return Event{Time: a.now, Kind: kind, Src: src, Dst: dst, Protocol: fs.Protocol, Detail: d.detail, Verdict: r.Verdict}
}

// snippetAt shows the bytes around a hit at i of length n, printable only.
func snippetAt(b []byte, i, n int) string {
	lo, hi := max(0, i-snippetContext), min(len(b), i+n+snippetContext)
	return printable(b[lo:hi])
}
