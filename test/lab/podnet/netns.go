package podnet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// network is the LAN with its nodes.
type network struct {
	lan   *netlab.LAN
	nodes []*node
}

// node is one node namespace: netlab's node (bridge, uplink on the LAN,
// sshd) plus the routes of the plan.
type node struct {
	net  NodeNet
	lab  *netlab.Lab
	sshd *netlab.SSHD
}

// setupNetwork builds the LAN and every node of the plan, routed to each
// other, with one sshd per node that takes the same client key.
func setupNetwork(ctx context.Context, cfg Config, plan []NodeNet) (_ *network, err error) {
	lan, err := netlab.SetupLAN(LANNS, UplinkLink, netip.MustParsePrefix(lanSubnet))
	if err != nil {
		return nil, fmt.Errorf("creating the nodes' LAN: %w", err)
	}
	nw := &network{lan: lan}
	defer func() {
		if err != nil {
			nw.teardown()
		}
	}()
	clientKey := ""
	for _, nn := range plan {
		n, err := setupNode(ctx, nn, plan, lan, clientKey)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", nn.Name, err)
		}
		nw.nodes = append(nw.nodes, n)
		clientKey = n.sshd.ClientKey
	}
	// The host reaches every node's pods through that node.
	for _, r := range HostRoutes(plan) {
		if err := ip("route", "replace", r.Dst.String(), "via", r.Via.String(), "dev", UplinkLink); err != nil {
			return nil, err
		}
	}
	if err := writeSSHFiles(cfg, nw.nodes); err != nil {
		return nil, err
	}
	return nw, nil
}

func setupNode(ctx context.Context, nn NodeNet, plan []NodeNet, lan *netlab.LAN, clientKey string) (*node, error) {
	l, err := netlab.Setup(netlab.Config{Prefix: Prefix, Node: nn.NS, PodSubnet: nn.BridgeSubnet, LAN: lan, NodeIP: nn.IP})
	if err != nil {
		return nil, fmt.Errorf("creating the node namespace: %w", err)
	}
	n := &node{net: nn, lab: l}
	if l.NodeIP != nn.IP || l.HostIP.String() != HostIP || l.BridgeIP != nn.BridgeIP || l.Node != nn.NS {
		n.teardown()
		return nil, fmt.Errorf("netlab laid the node out as %s/%s/%s in %s, want %s/%s/%s in %s", l.HostIP, l.NodeIP, l.BridgeIP, l.Node, HostIP, nn.IP, nn.BridgeIP, nn.NS)
	}
	// Pods hold addresses of the whole pod subnet (as KWOK hands them
	// out), so the node routes it to its bridge and forwards between the
	// uplink and the pods; other nodes' pods are reached via those nodes
	// on the LAN.
	steps := [][]string{
		{"-n", nn.NS, "link", "set", l.Bridge, "address", nn.BridgeMAC},
		{"-n", nn.NS, "route", "replace", nn.PodCIDR.String(), "dev", l.Bridge},
		// istio-cni's probe address, the source of the kubelet's probes of
		// ambient pods (probes.go); pods answer it through their gateway.
		{"-n", nn.NS, "addr", "replace", AmbientProbeSource.String() + "/32", "dev", l.Bridge},
		{"netns", "exec", nn.NS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	}
	for _, r := range nn.Routes(plan) {
		steps = append(steps, []string{"-n", nn.NS, "route", "replace", r.Dst.String(), "via", r.Via.String(), "dev", "uplink"})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			n.teardown()
			return nil, err
		}
	}
	if n.sshd, err = l.StartSSHDFor(ctx, clientKey); err != nil {
		n.teardown()
		return nil, fmt.Errorf("starting sshd in the node: %w", err)
	}
	if err := AddCaptureUser(n.sshd.PID, n.sshd.Dir); err != nil {
		n.teardown()
		return nil, err
	}
	return n, nil
}

// writeSSHFiles copies the client key next to known_hosts entries for the
// nodes' names and addresses and an ssh_config that uses both, so sniff
// (or ssh -F) reaches every node without touching the user's ~/.ssh.
func writeSSHFiles(cfg Config, nodes []*node) error {
	dir := filepath.Dir(SSHConfigFile(cfg.Dir))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := os.ReadFile(nodes[0].sshd.ClientKey)
	if err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	known := filepath.Join(dir, "known_hosts")
	var lines, conf strings.Builder
	for _, n := range nodes {
		lines.WriteString(knownhosts.Line([]string{n.net.Name, n.net.IP.String()}, n.sshd.HostKey) + "\n")
		fmt.Fprintf(&conf, `# The lab's node %[1]s (network namespace %[2]s), written by podnet.
Host %[1]s %[3]s
  HostName %[3]s
  User %[4]s
  IdentityFile %[5]s
  UserKnownHostsFile %[6]s
  IdentitiesOnly yes
`, n.net.Name, n.net.NS, n.net.IP, n.sshd.User, keyFile, known)
	}
	if err := os.WriteFile(known, []byte(lines.String()), 0o600); err != nil {
		return err
	}
	return os.WriteFile(SSHConfigFile(cfg.Dir), []byte(conf.String()), 0o600)
}

func (n *node) teardown() { n.lab.Teardown() }

// AmbientProbeSource is istio-cni's HOST_PROBE_SNAT_ADDRESS: on a real
// node it rewrites the source of the kubelet's probes of ambient pods to
// it, so ztunnel in the pod lets them through to the app.
var AmbientProbeSource = netip.MustParseAddr("169.254.7.127")

// dial connects from the node namespace with the node's InternalIP as
// source, where a kubelet's probes and Prometheus' scrapes come from.
func (n *node) dial(ctx context.Context, addr string) (net.Conn, error) {
	return dialFrom(n.net.NS, n.net.IP)(ctx, addr)
}

