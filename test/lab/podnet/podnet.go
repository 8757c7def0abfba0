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
	"os"
	"path/filepath"
	"time"
)

// Names and addresses of everything podnet creates.
const (
	// Prefix starts the name of every namespace and link podnet creates.
	Prefix = "kml"
	// NodeNS is the node's network namespace; UplinkLink the host's end of
	// the veth into it.
	NodeNS     = Prefix + "-node"
	UplinkLink = Prefix + "-up"
	// HostIP is the host's end of the uplink; NodeIP the node's, which is
	// the Node object's InternalIP.
	HostIP = "10.243.0.1"
	NodeIP = "10.243.0.2"
	// PodCIDR is where KWOK allocates pod IPs (kwok --cidr).
	PodCIDR = "10.244.0.0/16"

	uplinkSubnet = "10.243.0.0/30"
	// The bridge's own address sits at the top of the pod CIDR, far from
	// the addresses KWOK hands out first.
	bridgeSubnet = "10.244.255.0/24"
	bridgeIP     = "10.244.255.1"
	bridgeMAC    = "02:42:0a:f4:ff:01"
)

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
	// Node is the KWOK node whose pods get a network.
	Node string
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

// Run builds the node, follows the pods until ctx ends, then removes
// everything it created.
func Run(ctx context.Context, cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("podnet needs root to create network namespaces and veths")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(ReadyFile(cfg.Dir))
	// A previous podnet killed with SIGKILL leaves its namespaces behind.
	if err := Cleanup(); err != nil {
		return err
	}
	n, err := setupNode(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.teardown()
	cfg.logf("node %s: %s (uplink from %s), pods on %s, sshd on %s:22", cfg.Node, NodeIP, HostIP, PodCIDR, NodeIP)

	d, err := newDaemon(cfg, n)
	if err != nil {
		return err
	}
	return d.run(ctx)
}
