package sniff

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	utilexec "k8s.io/client-go/util/exec"
)

// The end of a real exec stream: an exit status from the API server keeps
// its code (124 is Capture's backstop), a refused exec is not a command's
// exit.
func TestExecError(t *testing.T) {
	if err := execError(nil, "", "node n1"); err != nil {
		t.Fatalf("clean end: %v", err)
	}
	var exit *RemoteExitError
	err := execError(utilexec.CodeExitError{Err: errors.New("command terminated with non-zero exit code: 124"), Code: 124}, "", "node n1")
	if !errors.As(err, &exit) || exit.Status != 124 {
		t.Errorf("exit 124: %#v, want a RemoteExitError with status 124", err)
	}
	err = execError(utilexec.CodeExitError{Err: errors.New("command terminated with non-zero exit code: 1"), Code: 1}, "tcpdump: eth9: No such device exists\n", "node n1")
	if !errors.As(err, &exit) || exit.Status != 1 || !strings.Contains(err.Error(), "No such device") {
		t.Errorf("exit 1: %v", err)
	}
	refused := errors.New(`pods "mesh-sniff-x" is forbidden: User "u" cannot create resource "pods/exec"`)
	err = execError(refused, "", "node n1 (pod ns/mesh-sniff-x)")
	if errors.As(err, &exit) || !errors.Is(err, refused) || err.Error() != "exec in node n1 (pod ns/mesh-sniff-x): "+refused.Error() {
		t.Errorf("refused exec: %v", err)
	}
}

// Stop signals the PID the wrapper printed; without one, or when that exec
// fails, it cuts the stream instead.
func TestPodStreamStop(t *testing.T) {
	newStream := func(stderr string, killErr error) (*podStream, chan string, chan struct{}) {
		killed, cut := make(chan string, 1), make(chan struct{})
		s := &podStream{done: make(chan struct{}), cancel: func() { close(cut) },
			kill: func(_ context.Context, pid string) error { killed <- pid; return killErr }}
		_, _ = s.stderr.Write([]byte(stderr))
		return s, killed, cut
	}

	s, killed, cut := newStream("sniff-pid 4242\ntcpdump: listening on eth0\n", nil)
	if pid, rest := s.pid(); pid != "4242" || rest != "tcpdump: listening on eth0\n" {
		t.Errorf("pid() = %q, %q", pid, rest)
	}
	s.Stop()
	s.Stop() // once
	if pid := <-killed; pid != "4242" {
		t.Errorf("killed %q", pid)
	}
	select {
	case <-cut:
		t.Error("stream cut although the kill worked")
	case <-time.After(100 * time.Millisecond):
	}

	s, _, cut = newStream("", nil)
	s.Stop()
	<-cut // no PID yet: cut at once

	s, killed, cut = newStream("sniff-pid 7\n", errors.New("exec refused"))
	s.Stop()
	<-killed
	<-cut
}
