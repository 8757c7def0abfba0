package cmd

import (
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// NodeAccess is how sniff and verify reach the nodes they capture on: SSH
// settings, or a capture pod. Both commands take the same flags, with the
// same meaning and defaults.
type NodeAccess struct {
	Via          string
	NodeAddress  string
	SSHUser      string
	SSHPort      int
	SSHKeys      []string
	KnownHosts   []string
	SSHJump      string
	SSHConfig    string
	InsecureSkip bool
	Image        string
}

func newNodeAccess() NodeAccess {
	return NodeAccess{Via: sniff.ViaAuto, Image: sniff.DefaultImage}
}

// AddFlags registers the node-access flags.
func (n *NodeAccess) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&n.Via, "via", n.Via, "How to reach the nodes: ssh, pod (creates a capture pod on each node) or auto (SSH when flags or ssh_config give settings; never a pod)")
	f.StringVar(&n.NodeAddress, "node-address", "", "SSH to this address instead of the node's InternalIP (one node only)")
	f.StringVar(&n.SSHUser, "ssh-user", "", "SSH user (default: from ssh_config, else $USER); unless root, only tcpdump runs, as sudo -n tcpdump")
	f.IntVar(&n.SSHPort, "ssh-port", 0, "SSH port (default: from ~/.ssh/config, else 22)")
	f.StringArrayVar(&n.SSHKeys, "ssh-key", nil, "Private key file to offer first (repeatable); then ssh_config's IdentityFile, then ssh-agent's keys unless IdentitiesOnly")
	f.StringArrayVar(&n.KnownHosts, "ssh-known-hosts", nil, "known_hosts file to check host keys against (default: UserKnownHostsFile, else ~/.ssh/known_hosts); /etc/ssh/ssh_known_hosts is checked too")
	f.StringVar(&n.SSHJump, "ssh-jump", "", "Reach the nodes through this bastion: [user@]host[:port]")
	f.StringVar(&n.SSHConfig, "ssh-config", "", "ssh_config file to read instead of ~/.ssh/config and /etc/ssh/ssh_config (Include, IdentitiesOnly and Match host are honoured)")
	f.BoolVar(&n.InsecureSkip, "insecure-skip-host-key-check", false, "Do not check the nodes' SSH host keys (anyone on the path can impersonate a node)")
	f.StringVar(&n.Image, "image", n.Image, "Image with tcpdump for --via pod")
}

// Transport is the sniff engine's view of the flags.
func (n *NodeAccess) Transport(kube kubernetes.Interface, rc func() (*rest.Config, error), namespace string) sniff.TransportConfig {
	return sniff.TransportConfig{
		Via: n.Via,
		SSH: sniff.SSHSettings{Address: n.NodeAddress, User: n.SSHUser, Port: n.SSHPort, KeyFiles: n.SSHKeys,
			KnownHosts: n.KnownHosts, Jump: n.SSHJump, ConfigFile: n.SSHConfig, InsecureSkipHostKeyCheck: n.InsecureSkip},
		Env: sniff.DefaultSSHEnv(), Kube: kube, REST: rc, Namespace: namespace, Image: n.Image,
	}
}
