package sniff

import (
	"context"
	"encoding/binary"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowStream is tcpdump on a loaded node: the pcap header comes only after
// headerDelay (SSH, sudo, opening the interface), then one packet every
// gap until stopped; stopping kills tcpdump, which exits 143.
type slowStream struct {
	pr   *io.PipeReader
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func newSlowStream(pcap []byte, headerDelay, gap time.Duration, header bool) *slowStream {
	pr, pw := io.Pipe()
	s := &slowStream{pr: pr, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer pw.Close()
		select {
		case <-time.After(headerDelay):
		case <-s.stop:
			return
		}
		if !header {
			<-s.stop
			return
		}
		pw.Write(pcap[:24])
		for off := 24; off+16 <= len(pcap); {
			n := int(binary.LittleEndian.Uint32(pcap[off+8:]))
			select {
			case <-time.After(gap):
			case <-s.stop:
				return
			}
			pw.Write(pcap[off : off+16+n])
			off += 16 + n
		}
		<-s.stop
	}()
	return s
}

func (s *slowStream) Read(p []byte) (int, error) { return s.pr.Read(p) }
func (s *slowStream) Stop()                      { s.once.Do(func() { close(s.stop) }) }
func (s *slowStream) Wait() error {
	<-s.done
	return &RemoteExitError{Status: 143, Stderr: "Terminated"}
}
func (s *slowStream) Close() error { s.Stop(); return s.pr.Close() }

type slowRunner struct{ stream *slowStream }

func (r *slowRunner) Output(context.Context, []string) ([]byte, error) { return nil, nil }
func (r *slowRunner) Stream(context.Context, []string) (Stream, error) { return r.stream, nil }
func (r *slowRunner) Describe() string                                 { return "node1 (10.0.0.4:22)" }
func (r *slowRunner) Close() error                                     { return nil }

// --duration counts from the moment tcpdump captures, not from the SSH
// command's start: a node slower to start than the duration still gives a
// capture of that length, and the stop's exit 143 is not an error.
func TestCaptureDurationCountsFromHeader(t *testing.T) {
	frames := plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames
	pcap := pcapBytes(t, LinkTypeEthernet, frames)
	r := &slowRunner{stream: newSlowStream(pcap, 400*time.Millisecond, 10*time.Millisecond, true)}
	rep, err := Capture(context.Background(), r, CaptureConfig{
		Spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "eth0", Duration: 300 * time.Millisecond}, StopGrace: time.Second})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	// All of them arrive within 300ms of the header; counting from the
	// command's start would have stopped before the header and seen none.
	if rep.Packets != len(frames) {
		t.Errorf("captured %d packets in the 300ms after the header, want all %d", rep.Packets, len(frames))
	}
}

func TestCaptureStartTimeout(t *testing.T) {
	r := &slowRunner{stream: newSlowStream(nil, 0, 0, false)}
	_, err := Capture(context.Background(), r, CaptureConfig{
		Spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "eth0", Duration: 100 * time.Millisecond}, StartTimeout: 200 * time.Millisecond, StopGrace: time.Second})
	want := "tcpdump on node1 (10.0.0.4:22) did not start capturing within 200ms; check the node's load and that tcpdump runs there (sudo -n tcpdump --version)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v, want %q", err, want)
	}
}
