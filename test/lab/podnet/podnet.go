// Package podnet gives the lab's KWOK pods of the workshop app a real
// network and real traffic. KWOK pods are API objects without processes;
// podnet follows them with watches and, for every Running frontend-app,
// backend-app and ingress gateway pod on the lab's node, creates a network
// namespace holding the IP the API server reports, on a bridge inside a
// "node" namespace whose address is the Node's InternalIP. The node runs
// sshd and has tcpdump, so `kubectl mesh sniff` captures there like on a
// real node.
//
// In every pod namespace podnet runs the pod's part of the workshop: the
// backend answers {"greetings":"Hi TGN meetup"}, the frontend calls the
// backend Service in a loop. Pods with an injected istio-proxy get a
// stand-in for the proxy: a workload certificate from the lab's istiod CA,
// mTLS with Istio's ALPN and SNI towards other sidecars, PERMISSIVE inbound,
// routing by VirtualService/DestinationRule, pooled upstream connections,
// Envoy's admin config_dump reachable through KWOK's port-forward, and the
// cleartext status ports 15021, 15020 and 15090.
//
// Like a real node, the node namespace probes the pods from its address at
// the periods of their specs (the kubelet), scrapes their metrics ports
// (Prometheus), and answers DNS for the cluster zone on the kube-dns
// Service's ClusterIP, through which the frontend resolves the backend.
//
// Everything podnet creates is named with Prefix, so Cleanup can remove it
// even after the daemon was killed. It needs root.
package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Names and addresses of everything podnet creates. Node1's are constants
// because tests and the lab's Node object name them; the other nodes'
// come from Plan.
const (
	// Prefix starts the name of every namespace and link podnet creates.
	Prefix = "kml"
	// NodeNS is node1's network namespace; UplinkLink the host's link into
	// the LAN that the nodes' uplinks join (namespace LANNS).
	NodeNS     = Prefix + "-node"
	UplinkLink = Prefix + "-up"
	LANNS      = Prefix + "-lan"
	// HostIP is the host's address on the LAN; NodeIP node1's, which is
	// the Node object's InternalIP.
	HostIP = "10.243.0.1"
	NodeIP = "10.243.0.2"
	// PodCIDR is node1's pod subnet, where KWOK allocates its pod IPs
	// (kwok --cidr, as node1 has no spec.podCIDR).
	PodCIDR = "10.244.0.0/16"
	// MaxNodes is how many nodes the plan has room for.
	MaxNodes = 8

	lanSubnet = "10.243.0.0/24"
)

// NodeNet is one node's place in the network plan: node i (from 0) has
// the namespace kml-node (kml-node2, …), the address 10.243.0.(2+i) on the
// LAN and the pod subnet 10.(244+i).0.0/16, whose top /24 holds the bridge
// (KWOK hands addresses out from the bottom). Nodes route each other's
// pod subnets via each other's LAN address, the host routes them all.
type NodeNet struct {
	// Name is the Node object's name.
	Name string
	// NS is the node's network namespace.
	NS string
	// IP is the node's InternalIP, on the LAN.
	IP netip.Addr
	// PodCIDR is the node's spec.podCIDR (node1's is kwok --cidr).
	PodCIDR netip.Prefix
	// BridgeSubnet is the bridge's /24 at the top of PodCIDR; BridgeIP
	// (its first address) is the pods' gateway.
	BridgeSubnet netip.Prefix
	BridgeIP     netip.Addr
	// BridgeMAC is fixed: otherwise the bridge takes its lowest port's and
	// every change of it flushes the pods' neighbour entries.
	BridgeMAC string
}

// Route is one route of a node namespace: Dst via Via on the uplink.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// slot is the i-th node's network, without its name.
func slot(i int) NodeNet {
	ns := NodeNS
	if i > 0 {
		ns = fmt.Sprintf("%s%d", NodeNS, i+1)
	}
	b := byte(244 + i)
	return NodeNet{
		NS:           ns,
		IP:           netip.AddrFrom4([4]byte{10, 243, 0, byte(2 + i)}),
		PodCIDR:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, 0, 0}), 16),
		BridgeSubnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b, 255, 0}), 24),
		BridgeIP:     netip.AddrFrom4([4]byte{10, b, 255, 1}),
		BridgeMAC:    fmt.Sprintf("02:42:0a:%02x:ff:01", b),
	}
}

