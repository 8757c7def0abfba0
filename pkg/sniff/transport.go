package sniff

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Ways to reach a node (--via).
const (
	ViaAuto = "auto"
	ViaSSH  = "ssh"
	ViaPod  = "pod"
)

// SSHSettings are the SSH choices made explicitly (flags); zero values
// are "not given" and are filled from ssh_config, then from defaults.
type SSHSettings struct {
	// Address replaces the node's address (--node-address).
	Address    string
	User       string
	Port       int
	KeyFiles   []string
	KnownHosts []string
	// Jump is a bastion, [user@]host[:port].
	Jump string
	// ConfigFile replaces ~/.ssh/config and /etc/ssh/ssh_config.
	ConfigFile               string
	InsecureSkipHostKeyCheck bool
}

// Given reports whether any SSH setting was made: then SSH it is.
func (s SSHSettings) Given() bool {
	return s.Address != "" || s.User != "" || s.Port != 0 || len(s.KeyFiles) > 0 || len(s.KnownHosts) > 0 ||
		s.Jump != "" || s.ConfigFile != "" || s.InsecureSkipHostKeyCheck
}

// SSHEnv is what the local machine contributes: the home directory, the
// local user, ssh-agent and the system-wide ssh files.
type SSHEnv struct {
	Home             string
	LocalUser        string
	AgentSocket      string
	SystemConfig     string
	GlobalKnownHosts []string
}

// DefaultSSHEnv reads $HOME, $USER, $SSH_AUTH_SOCK and uses /etc/ssh.
func DefaultSSHEnv() SSHEnv {
	home, _ := os.UserHomeDir()
	name := os.Getenv("USER")
	if u, err := user.Current(); name == "" && err == nil {
		name = u.Username
	}
	return SSHEnv{Home: home, LocalUser: name, AgentSocket: os.Getenv("SSH_AUTH_SOCK"),
		SystemConfig: "/etc/ssh/ssh_config", GlobalKnownHosts: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}}
}

// TransportConfig says how to reach the node of the pod to capture.
type TransportConfig struct {
	Via  string
	SSH  SSHSettings
	Env  SSHEnv
	Kube kubernetes.Interface
	// REST is asked for only when a capture pod is made (--via pod).
	REST func() (*rest.Config, error)
	// Namespace and Image are the capture pod's.
	Namespace string
	Image     string
	Notes     io.Writer
}

// OpenRunner connects to node: over SSH when SSH settings are given or
// ssh_config knows the node (or its address), through a capture pod only
// with --via pod. --via auto never creates a pod: it says what --via pod
// would create and how to set up SSH instead.
func OpenRunner(ctx context.Context, cfg TransportConfig, node string) (Runner, error) {
	if cfg.Image == "" {
		cfg.Image = DefaultImage
	}
	switch cfg.Via {
	case ViaPod:
		rc, err := cfg.REST()
		if err != nil {
			return nil, err
		}
		if cfg.Notes != nil {
			fmt.Fprintf(cfg.Notes, "starting a capture pod on node %s (image %s)\n", node, cfg.Image)
		}
		return StartPodRunner(ctx, PodRunnerConfig{Kube: cfg.Kube, REST: rc, Namespace: cfg.Namespace, Node: node, Image: cfg.Image})
	case ViaSSH, ViaAuto, "":
	default:
		return nil, fmt.Errorf("--via must be auto, ssh or pod, got %q", cfg.Via)
	}
	sc, err := ResolveSSH(ctx, cfg, node)
	if err != nil {
		return nil, err
	}
	return DialSSH(ctx, sc)
}

