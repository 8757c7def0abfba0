package sniff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CaptureConfig is one live capture.
type CaptureConfig struct {
	Spec     CaptureSpec
	Analysis Config
	// Raw, when set, receives the pcap stream as captured (-w).
	Raw io.Writer
	// Notes receives progress messages (stderr).
	Notes io.Writer
	// StopGrace is how long the remote end gets to flush after being asked
	// to stop before the connection is dropped.
	StopGrace time.Duration
	// StartTimeout bounds the wait for tcpdump to start capturing (its pcap
	// header) when --duration is set; the duration counts from then.
	StartTimeout time.Duration
}

// Capture runs tcpdump through r and analyses its output until --count,
// --duration, ctx (Ctrl-C) or the end of the stream. Everything is
// validated before a command runs. The report is returned even when the
// capture ended badly (lost connection), together with the error.
func Capture(ctx context.Context, r Runner, cfg CaptureConfig) (*Report, error) {
	notes := cfg.Notes
	if notes == nil {
		notes = io.Discard
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	ips, err := ParsePodIPs(cfg.Spec.PodIPs)
	if err != nil {
		return nil, err
	}
	iface := cfg.Spec.Interface
	if iface != "" {
		if err := ValidateInterface(iface); err != nil {
			return nil, err
		}
	}
	// Validate everything once with a placeholder interface before running
	// even the read-only discovery.
	if _, err := TcpdumpArgs(cfg.Spec, "any"); err != nil {
		return nil, err
	}
	if iface == "" {
		iface = discoverInterface(ctx, r, ips[0])
		if iface == "any" {
			fmt.Fprintf(notes, "could not find the host-side interface of %s on %s; capturing on any (packets between pods on this node show twice)\n", ips[0], r.Describe())
		}
	}
	argv, err := TcpdumpArgs(cfg.Spec, iface)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(notes, "capturing on %s interface %s: %s\n", r.Describe(), iface, argv[len(argv)-1])
	s, err := r.Stream(ctx, argv)
	if err != nil {
		return nil, err
	}
	defer s.Close()

	var stopOnce sync.Once
	stopped := make(chan struct{})
	stop := func() {
		stopOnce.Do(func() {
			s.Stop()
			close(stopped)
		})
	}
	readDone := make(chan struct{})
	// --duration counts from the moment tcpdump captures, which is when it
	// writes the pcap header: SSH, sudo and opening the interface can take
	// seconds on a loaded node, and counting them would shorten the capture
	// (or leave it empty).
	started := make(chan struct{})
	var startTimedOut atomic.Bool
	go func() {
		if cfg.Spec.Duration > 0 {
			startWait := time.NewTimer(cfg.StartTimeout)
			defer startWait.Stop()
			select {
			case <-ctx.Done():
				stop()
				return
			case <-readDone:
				return
			case <-startWait.C:
				startTimedOut.Store(true)
				stop()
				s.Close()
				return
			case <-started:
			}
		}
		var timer <-chan time.Time
		if cfg.Spec.Duration > 0 {
			t := time.NewTimer(cfg.Spec.Duration)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-timer:
		case <-readDone:
			return
		}
		stop()
		// The remote end flushes and exits; if it does not, drop it.
		select {
		case <-readDone:
		case <-time.After(cfg.StopGrace):
			s.Close()
		}
	}()

	var in io.Reader = &firstRead{r: s, started: started}
	if cfg.Raw != nil {
		in = io.TeeReader(in, cfg.Raw)
	}
	an := NewAnalyzer(cfg.Analysis)
	readErr := an.ReadFrom(context.Background(), in)
	close(readDone)
	stop()
	if errors.Is(readErr, ErrPacketLimit) {
		readErr = nil
	}
	waitErr := waitTimeout(s, cfg.StopGrace)
	rep := an.Finish()
	if startTimedOut.Load() {
		return rep, fmt.Errorf("tcpdump on %s did not start capturing within %s; check the node's load and that tcpdump runs there (sudo -n tcpdump --version)", r.Describe(), cfg.StartTimeout)
	}
	var lost *ConnectionLostError
	switch {
	case errors.As(waitErr, &lost):
		rep.Incomplete = true
		return rep, waitErr
	case waitErr != nil:
		var exit *RemoteExitError
		if errors.As(waitErr, &exit) && exit.Status == 124 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the capture reached its %s backstop on the node", MaxCapture))
			return rep, readErr
		}
		// A capture we stopped after its header arrived is complete even
		// when tcpdump, killed by the stop, exits non-zero with no packets.
		if !isClosed(stopped) || !isClosed(started) {
			if rep.Packets == 0 || readErr != nil {
				return rep, waitErr
			}
		}
		// Interrupted captures may exit non-zero after a complete stream.
		fmt.Fprintf(notes, "note: %v\n", waitErr)
	}
	if readErr != nil {
		var stopErr bool
		select {
		case <-stopped:
			stopErr = true
		default:
		}
		if !stopErr {
			return rep, fmt.Errorf("reading the capture from %s: %w", r.Describe(), readErr)
		}
		rep.Incomplete = true
	}
	return rep, nil
}

// firstRead closes started when the first bytes of the capture arrive.
type firstRead struct {
	r       io.Reader
	started chan struct{}
	once    sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 {
		f.once.Do(func() { close(f.started) })
	}
	return n, err
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func waitTimeout(s Stream, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		s.Close()
		select {
		case err := <-done:
			return err
		case <-time.After(d):
			return fmt.Errorf("the capture command did not exit")
		}
	}
}

// discoverInterface asks the node which interface leads to the pod.
func discoverInterface(ctx context.Context, r Runner, ip netip.Addr) string {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := r.Output(dctx, DiscoverArgs(ip))
	if err != nil {
		return "any"
	}
	if iface := ParseDiscovery(string(out)); iface != "" {
		return iface
	}
	return "any"
}

// FormatHosts renders pod IPs for messages.
func FormatHosts(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
