package inject

import (
	"fmt"
	"io"
	"sync"
)

// Progress shows one status line per workload while restarts run.
type Progress interface {
	Update(key, line string)
}

// Terminal is the size of the terminal progress is drawn on.
type Terminal struct{ Width, Height int }

// NewProgress returns a progress display on w: on a terminal (term not
// nil) one line per key, rewritten in place; otherwise a plain line
// whenever a key's status changes, so logs stay readable.
func NewProgress(w io.Writer, term *Terminal) Progress {
	if term != nil && term.Width > 1 && term.Height > 1 {
		return &ttyProgress{w: w, index: map[string]int{}, width: term.Width, height: term.Height}
	}
	return &lineProgress{w: w, last: map[string]string{}}
}

type lineProgress struct {
	mu   sync.Mutex
	w    io.Writer
	last map[string]string
}

func (p *lineProgress) Update(key, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last[key] == line {
		return
	}
	p.last[key] = line
	fmt.Fprintf(p.w, "%s: %s\n", key, line)
}

type ttyProgress struct {
	mu            sync.Mutex
	w             io.Writer
	keys          []string
	lines         []string
	index         map[string]int
	width, height int
}

func (p *ttyProgress) Update(key, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.index[key]
	if !ok {
		p.index[key] = len(p.keys)
		p.keys = append(p.keys, key)
		p.lines = append(p.lines, line)
		fmt.Fprintf(p.w, "%s\n", p.fit(key+": "+line))
		return
	}
	if p.lines[i] == line {
		return
	}
	p.lines[i] = line
	up := len(p.keys) - i
	if up >= p.height {
		// The line has scrolled off the screen and cannot be reached;
		// the summary table reports the outcome.
		return
	}
	// Move up to the key's line, rewrite it, and move back down.
	fmt.Fprintf(p.w, "\x1b[%dA\r\x1b[2K%s\x1b[%dB\r", up, p.fit(key+": "+line), up)
}

// fit cuts s to one screen row: a wrapped line would take two rows and
// throw off the cursor arithmetic for every line above it.
func (p *ttyProgress) fit(s string) string {
	r := []rune(s)
	if len(r) < p.width {
		return s
	}
	return string(r[:p.width-2]) + "…"
}