// ResolveSSH decides address, user, keys and known_hosts for node: flags
// first, then ssh_config for the node's name (or, when no block names it,
// its address), then the Node object and defaults.
func ResolveSSH(ctx context.Context, cfg TransportConfig, node string) (SSHConfig, error) {
	s, env := cfg.SSH, cfg.Env
	auto := cfg.Via == ViaAuto || cfg.Via == ""
	var files *SSHConfigFiles
	var err error
	if s.ConfigFile != "" {
		files, err = LoadSSHConfig(env.Home, env.LocalUser, []string{s.ConfigFile})
	} else {
		opt := []string{filepath.Join(env.Home, ".ssh", "config")}
		if env.SystemConfig != "" {
			opt = append(opt, env.SystemConfig)
		}
		files, err = LoadSSHConfig(env.Home, env.LocalUser, nil, opt...)
	}
	if err != nil {
		return SSHConfig{}, err
	}
	hc, err := files.Host(node)
	if err != nil {
		return SSHConfig{}, err
	}
	c := SSHConfig{Name: node, Host: s.Address, Port: s.Port, User: s.User, InsecureSkipHostKeyCheck: s.InsecureSkipHostKeyCheck}
	if c.Host == "" {
		c.Host = hc.HostName
	}
	if c.Host == "" {
		addr, err := NodeAddress(ctx, cfg.Kube, node)
		if err != nil {
			if auto && !s.Given() && !hc.Matched {
				return c, noSSHError(cfg, node, "")
			}
			return c, err
		}
		c.Host = addr
		if !hc.Matched {
			// ssh_config may know the address rather than the name.
			byAddr, err := files.Host(addr)
			if err != nil {
				return c, err
			}
			if byAddr.Matched {
				hc = byAddr
			}
		}
	}
	if auto && !s.Given() && !hc.Matched {
		return c, noSSHError(cfg, node, c.Host)
	}
	if c.Port == 0 {
		c.Port = hc.Port
	}
	if c.User == "" {
		c.User = hc.User
	}
	if c.User == "" {
		c.User = env.LocalUser
	}
	c.KeyFiles = append([]string(nil), s.KeyFiles...)
	for _, k := range hc.IdentityFiles {
		if _, err := os.Stat(k); err == nil && !contains(c.KeyFiles, k) {
			c.KeyFiles = append(c.KeyFiles, k)
		}
	}
	if len(c.KeyFiles) == 0 {
		c.FallbackKeyFiles = DefaultKeyFiles(env.Home)
	}
	c.IdentitiesOnly = hc.IdentitiesOnly
	c.AgentSocket = env.AgentSocket
	c.KnownHosts = s.KnownHosts
	if len(c.KnownHosts) == 0 {
		c.KnownHosts = hc.KnownHostsFile
	}
	if len(c.KnownHosts) == 0 {
		c.KnownHosts = []string{filepath.Join(env.Home, ".ssh", "known_hosts"), filepath.Join(env.Home, ".ssh", "known_hosts2")}
	}
	c.GlobalKnownHosts = hc.GlobalKnownHostsFile
	if c.GlobalKnownHosts == nil {
		c.GlobalKnownHosts = env.GlobalKnownHosts
	}
	jump := s.Jump
	if jump == "" {
		jump = hc.ProxyJump
	}
	if jump != "" {
		if strings.Contains(jump, ",") {
			return c, fmt.Errorf("jump host %q has several hops: sniff goes through one; give the last with --ssh-jump", jump)
		}
		u, h, p := ParseUserHostPort(jump)
		jc := c
		jc.Name, jc.Host, jc.Port, jc.User, jc.Jump, jc.Sudo = h, h, p, u, nil, nil
		jh, err := files.Host(h)
		if err != nil {
			return c, err
		}
		if jh.HostName != "" {
			jc.Host = jh.HostName
		}
		if jc.User == "" {
			jc.User = jh.User
		}
		if jc.Port == 0 {
			jc.Port = jh.Port
		}
		if jc.User == "" {
			jc.User = c.User
		}
		c.Jump = &jc
	}
	return c, nil
}

// noSSHError is --via auto without any SSH settings for the node.
func noSSHError(cfg TransportConfig, node, addr string) error {
	where := "ssh_config (~/.ssh/config, /etc/ssh/ssh_config)"
	if cfg.SSH.ConfigFile != "" {
		where = "--ssh-config " + cfg.SSH.ConfigFile
	}
	about := "node " + node
	if addr != "" {
		about += " or its address " + addr
	}
	return fmt.Errorf(`no SSH settings for node %[1]s: no --ssh-* flag is given and %[2]s has no Host entry for %[3]s.
Set up SSH: pass --ssh-user (with --ssh-key, --node-address or --ssh-jump as needed), or add "Host %[1]s" with User and IdentityFile to ~/.ssh/config; the user must be root or may run "sudo -n tcpdump".
Or pass --via pod: it creates a pod on node %[1]s in namespace %[4]s with hostNetwork, capabilities NET_RAW and NET_ADMIN and image %[5]s, runs tcpdump in it and deletes it afterwards`,
		node, where, about, cfg.Namespace, cfg.Image)
}

// NodeAddress is the address to SSH to: the node's InternalIP, else its
// ExternalIP, else its Hostname.
func NodeAddress(ctx context.Context, kube kubernetes.Interface, name string) (string, error) {
	if kube == nil {
		return "", fmt.Errorf("no address for node %s: pass --node-address", name)
	}
	n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting node %s for its address: %w (or pass --node-address)", name, err)
	}
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP, corev1.NodeHostName} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && a.Address != "" {
				return a.Address, nil
			}
		}
	}
	return "", fmt.Errorf("node %s has no InternalIP or ExternalIP: pass --node-address", name)
}