func (nw *network) teardown() {
	for _, n := range nw.nodes {
		n.teardown()
	}
	nw.lan.Teardown()
}

// podNet is one pod's namespace.
type podNet struct {
	// node is the node whose pod subnet holds IP.
	node NodeNet
	NS   string
	IP   netip.Addr
	Veth string // the node's end of the pod's veth
	MAC  string
}

func podNetFor(namespace, name, uid string, addr netip.Addr) podNet {
	h := fnv.New32a()
	h.Write([]byte(uid))
	a := addr.As4()
	n, _ := NodeFor(addr)
	return podNet{
		node: n,
		NS:   fmt.Sprintf("%s-%s.%s", Prefix, namespace, name),
		IP:   addr,
		Veth: fmt.Sprintf("%s%08x", Prefix, h.Sum32()),
		// Derived from the IP: a pod that gets a reused IP gets the same MAC,
		// so no stale neighbour entry can point elsewhere.
		MAC: fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3]),
	}
}

// add creates the namespace on a veth into the node's bridge. The node gets
// a permanent neighbour entry and a static bridge FDB entry for the pod, as
// CNI plugins set up, so a capture on the node finds the pod's veth.
func (p podNet) add() error {
	if p.node.NS == "" {
		return fmt.Errorf("pod IP %s is in no node's pod subnet (node1 has %s)", p.IP, PodCIDR)
	}
	nodeNS, prefix := p.node.NS, p.node.PodCIDR
	steps := [][]string{
		{"netns", "add", p.NS},
		{"-n", p.NS, "link", "set", "lo", "up"},
		{"-n", nodeNS, "link", "add", p.Veth, "type", "veth", "peer", "name", "eth0", "address", p.MAC, "netns", p.NS},
		{"-n", nodeNS, "link", "set", p.Veth, "master", "br0"},
		{"-n", nodeNS, "link", "set", p.Veth, "up"},
		{"-n", p.NS, "addr", "add", fmt.Sprintf("%s/%d", p.IP, prefix.Bits()), "dev", "eth0"},
		{"-n", p.NS, "link", "set", "eth0", "up"},
		{"-n", p.NS, "route", "add", "default", "via", p.node.BridgeIP.String()},
		{"-n", nodeNS, "neigh", "replace", p.IP.String(), "lladdr", p.MAC, "dev", "br0", "nud", "permanent"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			p.remove()
			return err
		}
	}
	if out, err := exec.Command("bridge", "-n", nodeNS, "fdb", "replace", p.MAC, "dev", p.Veth, "master", "static").CombinedOutput(); err != nil {
		p.remove()
		return fmt.Errorf("bridge fdb replace %s dev %s: %v: %s", p.MAC, p.Veth, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// remove deletes the node's end of the veth first: sockets still open in
// the pod namespace would otherwise keep the pair alive after `netns del`.
func (p podNet) remove() {
	if p.node.NS != "" {
		_ = exec.Command("ip", "-n", p.node.NS, "link", "del", p.Veth).Run()
		_ = exec.Command("ip", "-n", p.node.NS, "neigh", "del", p.IP.String(), "dev", "br0").Run()
	}
	_ = exec.Command("ip", "netns", "del", p.NS).Run()
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Cleanup removes every namespace and link named with Prefix and stops the
// processes in those namespaces (sshd and its sessions), by PID. It is what
// `lab down` runs, so nothing survives a podnet that was killed.
func Cleanup() error {
	if os.Geteuid() != 0 {
		return nil // nothing can have been created
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix+"-") {
			names = append(names, e.Name())
		}
	}
	stopProcesses(names, 5*time.Second)
	var errs []error
	for _, ns := range names {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	if err := exec.Command("ip", "link", "show", UplinkLink).Run(); err == nil {
		if out, err := exec.Command("ip", "link", "del", UplinkLink).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", UplinkLink, err, strings.TrimSpace(string(out))))
		}
	}
	// netlab keeps sshd's keys in a temporary directory.
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "netlab-"+Prefix+"-*"))
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
	return errors.Join(errs...)
}

// stopProcesses sends SIGTERM, then after grace SIGKILL, to every process
// whose network namespace is one of names.
func stopProcesses(names []string, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for _, ns := range names {
		for {
			out, err := exec.Command("ip", "netns", "pids", ns).Output()
			pids := strings.Fields(string(out))
			if err != nil || len(pids) == 0 {
				break
			}
			sig := syscall.SIGTERM
			if time.Now().After(deadline) {
				sig = syscall.SIGKILL
			}
			for _, s := range pids {
				if pid, err := strconv.Atoi(s); err == nil && pid != os.Getpid() {
					_ = syscall.Kill(pid, sig)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// AttachPod gives a pod that podnet does not follow (one in a test's own
// namespace on a lab node) a network namespace on the node whose pod
// subnet holds addr, wired as podnet wires the workshop's pods, and
// returns it for netlab's backends and clients (with netlab.Attach of the
// node's namespace, NodeNS for node1). remove deletes it; Cleanup does
// too, as its names carry Prefix.
func AttachPod(namespace, name, uid string, addr netip.Addr) (p *netlab.Pod, remove func(), err error) {
	if _, ok := NodeFor(addr); !ok {
		return nil, nil, fmt.Errorf("pod IP %s is in no lab node's pod subnet (node1 has %s)", addr, PodCIDR)
	}
	pn := podNetFor(namespace, name, uid, addr)
	if err := pn.add(); err != nil {
		return nil, nil, err
	}
	return &netlab.Pod{Name: name, NS: pn.NS, IP: addr, HostVeth: pn.Veth}, pn.remove, nil
}
