package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
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

// Two nodes on one LAN, each routing the other's pod subnet via the other's
// address: a pod on one node reaches a pod on the other, the packets cross
// both uplinks, and the host forwards nothing.
func TestLANRoutesPodsAcrossNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for network namespaces: CI runs as root, so this must run there")
		}
		t.Skip("needs root for network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lan, err := SetupLAN("nlt-lan", "nlt-up", netip.MustParsePrefix("10.215.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Teardown()
	var nodes []*Lab
	for i, sub := range []string{"10.216.1.0/24", "10.216.2.0/24"} {
		l, err := Setup(Config{Prefix: fmt.Sprintf("nlt%d", i+1), Node: fmt.Sprintf("nlt-node%d", i+1), PodSubnet: netip.MustParsePrefix(sub),
			LAN: lan, NodeIP: netip.MustParseAddr(fmt.Sprintf("10.215.0.%d", i+2))})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Teardown()
		nodes = append(nodes, l)
	}
	for i, l := range nodes {
		other := nodes[1-i]
		for _, s := range [][]string{
			{"netns", "exec", l.Node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
			{"-n", l.Node, "route", "add", other.subnet.String(), "via", other.NodeIP.String(), "dev", "uplink"},
		} {
			if err := ip(s...); err != nil {
				t.Fatal(err)
			}
		}
	}
	fe, err := nodes[0].AddPod("frontend")
	if err != nil {
		t.Fatal(err)
	}
	be, err := nodes[1].AddPod("backend")
	if err != nil {
		t.Fatal(err)
	}
	b, err := nodes[1].StartBackend(ctx, be, Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	body, err := nodes[0].NewClient(fe, b).Do(ctx)
	if err != nil || body != Greeting {
		t.Fatalf("frontend on %s to backend %s on %s: %q, %v", nodes[0].Node, be.IP, nodes[1].Node, body, err)
	}
	if nodes[1].HostIP != lan.HostIP || nodes[1].NodeIP.String() != "10.215.0.3" {
		t.Errorf("node2 at %s with host %s, want 10.215.0.3 with %s", nodes[1].NodeIP, nodes[1].HostIP, lan.HostIP)
	}
	// The host reaches a node on the LAN (what SSH needs): refused, as
	// nothing listens, rather than unreachable.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(nodes[1].NodeIP.String(), "22"), 2*time.Second); err == nil {
		c.Close()
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("reaching node2 from the host: %v", err)
	}
	for _, l := range nodes {
		l.Teardown()
	}
	lan.Teardown()
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "nlt") {
		t.Errorf("namespaces left: %s", out)
	}
	if err := exec.Command("ip", "link", "show", "nlt-up").Run(); err == nil {
		t.Errorf("host link nlt-up left")
	}
}
