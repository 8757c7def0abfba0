package sniff

import (
	"errors"
	"strings"
	"testing"

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
