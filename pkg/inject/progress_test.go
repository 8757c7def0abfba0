package inject

import (
	"bytes"
	"testing"
)

func TestTTYProgress(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress(&out, &Terminal{Width: 20, Height: 3})
	p.Update("ns/a", "queued")
	p.Update("ns/b", "queued")
	p.Update("ns/a", "queued")     // unchanged: nothing drawn
	p.Update("ns/a", "restarting") // two rows up
	p.Update("ns/c", "waiting: a long status line")
	p.Update("ns/b", "done") // two rows up, cut to the width
	p.Update("ns/a", "done") // scrolled off a 3-row screen: not drawn
	want := "ns/a: queued\n" +
		"ns/b: queued\n" +
		"\x1b[2A\r\x1b[2Kns/a: restarting\x1b[2B\r" +
		"ns/c: waiting: a l…\n" +
		"\x1b[2A\r\x1b[2Kns/b: done\x1b[2B\r"
	if got := out.String(); got != want {
		t.Errorf("drawn:\n%q\nwant\n%q", got, want)
	}
}

func TestLineProgress(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress(&out, nil)
	p.Update("ns/a", "queued")
	p.Update("ns/a", "queued")
	p.Update("ns/a", "restarted")
	if got, want := out.String(), "ns/a: queued\nns/a: restarted\n"; got != want {
		t.Errorf("written %q, want %q", got, want)
	}
}
