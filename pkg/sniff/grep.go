package sniff

import (
	"bytes"
)

// matcher counts occurrences of a pattern in a byte stream delivered in
// chunks, including occurrences that straddle chunk (TCP segment)
// boundaries. It keeps only the last len(pattern)-1 bytes between chunks.
type matcher struct {
	pat  []byte
	tail []byte // last len(pat)-1 bytes seen, for matches across chunks
	// ctx keeps a little more history for display snippets.
	ctx  []byte
	snip *snippet
	// emit receives the snippet of the first hit (nil: no snippets).
	emit    func(string)
	snipped bool
}

// snippetContext is how many bytes around a hit a snippet shows.
const snippetContext = 24

func newMatcher(pat []byte) *matcher {
	return &matcher{pat: pat}
}

// feed counts the occurrences that end inside chunk. The first occurrence
// in the stream is also sent to emit (now, or in a later feed or flush once
// its trailing context is known).
func (m *matcher) feed(chunk []byte) int {
	if len(m.pat) == 0 || len(chunk) == 0 {
		return 0
	}
	if m.snip != nil && m.snip.extend(chunk) {
		m.flush()
	}
	n := 0
	first := -1 // offset of the first hit, relative to chunk (negative: starts in history)
	// Occurrences starting in the tail and ending in chunk.
	if len(m.tail) > 0 {
		k := min(len(m.pat)-1, len(chunk))
		var buf [2 * 64]byte
		var join []byte
		if len(m.tail)+k <= len(buf) {
			join = append(buf[:0], m.tail...)
		} else {
			join = append([]byte(nil), m.tail...)
		}
		join = append(join, chunk[:k]...)
		for i := 0; ; {
			j := bytes.Index(join[i:], m.pat)
			if j < 0 {
				break
			}
			if n == 0 {
				first = i + j - len(m.tail)
			}
			n++
			i += j + 1
		}
	}
	// Occurrences inside chunk; overlapping ones count too.
	for i := 0; ; {
		j := bytes.Index(chunk[i:], m.pat)
		if j < 0 {
			break
		}
		if n == 0 {
			first = i + j
		}
		n++
		i += j + 1
	}
	if n > 0 && m.emit != nil && !m.snipped {
		m.snipped = true
		m.startSnippet(chunk, first)
	}
	m.remember(chunk)
	return n
}

// reset forgets history: after a hole in the stream nothing joins across it.
func (m *matcher) reset() {
	m.flush()
	m.tail = m.tail[:0]
	m.ctx = m.ctx[:0]
}

func (m *matcher) remember(chunk []byte) {
	keep := len(m.pat) - 1
	m.tail = keepLast(m.tail, chunk, keep)
	if keep < snippetContext {
		keep = snippetContext
	}
	m.ctx = keepLast(m.ctx, chunk, keep)
}

// keepLast returns the last n bytes of old+chunk, reusing old's storage.
func keepLast(old, chunk []byte, n int) []byte {
	if n <= 0 {
		return old[:0]
	}
	if len(chunk) >= n {
		return append(old[:0], chunk[len(chunk)-n:]...)
	}
	if drop := len(old) + len(chunk) - n; drop > 0 {
		old = append(old[:0], old[drop:]...)
	}
	return append(old, chunk...)
}

// startSnippet collects the printable run around a hit at chunk offset at
// (negative when the hit starts in the previous chunk). The text after the
// hit may continue in later chunks, so the snippet is emitted once it ends.
func (m *matcher) startSnippet(chunk []byte, at int) {
	var before []byte
	if at < 0 {
		end := len(m.ctx) + at
		before = append(before, m.ctx[max(0, end-snippetContext):end]...)
	} else {
		if at < snippetContext {
			h := m.ctx[max(0, len(m.ctx)-(snippetContext-at)):]
			before = append(before, h...)
		}
		before = append(before, chunk[max(0, at-snippetContext):at]...)
	}
	lo := len(before)
	for lo > 0 && isPrint(before[lo-1]) {
		lo--
	}
	buf := append([]byte("…"), before[lo:]...)
	for _, c := range m.pat {
		if !isPrint(c) {
			c = '.'
		}
		buf = append(buf, c)
	}
	m.snip = &snippet{buf: buf, room: snippetContext}
	if m.snip.extend(chunk[at+len(m.pat):]) {
		m.flush()
	}
}

// snippet is a grep hit's display text still collecting trailing context.
type snippet struct {
	buf  []byte
	room int
}

// extend appends printable bytes; it reports whether the snippet is complete.
func (s *snippet) extend(b []byte) bool {
	for _, c := range b {
		if s.room == 0 || !isPrint(c) {
			return true
		}
		s.buf = append(s.buf, c)
		s.room--
	}
	return s.room == 0
}

// flush emits a pending snippet.
func (m *matcher) flush() {
	if m.snip != nil {
		m.emit(string(append(m.snip.buf, "…"...)))
		m.snip = nil
	}
}

func isPrint(c byte) bool { return c >= 0x20 && c < 0x7f }
