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

// NewProgress returns a progress display on w: on a terminal one line per
// key, rewritten in place; otherwise a plain line whenever a key's status
// changes, so logs stay readable.
func NewProgress(w io.Writer, tty bool) Progress {
	if tty {
		return &ttyProgress{w: w, index: map[string]int{}}
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
	mu    sync.Mutex
	w     io.Writer
	keys  []string
	lines []string
	index map[string]int
}

func (p *ttyProgress) Update(key, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.index[key]
	if !ok {
		p.index[key] = len(p.keys)
		p.keys = append(p.keys, key)
		p.lines = append(p.lines, line)
		fmt.Fprintf(p.w, "%s: %s\n", key, line)
		return
	}
	if p.lines[i] == line {
		return
	}
	p.lines[i] = line
	// Move up to the key's line, rewrite it, and move back down.
	up := len(p.keys) - i
	fmt.Fprintf(p.w, "\x1b[%dA\r\x1b[2K%s: %s\x1b[%dB\r", up, key, line, up)
}
