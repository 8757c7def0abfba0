// Package netlab builds a small real network out of Linux network
// namespaces for tests: a "node" namespace with a bridge, reachable from the
// host over a veth, and "pod" namespaces on veths into that bridge. It can
// run sshd in the node (own mount namespace, own host key, authorized key and
// a known_hosts file written for the test), an HTTP backend in a pod
// (plaintext, Istio-style mTLS or plain HTTPS) and a client loop in another.
// Everything is torn down by Teardown: processes by PID, then namespaces and
// veths. It needs root.
package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config chooses names and addresses. Zero values pick unused random ones.
type Config struct {
	// Prefix names the namespaces and the host-side veth (at most 6 characters).
	Prefix string
	// PodSubnet is the pods' /24 on the node's bridge.
	PodSubnet netip.Prefix
	// UplinkSubnet is the host↔node /30 (without LAN).
	UplinkSubnet netip.Prefix
	// Node names the node namespace (default Prefix-node).
	Node string
	// LAN, when set, is the segment the node's uplink joins, with address
	// NodeIP, instead of a /30 veth of its own to the host.
	LAN    *LAN
	NodeIP netip.Addr
}

// Lab is a node namespace with its pods.
type Lab struct {
	Prefix string
	// Node is the node namespace's name (ip netns).
	Node string
	// NodeIP is the node's address, reachable from the host.
	NodeIP netip.Addr
	// HostIP is the host's end of the uplink.
	HostIP netip.Addr
	// Bridge is the bridge in the node namespace; BridgeIP its address.
	Bridge   string
	BridgeIP netip.Addr
	Pods     map[string]*Pod
	// Dir holds keys, configs and logs.
	Dir string

	subnet netip.Prefix
	uplink string
	// attached is set by Attach: the node belongs to someone else.
	attached bool
	mu       sync.Mutex
	procs    []*exec.Cmd
	stops    []func()
	nextPod  int
}

// Pod is a namespace on a veth into the node's bridge.
type Pod struct {
	Name string
	// NS is the namespace's name (ip netns).
	NS string
	IP netip.Addr
	// HostVeth is the pod's interface as the node sees it.
	HostVeth string
}

// Setup creates the node namespace, its bridge and the uplink from the host.
func Setup(cfg Config) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netlab needs root (network namespaces and veths)")
	}
	if cfg.Prefix == "" {
		b := make([]byte, 2)
		rand.Read(b)
		cfg.Prefix = "nl" + hex.EncodeToString(b)
	}
	if len(cfg.Prefix) > 6 {
		return nil, fmt.Errorf("prefix %q is longer than 6 characters", cfg.Prefix)
	}
	if !cfg.PodSubnet.IsValid() || (cfg.LAN == nil && !cfg.UplinkSubnet.IsValid()) {
		b := make([]byte, 1)
		rand.Read(b)
		cfg.PodSubnet = netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", b[0]))
		cfg.UplinkSubnet = netip.MustParsePrefix(fmt.Sprintf("10.214.%d.0/30", b[0]))
	}
	dir, err := os.MkdirTemp("", "netlab-"+cfg.Prefix+"-")
	if err != nil {
		return nil, err
	}
	l := &Lab{
		Prefix: cfg.Prefix, Node: cfg.Node, Bridge: "br0", Pods: map[string]*Pod{}, Dir: dir,
		subnet: cfg.PodSubnet,
	}
	if l.Node == "" {
		l.Node = cfg.Prefix + "-node"
	}
	l.BridgeIP = cfg.PodSubnet.Addr().Next()
	steps := [][]string{
		{"netns", "add", l.Node},
		{"-n", l.Node, "link", "set", "lo", "up"},
	}
	if cfg.LAN == nil {
		l.uplink = cfg.Prefix + "-up"
		up := cfg.UplinkSubnet.Addr()
		l.HostIP, l.NodeIP = up.Next(), up.Next().Next()
		steps = append(steps, [][]string{
			{"link", "add", l.uplink, "type", "veth", "peer", "name", "uplink", "netns", l.Node},
			{"addr", "add", l.HostIP.String() + "/30", "dev", l.uplink},
			{"link", "set", l.uplink, "up"},
			{"-n", l.Node, "addr", "add", l.NodeIP.String() + "/30", "dev", "uplink"},
			{"-n", l.Node, "link", "set", "uplink", "up"},
		}...)
	} else {
		l.HostIP, l.NodeIP = cfg.LAN.HostIP, cfg.NodeIP
	}
	steps = append(steps, [][]string{
		{"-n", l.Node, "link", "add", l.Bridge, "type", "bridge"},
		{"-n", l.Node, "addr", "add", l.BridgeIP.String() + "/24", "dev", l.Bridge},
		{"-n", l.Node, "link", "set", l.Bridge, "up"},
	}...)
	for i, s := range steps {
		if err := ip(s...); err != nil {
			l.Teardown()
			return nil, err
		}
		// The uplink joins the LAN once the namespace exists.
		if i == 1 && cfg.LAN != nil {
			if err := cfg.LAN.join(l.Node, cfg.NodeIP); err != nil {
				l.Teardown()
				return nil, err
			}
		}
	}
	return l, nil
}

