package podnet

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// The capture user logs in over SSH and may run tcpdump under sudo -n, and
// nothing else; the host's own /etc is untouched.
func TestAddCaptureUser(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (network namespaces): CI runs as root, so this must run there")
		}
		t.Skip("needs root (network namespaces)")
	}
	l, err := netlab.Setup(netlab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Teardown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := l.StartSSHD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := AddCaptureUser(s.PID, filepath.Dir(s.ClientKey)); err != nil {
		t.Fatal(err)
	}
	ssh := func(cmd string) (string, error) {
		out, err := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", s.ClientKey, "-o", "UserKnownHostsFile="+s.KnownHosts,
			"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", CaptureUser+"@"+l.NodeIP.String(), cmd).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	tests := []struct {
		cmd     string
		ok      bool
		contain string
	}{
		{cmd: "id -un", ok: true, contain: CaptureUser},
		{cmd: "sudo -n tcpdump --version", ok: true, contain: "tcpdump version"},
		{cmd: "sudo -n sh -c id", contain: "a password is required"},
		{cmd: "sudo -n id", contain: "a password is required"},
	}
	for _, tt := range tests {
		out, err := ssh(tt.cmd)
		if (err == nil) != tt.ok || !strings.Contains(out, tt.contain) {
			t.Errorf("%s: %v: %s; want ok=%v and %q", tt.cmd, err, out, tt.ok, tt.contain)
		}
	}
	if t.Failed() {
		t.Log(l.Log("sshd"))
	}
	if b, _ := os.ReadFile("/etc/passwd"); strings.Contains(string(b), CaptureUser+":") {
		t.Errorf("the host's /etc/passwd has %s", CaptureUser)
	}
}
