package netlab

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestLabCarriesTrafficAndCleansUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Setup(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Teardown()
	fe, err := l.AddPod("frontend")
	if err != nil {
		t.Fatal(err)
	}
	be, err := l.AddPod("backend")
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{Plaintext, IstioMTLS, HTTPS} {
		b, err := l.StartBackend(ctx, be, mode)
		if err != nil {
			t.Fatal(err)
		}
		body, err := l.NewClient(fe, b).Do(ctx)
		if err != nil || body != Greeting {
			t.Fatalf("mode %d: %q, %v", mode, body, err)
		}
		b.srv.Close()
	}
	s, err := l.StartSSHD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "ssh", "-i", s.ClientKey, "-o", "UserKnownHostsFile="+s.KnownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "root@"+l.NodeIP.String(), "ip -o addr show dev br0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), l.BridgeIP.String()) {
		t.Fatalf("ssh into the node: %v: %s\n%s", err, out, l.Log("sshd"))
	}
	l.Teardown()
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), l.Prefix) {
		t.Errorf("namespaces left: %s", out)
	}
	if err := exec.Command("ip", "link", "show", l.uplink).Run(); err == nil {
		t.Errorf("uplink %s left", l.uplink)
	}
}
