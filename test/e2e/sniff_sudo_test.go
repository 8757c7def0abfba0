package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// A node whose SSH login is not root and whose sudoers allows tcpdump
// alone (NOPASSWD: /usr/bin/tcpdump): sniff captures through `sudo -n
// tcpdump`, stops it at --duration and when the connection drops, and
// leaves nothing running. `sudo -n sh -c …`, which the wrapper used to
// need, is refused on this node.
func TestSniffSudoTcpdumpOnly(t *testing.T) {
	w := newSniffWorld(t)
	if err := podnet.AddCaptureUser(w.sshd.PID, filepath.Dir(w.sshd.ClientKey)); err != nil {
		t.Fatal(err)
	}
	// The rule really is for tcpdump alone.
	out, err := exec.Command("ssh", "-F", "/dev/null", "-i", w.sshd.ClientKey, "-o", "UserKnownHostsFile="+w.sshd.KnownHosts,
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", podnet.CaptureUser+"@"+w.net.NodeIP.String(), "sudo -n sh -c id").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a password is required") {
		t.Fatalf("sudo -n sh -c id as %s: %v: %s; want it refused", podnet.CaptureUser, err, out)
	}
	w.traffic(t, netlab.Plaintext)
	args := func(extra ...string) []string {
		a := w.sshArgs(extra...)
		for i := range a {
			if a[i] == "--ssh-user" {
				a[i+1] = podnet.CaptureUser
			}
		}
		return a
	}

	res := w.env.Mesh(t, args("--duration", "3s", "--grep", "TGN", "--expect", "plaintext")...)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %v\nstdout:\n%s\nstderr:\n%s\nsshd:\n%s", res.ExitCode, res.Err, res.Stdout, res.Stderr, w.net.Log("sshd"))
	}
	line := regexp.MustCompile(`(?m)^10\.\S+:\d+ → 10\.\S+:80  HTTP/1\.1 POST /greetings  PLAINTEXT$`)
	if !strings.Contains(res.Stdout, "Verdict: PLAINTEXT\n") || !line.MatchString(res.Stdout) {
		t.Errorf("want a PLAINTEXT verdict and a line matching %s; got:\n%s", line, res.Stdout)
	}
	if hits := regexp.MustCompile(`Grep "TGN": (\d+) hits?`).FindStringSubmatch(res.Stdout); hits == nil || hits[1] == "0" {
		t.Errorf("grep hits %v, want some:\n%s", hits, res.Stdout)
	}
	// The discovery runs unprivileged and still finds the pod's veth.
	if !strings.Contains(res.Stderr, "interface veth2: host "+w.backend.IP.String()) {
		t.Errorf("did not capture on the backend's veth:\n%s", res.Stderr)
	}
	if log := w.net.Log("sshd"); !strings.Contains(log, "Accepted publickey for "+podnet.CaptureUser+" ") {
		t.Errorf("no login as %s:\n%s", podnet.CaptureUser, log)
	}
	w.noCaptureLeft(t)

	// A dropped connection stops the root tcpdump too: sudo relays the
	// wrapper's TERM.
	done := make(chan labtest.Result, 1)
	go func() { done <- w.env.Mesh(t, args("--duration", "60s")...) }()
	deadline := time.Now().Add(15 * time.Second)
	for !hasComm(w.tcpdumps(t), "tcpdump") {
		if time.Now().After(deadline) {
			t.Fatal("the capture never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	pids, err := w.net.NodePIDs()
	if err != nil {
		t.Fatal(err)
	}
	for pid, comm := range pids {
		if strings.HasPrefix(comm, "sshd") && pid != w.sshd.PID {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("sniff did not notice the dropped connection")
	}
	if res.ExitCode != 1 || res.Err == nil || !strings.Contains(res.Err.Error(), "was lost during the capture") {
		t.Errorf("exit %d, err %v; want 1 and a lost connection", res.ExitCode, res.Err)
	}
	w.noCaptureLeft(t)
}

func hasComm(procs []string, comm string) bool {
	for _, p := range procs {
		if strings.HasSuffix(p, " "+comm) {
			return true
		}
	}
	return false
}

// --via auto (the default) never creates a capture pod: without SSH
// settings it stops and says what --via pod would create; once ssh_config
// knows the node, the same command captures over SSH.
func TestSniffAutoNeverCreatesPod(t *testing.T) {
	w := newSniffWorld(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	res := w.env.Mesh(t, "sniff", "backend-app", "-n", w.ns, "--duration", "2s")
	want := "error: no SSH settings for node " + w.node + ": no --ssh-* flag is given and ssh_config (~/.ssh/config, /etc/ssh/ssh_config) has no Host entry for node " + w.node + " or its address " + w.net.NodeIP.String() + "."
	if res.ExitCode != 1 || res.Err == nil || !strings.HasPrefix(res.Err.Error(), want) ||
		!strings.Contains(res.Err.Error(), "Or pass --via pod: it creates a pod on node "+w.node+" in namespace "+w.ns+" with hostNetwork, capabilities NET_RAW and NET_ADMIN and image docker.io/nicolaka/netshoot:v0.13,") {
		t.Fatalf("exit %d, err %v; want 1 and %q…", res.ExitCode, res.Err, want)
	}
	if res.Stdout != "" || strings.Contains(res.Stderr, "starting a capture pod") {
		t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
	noCapturePod(t, w.env, w.ns)
	if strings.Contains(w.net.Log("sshd"), "Accepted publickey") {
		t.Errorf("logged in to the node:\n%s", w.net.Log("sshd"))
	}

	// ~/.ssh/config names the node: SSH, with nothing on the command line.
	conf := "Host " + w.node + "\n  User root\n  IdentityFile " + w.sshd.ClientKey + "\n  IdentitiesOnly yes\n  UserKnownHostsFile " + w.sshd.KnownHosts + "\n"
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	w.traffic(t, netlab.Plaintext)
	res = w.env.Mesh(t, "sniff", "backend-app", "-n", w.ns, "--duration", "2s", "--expect", "plaintext")
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %v\nstderr:\n%s", res.ExitCode, res.Err, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "capturing on "+w.node+" ("+w.sshd.Addr+") interface ") {
		t.Errorf("did not capture over SSH:\n%s", res.Stderr)
	}
	noCapturePod(t, w.env, w.ns)
	w.noCaptureLeft(t)
}
