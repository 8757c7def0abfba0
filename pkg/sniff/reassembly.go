package sniff

import "sort"

// segment delivers TCP payload in sequence order, holding out-of-order data
// up to the caps and skipping holes past them.
func (a *Analyzer) segment(f *flow, dir int, seq uint32, data []byte, missing int) {
	h := &f.dirs[dir]
	if !h.started {
		// Caught mid-connection: start at the first data seen.
		h.started, h.next = true, seq
	}
	diff := int32(seq - h.next)
	switch {
	case diff <= 0:
		trim, total := int(-diff), len(data)+missing
		if trim >= total {
			return // retransmission of delivered data
		}
		if trim < len(data) {
			a.deliver(f, dir, data[trim:])
		}
		h.next = seq + uint32(total)
		if missing > 0 {
			a.hole(f, dir)
		}
	default:
		// Ahead of what we have: keep a copy until the gap fills.
		n := len(data)
		if h.pendBuf+n > a.cfg.MaxPendingBytes || a.buffered+n > budgetBytes || missing > 0 {
			a.skipHole(f, dir)
			if int32(seq-h.next) > 0 {
				h.next = seq
				a.hole(f, dir)
			}
			a.segment(f, dir, seq, data, missing)
			return
		}
		cp := append([]byte(nil), data...)
		i := sort.Search(len(h.pending), func(i int) bool { return int32(h.pending[i].seq-seq) > 0 })
		h.pending = append(h.pending, pendingSeg{})
		copy(h.pending[i+1:], h.pending[i:])
		h.pending[i] = pendingSeg{seq: seq, data: cp}
		h.pendBuf += n
		a.buffered += n
		return
	}
	a.drainPending(f, dir)
}

// drainPending delivers held segments that have become in-order.
func (a *Analyzer) drainPending(f *flow, dir int) {
	h := &f.dirs[dir]
	for len(h.pending) > 0 && int32(h.pending[0].seq-h.next) <= 0 {
		s := h.pending[0]
		h.pending = h.pending[1:]
		h.pendBuf -= len(s.data)
		a.buffered -= len(s.data)
		trim := int(h.next - s.seq)
		if trim < len(s.data) {
			a.deliver(f, dir, s.data[trim:])
			h.next = s.seq + uint32(len(s.data))
		}
	}
	if len(h.pending) == 0 {
		h.pending = nil
	}
}

// skipHole gives up waiting for the missing data before the held segments.
func (a *Analyzer) skipHole(f *flow, dir int) {
	h := &f.dirs[dir]
	for len(h.pending) > 0 {
		if int32(h.pending[0].seq-h.next) > 0 {
			h.next = h.pending[0].seq
			a.hole(f, dir)
		}
		a.drainPending(f, dir)
	}
}

func (a *Analyzer) hole(f *flow, dir int) {
	h := &f.dirs[dir]
	h.holes++
	if h.grep != nil {
		h.grep.reset()
	}
	if h.kind == kindPending {
		// The protocol must be recognised from contiguous bytes.
		a.decide(f, dir, true)
	}
	// Record framing cannot be followed across a hole.
	h.walker.Broken = true
}

// deliver hands in-order payload of one direction to the protocol
// recogniser, the record walker and the matcher.
func (a *Analyzer) deliver(f *flow, dir int, b []byte) {
	h := &f.dirs[dir]
	h.payload += len(b)
	if h.kind == kindNone {
		h.kind = kindPending
	}
	if !h.walker.Broken {
		h.walker.feed(b)
	}
	if h.kind == kindPending {
		room := a.cfg.ClassifyBytes - len(h.buf)
		n := min(room, len(b))
		if a.buffered+n > budgetBytes {
			n = 0
		}
		h.buf = append(h.buf, b[:n]...)
		a.buffered += n
		a.decide(f, dir, n < len(b))
	}
	if a.grep != nil {
		if h.grep == nil {
			h.grep = newMatcher(a.grep)
			if a.cfg.OnEvent != nil {
				h.grep.emit = func(s string) {
					ev := a.event(f, dir, EventGrep)
					ev.Snippet = s
					a.cfg.OnEvent(ev)
				}
			}
		}
		n := h.grep.feed(b)
		h.hits += n
		a.report.GrepHits += n
	}
}