// Plan lays out the named nodes, in order: the first is node1 at NodeIP
// with PodCIDR.
func Plan(names ...string) ([]NodeNet, error) {
	if len(names) == 0 || len(names) > MaxNodes {
		return nil, fmt.Errorf("the pod network has room for 1 to %d nodes, not %d", MaxNodes, len(names))
	}
	seen := map[string]bool{}
	out := make([]NodeNet, len(names))
	for i, n := range names {
		if n == "" || seen[n] {
			return nil, fmt.Errorf("node names must be set and distinct: %q", names)
		}
		seen[n] = true
		out[i] = slot(i)
		out[i].Name = n
	}
	return out, nil
}

// NodeFor finds the node slot whose pod subnet holds addr (its Name is
// empty): where a pod with that IP lives.
func NodeFor(addr netip.Addr) (NodeNet, bool) {
	for i := 0; i < MaxNodes; i++ {
		if n := slot(i); n.PodCIDR.Contains(addr) {
			return n, true
		}
	}
	return NodeNet{}, false
}

// Routes lists the routes node n needs besides its own bridge: every other
// planned node's pod subnet via that node.
func (n NodeNet) Routes(plan []NodeNet) []Route {
	var out []Route
	for _, o := range plan {
		if o.NS != n.NS {
			out = append(out, Route{Dst: o.PodCIDR, Via: o.IP})
		}
	}
	return out
}

// HostRoutes lists the host's routes: every node's pod subnet via the node.
func HostRoutes(plan []NodeNet) []Route {
	out := make([]Route, len(plan))
	for i, n := range plan {
		out[i] = Route{Dst: n.PodCIDR, Via: n.IP}
	}
	return out
}

// Config says where podnet works and which pods it follows.
type Config struct {
	// Kubeconfig is an admin kubeconfig for the lab.
	Kubeconfig string
	// IstiodCA is the PEM file that verifies istiod's serving certificate
	// on its CA port (127.0.0.1:15012).
	IstiodCA string
	// Dir holds the SSH files, the pods' log files (read by KWOK for
	// `kubectl logs`) and the ready marker.
	Dir string
	// Node is the KWOK node whose pods get a network. Run takes Nodes:
	// each node of the plan runs a daemon of its own with Node set.
	Node  string
	Nodes []string
	// Interval is the frontend's pause between two calls to the backend.
	Interval time.Duration
	// Log receives progress lines.
	Log io.Writer
}

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, time.Now().Format("15:04:05.000")+" "+format+"\n", args...)
	}
}

// ReadyFile is created in Config.Dir once every pod that was Running when
// podnet started has its network and app.
func ReadyFile(dir string) string { return filepath.Join(dir, "ready") }

// SSHConfigFile is an ssh_config for the node (Host <node name> and its
// InternalIP): user, key and known_hosts, for `kubectl mesh sniff
// --ssh-config` and for ssh -F.
func SSHConfigFile(dir string) string { return filepath.Join(dir, "ssh", "config") }

// Run builds the LAN and the nodes, follows each node's pods until ctx
// ends, then removes everything it created.
func Run(ctx context.Context, cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("podnet needs root to create network namespaces and veths")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	names := cfg.Nodes
	if len(names) == 0 {
		names = []string{cfg.Node}
	}
	plan, err := Plan(names...)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(ReadyFile(cfg.Dir))
	// A previous podnet killed with SIGKILL leaves its namespaces behind.
	if err := Cleanup(); err != nil {
		return err
	}
	nw, err := setupNetwork(ctx, cfg, plan)
	if err != nil {
		return err
	}
	defer nw.teardown()
	for _, n := range plan {
		cfg.logf("node %s: %s in %s on the LAN with the host's %s, pods on %s (bridge %s), routes %v, sshd on %s:22",
			n.Name, n.IP, n.NS, HostIP, n.PodCIDR, n.BridgeIP, n.Routes(plan), n.IP)
	}

	// One daemon per node, as one kubelet and kube-proxy per node; the
	// ready marker is written once every node's pods have a network.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	pending := len(nw.nodes)
	errs := make(chan error, len(nw.nodes))
	for _, n := range nw.nodes {
		c := cfg
		c.Node, c.Nodes = n.net.Name, nil
		d, err := newDaemon(c, n)
		if err != nil {
			return err
		}
		d.onReady = func() {
			mu.Lock()
			defer mu.Unlock()
			if pending--; pending == 0 {
				if err := os.WriteFile(ReadyFile(cfg.Dir), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
					cfg.logf("writing the ready marker: %v", err)
				}
			}
		}
		go func() {
			err := d.run(ctx)
			if err != nil {
				err = fmt.Errorf("node %s: %w", c.Node, err)
				cancel(err)
			}
			errs <- err
		}()
	}
	var first error
	for range nw.nodes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