// Attach returns a Lab over an existing node namespace that it does not
// own (the lab's podnet node), for backends and clients in pod namespaces
// made elsewhere. Teardown then stops only what was started through it:
// the node, its processes and its pods stay.
func Attach(node string) *Lab {
	return &Lab{Node: node, Pods: map[string]*Pod{}, attached: true}
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// AddPod creates a pod namespace with the next free address of the subnet.
func (l *Lab) AddPod(name string) (*Pod, error) {
	l.mu.Lock()
	l.nextPod++
	n := l.nextPod
	l.mu.Unlock()
	addr := l.BridgeIP
	for i := 0; i < n; i++ {
		addr = addr.Next()
	}
	p := &Pod{Name: name, NS: fmt.Sprintf("%s-p%d", l.Prefix, n), IP: addr, HostVeth: "veth" + strconv.Itoa(n)}
	steps := [][]string{
		{"netns", "add", p.NS},
		{"-n", p.NS, "link", "set", "lo", "up"},
		{"-n", l.Node, "link", "add", p.HostVeth, "type", "veth", "peer", "name", "eth0", "netns", p.NS},
		{"-n", l.Node, "link", "set", p.HostVeth, "master", l.Bridge},
		{"-n", l.Node, "link", "set", p.HostVeth, "up"},
		{"-n", p.NS, "addr", "add", p.IP.String() + "/24", "dev", "eth0"},
		{"-n", p.NS, "link", "set", "eth0", "up"},
		{"-n", p.NS, "route", "add", "default", "via", l.BridgeIP.String()},
	}
	l.mu.Lock()
	l.Pods[name] = p
	l.mu.Unlock()
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Learn makes the node resolve the pod's MAC (as kubelet probes do on a real
// node), so the pod's host-side veth can be found from the node: it opens
// (or is refused) a TCP connection from the node to the pod.
func (l *Lab) Learn(p *Pod) error {
	return InNetNS(l.Node, func() error {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort(p.IP.String(), "80"))
		if err == nil {
			c.Close()
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("reaching %s from the node: %w", p.IP, err)
		}
		return nil
	})
}

// Start runs a command inside the node namespace (in its own mount
// namespace) and keeps its PID for Teardown. Output goes to DIR/name.log.
func (l *Lab) Start(name string, argv ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(l.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Node}, argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	go func() { cmd.Wait(); logf.Close() }()
	return cmd, nil
}

// Log returns what a process started with Start wrote.
func (l *Lab) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, name+".log"))
	return string(b)
}

// NodePIDs lists the processes running in the node namespace, with their
// command names: tests use it to prove nothing was left running.
func (l *Lab) NodePIDs() (map[int]string, error) {
	out, err := exec.Command("ip", "netns", "pids", l.Node).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", l.Node, err)
	}
	pids := map[int]string{}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		pids[pid] = strings.TrimSpace(string(comm))
	}
	return pids, nil
}

// OnTeardown registers a function run first by Teardown.
func (l *Lab) OnTeardown(f func()) {
	l.mu.Lock()
	l.stops = append(l.stops, f)
	l.mu.Unlock()
}

// Teardown stops everything Setup and the helpers started, then deletes the
// namespaces (which removes their veths and bridge). It is safe to call twice.
func (l *Lab) Teardown() {
	l.mu.Lock()
	stops, procs := l.stops, l.procs
	l.stops, l.procs = nil, nil
	l.mu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	for _, c := range procs {
		if c.Process != nil {
			syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		}
	}
	if l.attached {
		return
	}
	// Whatever still runs in our namespaces was started by this lab
	// (sshd sessions, captures): stop it by PID.
	namespaces := []string{l.Node}
	for _, p := range l.Pods {
		namespaces = append(namespaces, p.NS)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, ns := range namespaces {
		for {
			out, err := exec.Command("ip", "netns", "pids", ns).Output()
			var pids []string
			for _, p := range strings.Fields(string(out)) {
				// This process shows up when Go parked a thread that entered
				// the namespace (InNetNS on the main thread).
				if p != strconv.Itoa(os.Getpid()) {
					pids = append(pids, p)
				}
			}
			if err != nil || len(pids) == 0 {
				break
			}
			sig := syscall.SIGTERM
			if time.Now().After(deadline) {
				sig = syscall.SIGKILL
			}
			for _, s := range pids {
				if pid, err := strconv.Atoi(s); err == nil {
					syscall.Kill(pid, sig)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, p := range l.Pods {
		exec.Command("ip", "netns", "del", p.NS).Run()
	}
	exec.Command("ip", "netns", "del", l.Node).Run()
	if l.uplink != "" {
		exec.Command("ip", "link", "del", l.uplink).Run()
	}
	os.RemoveAll(l.Dir)
}

// InNetNS runs f on an OS thread switched into the named namespace, so that
// sockets f creates live there (they stay there afterwards).
func InNetNS(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never switched back: it dies with the goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}
