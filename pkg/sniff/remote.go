package sniff

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// CaptureSpec says what to capture on the node. Pod IPs and interface names
// come from the cluster or the node: they are untrusted and validated
// before anything runs.
type CaptureSpec struct {
	// PodIPs are the pod's addresses (IPv4 and/or IPv6).
	PodIPs []string
	// Interface is the node interface to capture on; "" finds the pod's
	// host-side interface, falling back to "any".
	Interface string
	// Filter is an extra BPF expression, and-ed with the pod's hosts.
	Filter string
	// Count stops after this many packets (0: no limit).
	Count int
	// Duration stops after this long (0: until stopped).
	Duration time.Duration
}

// MaxCapture bounds every remote capture: the `timeout` backstop that stops
// tcpdump even if this process and its connection vanish.
const MaxCapture = time.Hour

// backstopSlack is added to --duration for the remote timeout, so the local
// timer normally stops the capture first and the remote end flushes.
const backstopSlack = 15 * time.Second

var (
	ifaceRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$`)
	// Characters a BPF expression needs (`tcp port 80 and (tcp[13] & 2 != 0)`),
	// and nothing a shell would interpret even outside quotes.
	filterRE = regexp.MustCompile(`^[A-Za-z0-9 .:/()\[\]!&|=<>+*_-]*$`)
)

// ValidateInterface accepts a Linux interface name or "any".
func ValidateInterface(name string) error {
	if name == "any" || ifaceRE.MatchString(name) {
		return nil
	}
	return fmt.Errorf("invalid interface name %q: expected up to 15 letters, digits, '.', '_' or '-'", name)
}

// ValidateFilter accepts a BPF expression made of safe characters.
func ValidateFilter(f string) error {
	if len(f) > 1024 || !filterRE.MatchString(f) || strings.HasPrefix(strings.TrimSpace(f), "-") {
		return fmt.Errorf("invalid --filter %q: use a tcpdump (BPF) expression of letters, digits, spaces and . : / ( ) [ ] ! & | = < > + * _ -", f)
	}
	return nil
}

// ParsePodIPs parses pod IPs from the cluster, rejecting anything that is not
// a plain unicast address, and returns them in canonical form.
func ParsePodIPs(ips []string) ([]netip.Addr, error) {
	if len(ips) == 0 {
		return nil, fmt.Errorf("the pod has no IP address yet: wait until it is running")
	}
	var out []netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("refusing pod IP %q: not a unicast IP address", s)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// TcpdumpArgs returns the argv of the capture: tcpdump streaming an
// unbuffered, untruncated pcap to stdout, under a `timeout` backstop.
func TcpdumpArgs(spec CaptureSpec, iface string) ([]string, error) {
	ips, err := ParsePodIPs(spec.PodIPs)
	if err != nil {
		return nil, err
	}
	if err := ValidateInterface(iface); err != nil {
		return nil, err
	}
	if err := ValidateFilter(spec.Filter); err != nil {
		return nil, err
	}
	if spec.Count < 0 || spec.Duration < 0 {
		return nil, fmt.Errorf("--count and --duration must not be negative")
	}
	hosts := make([]string, len(ips))
	for i, ip := range ips {
		hosts[i] = "host " + ip.String()
	}
	filter := strings.Join(hosts, " or ")
	if len(hosts) > 1 {
		filter = "(" + filter + ")"
	}
	if f := strings.TrimSpace(spec.Filter); f != "" {
		filter += " and (" + f + ")"
	}
	backstop := MaxCapture
	if spec.Duration > 0 && spec.Duration+backstopSlack < backstop {
		backstop = spec.Duration + backstopSlack
	}
	argv := []string{"timeout", "-s", "INT", strconv.Itoa(int(backstop / time.Second)),
		"tcpdump", "-U", "-w", "-", "-s", "0", "-n", "-i", iface}
	if spec.Count > 0 {
		argv = append(argv, "-c", strconv.Itoa(spec.Count))
	}
	return append(argv, filter), nil
}

// stopOnEOF runs argv in the background and terminates it when stdin
// reaches EOF: OpenSSH ignores signal requests for root logins and closing a
// session leaves an idle tcpdump alive until it next writes, but closing
// stdin (or losing the connection) always ends `cat`. Background jobs of a
// non-interactive shell get /dev/null as stdin, hence fd 3, and ignore
// SIGINT, hence TERM (on which tcpdump flushes just the same).
//
// The wrapper itself never runs as root: for a login that is not root,
// only tcpdump runs under `sudo -n` (see SudoArgs), so a sudoers rule for
// tcpdump alone is enough. The TERM then goes to timeout and on to sudo,
// which relays it to tcpdump: sudo passes on signals from processes of the
// same user that are not in the command's own process group, and the
// wrapper's process group is the login shell's.
const stopOnEOF = `exec 3<&0 </dev/null
"$@" 3<&- &
p=$!
{ cat <&3; kill -TERM "$p"; } >/dev/null 2>&1 &
exec 3<&-
wait "$p"`

// ShellQuote single-quotes s for a POSIX shell.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SudoArgs puts `sudo -n` (never prompting) in front of the privileged
// command of argv: after a leading `timeout -s SIGNAL SECONDS`, which stays
// unprivileged, so `sudo -n tcpdump …` is all that runs as root.
func SudoArgs(argv []string) []string {
	i := 0
	if len(argv) > 4 && argv[0] == "timeout" && argv[1] == "-s" {
		i = 4
	}
	out := append([]string(nil), argv[:i]...)
	out = append(out, "sudo", "-n")
	return append(out, argv[i:]...)
}

// RemoteCommand is the command line an SSH server runs for argv: every
// argument quoted, wrapped so that EOF on stdin stops it, with only the
// privileged command under `sudo -n` when the login is not root.
func RemoteCommand(argv []string, sudo bool) string {
	if sudo {
		argv = SudoArgs(argv)
	}
	parts := []string{"sh", "-c", ShellQuote(stopOnEOF), "sniff"}
	for _, a := range argv {
		parts = append(parts, ShellQuote(a))
	}
	return strings.Join(parts, " ")
}

// discoverScript prints what is needed to find a pod's host-side interface:
// the route to the pod, its neighbour entry (MAC) and the bridge FDB. It
// runs unprivileged; ip and bridge live in sbin, which is not on the PATH
// that sshd gives a login other than root.
const discoverScript = `PATH="$PATH:/usr/sbin:/sbin"; ip -o route get "$1" 2>&1; echo @@; ip neigh show to "$1" 2>&1; echo @@; bridge fdb show 2>/dev/null | head -n 20000`

// DiscoverArgs is the read-only command that locates ip's interface.
func DiscoverArgs(ip netip.Addr) []string {
	return []string{"sh", "-c", discoverScript, "sniff-discover", ip.String()}
}

// ParseDiscovery finds the host-side interface of the pod from
// DiscoverArgs's output: the route's device when the pod is routed straight
// to a veth (Calico, Cilium), or, behind a bridge, the bridge port that
// learned the pod's MAC. It returns "" when the output does not tell
// (another node, no neighbour entry yet): capture on "any" then.
func ParseDiscovery(out string) string {
	parts := strings.SplitN(out, "@@\n", 3)
	if len(parts) < 3 {
		return ""
	}
	route := strings.Fields(parts[0])
	dev := fieldAfter(route, "dev")
	if dev == "" || contains(route, "via") || !ifaceRE.MatchString(dev) || dev == "lo" {
		return ""
	}
	mac := strings.ToLower(fieldAfter(strings.Fields(parts[1]), "lladdr"))
	isBridge := false
	for _, line := range strings.Split(parts[2], "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || fieldAfter(f, "master") != dev {
			continue
		}
		isBridge = true
		if mac != "" && strings.ToLower(f[0]) == mac {
			if port := fieldAfter(f, "dev"); ifaceRE.MatchString(port) {
				return port
			}
		}
	}
	if isBridge {
		return ""
	}
	return dev
}

func fieldAfter(f []string, key string) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == key {
			return f[i+1]
		}
	}
	return ""
}

func contains(f []string, s string) bool {
	for _, x := range f {
		if x == s {
			return true
		}
	}
	return false
}
