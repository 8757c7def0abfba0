package sniff

import (
	"net/netip"
	"sort"
	"time"
)

// IP fragment reassembly. A datagram larger than the path MTU (a big UDP
// message, DNS over UDP with EDNS, a tunnel) crosses the wire as fragments;
// only the first holds the ports, and a marker may straddle two of them. So
// fragments are held until the datagram is whole and then analysed like any
// other packet. Memory is bounded: datagrams, fragments per datagram and
// bytes overall are capped, and a datagram not completed in time is
// given up and counted (it still counts in the verdict, as unreadable).

// Reassembly limits.
const (
	maxDatagramBytes   = 65535 + 40 // an IPv4 total length, or an IPv6 payload with a header
	maxFragsPerDgram   = 64
	maxPendingDgrams   = 1024
	maxFragBufferBytes = 16 << 20
	fragTimeout        = 30 * time.Second // what Linux uses (ipfrag_time)
)

type fragKey struct {
	src, dst netip.Addr
	id       uint32
	proto    uint8
}

type fragPiece struct {
	off  int
	data []byte
}

type fragDgram struct {
	first  time.Time
	pieces []fragPiece
	size   int // bytes held
	total  int // length of the whole payload, once the last fragment is seen (-1 before)
}

type defragmenter struct {
	pending map[fragKey]*fragDgram
	held    int
	// Counters for the report.
	reassembled int
	dropped     int // fragments given up (time-out, caps, snap length)
	buf         []byte
	// lost holds datagrams given up since the caller last took them: their
	// bytes are still searched and they still count in the verdict.
	lost []lostDgram
}

// lostDgram is a datagram that could not be reassembled.
type lostDgram struct {
	key    fragKey
	pieces [][]byte
}

func newDefragmenter() *defragmenter {
	return &defragmenter{pending: map[fragKey]*fragDgram{}}
}

// add keeps the fragment in p and returns the whole payload when this
// fragment completed its datagram (valid until the next call), else nil.
func (d *defragmenter) add(ts time.Time, p *tcpPacket) []byte {
	d.expire(ts)
	k := fragKey{src: p.Src, dst: p.Dst, id: p.FragID, proto: p.Proto}
	g := d.pending[k]
	if g == nil {
		if len(d.pending) >= maxPendingDgrams {
			d.lose(k, nil, p.Payload)
			return nil
		}
		g = &fragDgram{first: ts, total: -1}
		d.pending[k] = g
	}
	end := p.FragOff + len(p.Payload) + p.Missing
	if end > maxDatagramBytes || len(g.pieces) >= maxFragsPerDgram || d.held+len(p.Payload) > maxFragBufferBytes || p.Missing > 0 {
		// Over a cap, or cut by the snap length: it cannot be completed.
		d.lose(k, g, p.Payload)
		return nil
	}
	if !p.MoreFrags {
		g.total = end
	}
	g.pieces = append(g.pieces, fragPiece{off: p.FragOff, data: append([]byte(nil), p.Payload...)})
	g.size += len(p.Payload)
	d.held += len(p.Payload)
	if g.total < 0 {
		return nil
	}
	sort.Slice(g.pieces, func(i, j int) bool { return g.pieces[i].off < g.pieces[j].off })
	have := 0
	for _, pc := range g.pieces {
		if pc.off > have {
			return nil // a hole: wait for it
		}
		have = max(have, pc.off+len(pc.data))
	}
	if have < g.total {
		return nil
	}
	// Whole: join in offset order (later copies of overlapping bytes win, as
	// in most stacks; overlaps are rare and suspicious either way).
	d.buf = append(d.buf[:0], make([]byte, g.total)...)
	for _, pc := range g.pieces {
		copy(d.buf[pc.off:], pc.data)
	}
	d.give(k, g)
	d.reassembled++
	return d.buf[:g.total]
}

func (d *defragmenter) give(k fragKey, g *fragDgram) {
	d.held -= g.size
	delete(d.pending, k)
}

// lose gives up a datagram (g may be nil) and the fragment in hand.
func (d *defragmenter) lose(k fragKey, g *fragDgram, extra []byte) {
	l := lostDgram{key: k}
	if g != nil {
		for _, pc := range g.pieces {
			l.pieces = append(l.pieces, pc.data)
		}
		d.give(k, g)
	}
	if len(extra) > 0 {
		l.pieces = append(l.pieces, append([]byte(nil), extra...))
	}
	d.dropped += len(l.pieces)
	d.lost = append(d.lost, l)
}

// expire drops datagrams older than fragTimeout in capture time.
func (d *defragmenter) expire(now time.Time) {
	if len(d.pending) == 0 {
		return
	}
	for k, g := range d.pending {
		if now.Sub(g.first) > fragTimeout {
			d.lose(k, g, nil)
		}
	}
}

// flush gives up every datagram still waiting (the capture ended).
func (d *defragmenter) flush() {
	for k, g := range d.pending {
		d.lose(k, g, nil)
	}
}
