package netlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
)

// LAN is one Ethernet segment shared by the host and several nodes, as
// machines on one switch: a bridge in a namespace of its own, which the
// host joins through a veth and every node set up with Config.LAN through
// its uplink. Nodes then reach each other directly on the segment, so a
// node routes another node's pod subnet via that node's address, as
// host-gateway CNIs (flannel host-gw, Calico without encapsulation) do,
// and the host only ever sees traffic addressed to it: it forwards nothing.
type LAN struct {
	// NS is the namespace that holds the switch (a bridge named br0).
	NS string
	// Subnet is the segment's; HostIP the host's address on it (the
	// subnet's first).
	Subnet netip.Prefix
	HostIP netip.Addr
	// HostLink is the host's interface on the segment.
	HostLink string
}

// SetupLAN creates the switch namespace ns and the host's link into it.
func SetupLAN(ns, hostLink string, subnet netip.Prefix) (*LAN, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab needs root (network namespaces and veths)")
	}
	if !subnet.Addr().Is4() || subnet.Bits() > 29 {
		return nil, fmt.Errorf("LAN subnet %s must be IPv4 with room for the host and nodes (/29 or larger)", subnet)
	}
	subnet = subnet.Masked()
	l := &LAN{NS: ns, Subnet: subnet, HostIP: subnet.Addr().Next(), HostLink: hostLink}
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "link", "set", "br0", "up"},
		{"link", "add", hostLink, "type", "veth", "peer", "name", "host", "netns", ns},
		{"-n", ns, "link", "set", "host", "master", "br0"},
		{"-n", ns, "link", "set", "host", "up"},
		{"addr", "add", fmt.Sprintf("%s/%d", l.HostIP, subnet.Bits()), "dev", hostLink},
		{"link", "set", hostLink, "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			l.Teardown()
			return nil, err
		}
	}
	return l, nil
}

// join plugs a node namespace into the switch: its end "uplink" gets addr,
// the switch's end is named after the node.
func (l *LAN) join(node string, addr netip.Addr) error {
	if !l.Subnet.Contains(addr) || addr == l.HostIP || addr == l.Subnet.Addr() {
		return fmt.Errorf("node address %s is not a free host address of the LAN %s (the host has %s)", addr, l.Subnet, l.HostIP)
	}
	steps := [][]string{
		{"-n", l.NS, "link", "add", node, "type", "veth", "peer", "name", "uplink", "netns", node},
		{"-n", l.NS, "link", "set", node, "master", "br0"},
		{"-n", l.NS, "link", "set", node, "up"},
		{"-n", node, "addr", "add", fmt.Sprintf("%s/%d", addr, l.Subnet.Bits()), "dev", "uplink"},
		{"-n", node, "link", "set", "uplink", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// Teardown removes the host's link and the switch (and with it the
// switch's ends of the nodes' uplinks). It is safe to call twice.
func (l *LAN) Teardown() {
	_ = exec.Command("ip", "link", "del", l.HostLink).Run()
	_ = exec.Command("ip", "netns", "del", l.NS).Run()
}
