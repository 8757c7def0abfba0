package sniff

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTcpdumpArgs(t *testing.T) {
	tests := []struct {
		name    string
		spec    CaptureSpec
		iface   string
		want    string
		wantErr string
	}{
		{name: "one IPv4", spec: CaptureSpec{PodIPs: []string{"10.244.0.7"}}, iface: "veth1234",
			want: "timeout -s INT 3600 tcpdump -U -w - -s 0 -n -i veth1234 host 10.244.0.7"},
		{name: "dual stack, count, duration, filter", spec: CaptureSpec{PodIPs: []string{"10.244.0.7", "fd00:0:0::7"}, Count: 100, Duration: 30 * time.Second, Filter: "tcp port 80"}, iface: "any",
			want: "timeout -s INT 45 tcpdump -U -w - -s 0 -n -i any -c 100 (host 10.244.0.7 or host fd00::7) and (tcp port 80)"},
		{name: "hostile pod IP", spec: CaptureSpec{PodIPs: []string{"10.0.0.1; reboot"}}, iface: "any",
			wantErr: `refusing pod IP "10.0.0.1; reboot": not a unicast IP address`},
		{name: "hostile pod IP with quote", spec: CaptureSpec{PodIPs: []string{"10.0.0.1' or '1"}}, iface: "any",
			wantErr: `refusing pod IP "10.0.0.1' or '1": not a unicast IP address`},
		{name: "zoned IP", spec: CaptureSpec{PodIPs: []string{"fe80::1%eth0"}}, iface: "any",
			wantErr: `refusing pod IP "fe80::1%eth0": not a unicast IP address`},
		{name: "no IP", spec: CaptureSpec{}, iface: "any", wantErr: "the pod has no IP address yet: wait until it is running"},
		{name: "hostile interface", spec: CaptureSpec{PodIPs: []string{"10.0.0.1"}}, iface: "eth0$(reboot)",
			wantErr: `invalid interface name "eth0$(reboot)": expected up to 15 letters, digits, '.', '_' or '-'`},
		{name: "option as interface", spec: CaptureSpec{PodIPs: []string{"10.0.0.1"}}, iface: "-w/etc/passwd",
			wantErr: `invalid interface name "-w/etc/passwd": expected up to 15 letters, digits, '.', '_' or '-'`},
		{name: "hostile filter", spec: CaptureSpec{PodIPs: []string{"10.0.0.1"}, Filter: "port 80'; rm -rf /; '"}, iface: "any",
			wantErr: `invalid --filter "port 80'; rm -rf /; '": use a tcpdump (BPF) expression of letters, digits, spaces and . : / ( ) [ ] ! & | = < > + * _ -`},
		{name: "filter as option", spec: CaptureSpec{PodIPs: []string{"10.0.0.1"}, Filter: "-r /etc/shadow"}, iface: "any",
			wantErr: `invalid --filter "-r /etc/shadow": use a tcpdump (BPF) expression of letters, digits, spaces and . : / ( ) [ ] ! & | = < > + * _ -`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, err := TcpdumpArgs(tt.spec, tt.iface)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(argv, " "); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRemoteCommandQuoting(t *testing.T) {
	got := RemoteCommand([]string{"echo", "it's", "$(x)"}, true)
	want := `sh -c ` + ShellQuote(stopOnEOF) + ` sniff 'sudo' '-n' 'echo' 'it'\''s' '$(x)'`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// The shell hands the arguments through unchanged. Stdin stays open
	// while it runs, as an SSH session's does: EOF would stop the command,
	// possibly before printf wrote anything.
	stdin, keepOpen, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	defer keepOpen.Close()
	cmd := exec.Command("sh", "-c", RemoteCommand([]string{"printf", "%s|", "it's", "$(x)", "a b"}, false))
	cmd.Stdin = stdin
	out, err := cmd.Output()
	if err != nil || string(out) != "it's|$(x)|a b|" {
		t.Errorf("shell saw %q (%v)", out, err)
	}
}

// Only the privileged command runs under sudo: the backstop and the
// stop-on-EOF wrapper stay the login's own, so a sudoers rule for tcpdump
// alone is enough.
func TestSudoArgs(t *testing.T) {
	tests := []struct{ in, want string }{
		{"timeout -s INT 45 tcpdump -U -w - -i any host 10.0.0.1", "timeout -s INT 45 sudo -n tcpdump -U -w - -i any host 10.0.0.1"},
		{"tcpdump -i any", "sudo -n tcpdump -i any"},
		{"timeout 5 tcpdump", "sudo -n timeout 5 tcpdump"},
	}
	for _, tt := range tests {
		if got := strings.Join(SudoArgs(strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("SudoArgs(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
	argv, err := TcpdumpArgs(CaptureSpec{PodIPs: []string{"10.0.0.1"}, Duration: 30 * time.Second}, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	got := RemoteCommand(argv, true)
	want := `sh -c ` + ShellQuote(stopOnEOF) + ` sniff 'timeout' '-s' 'INT' '45' 'sudo' '-n' 'tcpdump' '-U' '-w' '-' '-s' '0' '-n' '-i' 'eth0' 'host 10.0.0.1'`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// With a stand-in for sudo on PATH, the wrapper (not sudo) runs first,
// sudo gets `-n tcpdump …` and closing stdin still stops the capture.
func TestStopOnEOFWithSudo(t *testing.T) {
	bin := t.TempDir()
	log := filepath.Join(bin, "log")
	fake := "#!/bin/sh\necho \"$PPID $*\" >> " + log + "\nshift\nexec \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "sudo"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "tcpdump"), []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", RemoteCommand([]string{"timeout", "-s", "INT", "60", "tcpdump", "-i", "any"}, true))
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile(log); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("sudo never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the capture did not stop on stdin EOF")
	}
	b, _ := os.ReadFile(log)
	ppid, args, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if args != "-n tcpdump -i any" {
		t.Errorf("sudo ran with %q, want \"-n tcpdump -i any\"", args)
	}
	// sudo's parent is timeout, not the login's shell.
	if comm, _ := os.ReadFile("/proc/" + ppid + "/comm"); len(comm) > 0 && strings.TrimSpace(string(comm)) != "timeout" {
		t.Errorf("sudo's parent is %q, want timeout", strings.TrimSpace(string(comm)))
	}
}

// The wrapper stops its command when stdin closes, and returns when the
// command exits on its own.
func TestStopOnEOF(t *testing.T) {
	cmd := exec.Command("sh", "-c", RemoteCommand([]string{"sleep", "30"}, false))
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the wrapped command did not stop on stdin EOF")
	}
	cmd = exec.Command("sh", "-c", RemoteCommand([]string{"sh", "-c", "exit 3"}, false))
	stdin, _ = cmd.StdinPipe()
	defer stdin.Close()
	var exit *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("exit %v, want status 3", err)
	}
}

func TestParseDiscovery(t *testing.T) {
	tests := []struct{ name, out, want string }{
		{"bridge port by MAC",
			"10.77.0.3 dev snbr0 src 10.77.0.1 uid 0 \\    cache \n@@\n10.77.0.3 dev snbr0 lladdr 02:aa:bb:cc:dd:03 REACHABLE\n@@\n02:aa:bb:cc:dd:02 dev snv1 master snbr0 \n02:AA:BB:CC:DD:03 dev snv2 master snbr0 \n33:33:00:00:00:01 dev snv2 self permanent\n",
			"snv2"},
		{"routed veth (calico)", "10.244.0.7 dev cali12345678901 src 10.0.0.4 uid 0\n@@\n@@\n", "cali12345678901"},
		{"bridge without neighbour", "10.77.0.3 dev snbr0 src 10.77.0.1\n@@\n@@\n02:aa:bb:cc:dd:02 dev snv1 master snbr0\n", ""},
		{"pod on another node", "10.244.1.5 via 10.0.0.5 dev eth0 src 10.0.0.4\n@@\n@@\n", ""},
		{"hostile interface name", "10.0.0.1 dev $(reboot) src 10.0.0.4\n@@\n@@\n", ""},
		{"garbage", "nothing useful", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseDiscovery(tt.out); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseSSHConfig(t *testing.T) {
	cfg := `# nodes
Host bastion
  HostName 192.0.2.1
  User jump
Host node1 node2
  HostName %h.lab.internal
  User vagrant
  Port 2222
  IdentityFile ~/.ssh/lab_key
  IdentityFile "%d/.ssh/second key"
  ProxyJump bastion
Host !node2 node*
  User other
  IdentitiesOnly yes
Host *
  User fallback
  UserKnownHostsFile ~/.ssh/known_hosts2 /etc/nodes_known
  GlobalKnownHostsFile /etc/ssh/cluster_known_hosts
`
	tests := []struct {
		host string
		want SSHHostConfig
	}{
		{"node1", SSHHostConfig{HostName: "node1.lab.internal", User: "vagrant", Port: 2222, IdentityFiles: []string{"/home/u/.ssh/lab_key", "/home/u/.ssh/second key"},
			IdentitiesOnly: true, ProxyJump: "bastion", KnownHostsFile: []string{"/home/u/.ssh/known_hosts2", "/etc/nodes_known"},
			GlobalKnownHostsFile: []string{"/etc/ssh/cluster_known_hosts"}, Matched: true}},
		{"node3", SSHHostConfig{User: "other", IdentitiesOnly: true, KnownHostsFile: []string{"/home/u/.ssh/known_hosts2", "/etc/nodes_known"},
			GlobalKnownHostsFile: []string{"/etc/ssh/cluster_known_hosts"}, Matched: true}},
		{"10.0.0.9", SSHHostConfig{User: "fallback", KnownHostsFile: []string{"/home/u/.ssh/known_hosts2", "/etc/nodes_known"},
			GlobalKnownHostsFile: []string{"/etc/ssh/cluster_known_hosts"}}},
	}
	for _, tt := range tests {
		got, err := ParseSSHConfig(cfg, tt.host, "/home/u")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got  %+v\nwant %+v", tt.host, got, tt.want)
		}
	}
	for in, want := range map[string][3]string{
		"root@10.0.0.1:2200": {"root", "10.0.0.1", "2200"},
		"bastion":            {"", "bastion", "0"},
		"u@[fd00::1]:22":     {"u", "fd00::1", "22"},
	} {
		u, h, p := ParseUserHostPort(in)
		if u != want[0] || h != want[1] || strconv.Itoa(p) != want[2] {
			t.Errorf("%s: got %s %s %d", in, u, h, p)
		}
	}
	if _, err := ParseSSHConfig("Match exec \"true\"\n  User x\n", "node1", "/home/u"); err == nil {
		t.Error("Match exec was accepted")
	}
}

// stubRunner replays a capture, recording what it was asked to run.
type stubRunner struct {
	pcap     []byte
	ran      [][]string
	discover string
	exitErr  error
}

func (s *stubRunner) Output(ctx context.Context, argv []string) ([]byte, error) {
	s.ran = append(s.ran, argv)
	return []byte(s.discover), nil
}

func (s *stubRunner) Stream(ctx context.Context, argv []string) (Stream, error) {
	s.ran = append(s.ran, argv)
	return &stubStream{r: strings.NewReader(string(s.pcap)), err: s.exitErr}, nil
}

func (s *stubRunner) Describe() string { return "node1 (10.0.0.4:22)" }
func (s *stubRunner) Close() error     { return nil }

type stubStream struct {
	r   io.Reader
	err error
}

func (s *stubStream) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *stubStream) Stop()                      {}
func (s *stubStream) Wait() error                { return s.err }
func (s *stubStream) Close() error               { return nil }

func TestCaptureWithStub(t *testing.T) {
	pcap := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.77.0.2:40000", "10.77.0.3:80", 100).frames)
	tests := []struct {
		name     string
		runner   *stubRunner
		spec     CaptureSpec
		ran      int
		iface    string
		wantErr  string
		verdict  Verdict
		incomple bool
	}{
		{name: "discovers the bridge port", runner: &stubRunner{pcap: pcap, discover: "10.77.0.3 dev br0 src 10.77.0.1\n@@\n10.77.0.3 dev br0 lladdr 02:00:00:00:00:03 STALE\n@@\n02:00:00:00:00:03 dev veth3 master br0\n"},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}}, ran: 2, iface: "veth3", verdict: VerdictPlaintext},
		{name: "falls back to any", runner: &stubRunner{pcap: pcap, discover: "junk"},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}}, ran: 2, iface: "any", verdict: VerdictPlaintext},
		{name: "given interface skips discovery", runner: &stubRunner{pcap: pcap},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "eth1"}, ran: 1, iface: "eth1", verdict: VerdictPlaintext},
		{name: "hostile IP runs nothing", runner: &stubRunner{pcap: pcap},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3 or 1=1"}}, ran: 0, wantErr: `refusing pod IP "10.77.0.3 or 1=1": not a unicast IP address`},
		{name: "hostile interface runs nothing", runner: &stubRunner{pcap: pcap},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "a;b"}, ran: 0, wantErr: `invalid interface name "a;b": expected up to 15 letters, digits, '.', '_' or '-'`},
		{name: "hostile filter runs nothing", runner: &stubRunner{pcap: pcap},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Filter: "`id`"}, ran: 0, wantErr: "invalid --filter \"`id`\": use a tcpdump (BPF) expression of letters, digits, spaces and . : / ( ) [ ] ! & | = < > + * _ -"},
		{name: "lost connection keeps the partial report", runner: &stubRunner{pcap: pcap[:len(pcap)/2], exitErr: &ConnectionLostError{Node: "node1"}},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "eth1"}, ran: 1, iface: "eth1", verdict: VerdictPlaintext, incomple: true,
			wantErr: "the connection to node1 was lost during the capture: the summary covers only the packets received"},
		{name: "tcpdump fails", runner: &stubRunner{exitErr: &RemoteExitError{Status: 1, Stderr: "tcpdump: eth9: No such device exists"}},
			spec: CaptureSpec{PodIPs: []string{"10.77.0.3"}, Interface: "eth9"}, ran: 1, iface: "eth9", verdict: VerdictNoTraffic, incomple: true,
			wantErr: "the capture command failed on the node (exit 1): tcpdump: eth9: No such device exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Capture(context.Background(), tt.runner, CaptureConfig{Spec: tt.spec})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if len(tt.runner.ran) != tt.ran {
				t.Fatalf("ran %d commands (%q), want %d", len(tt.runner.ran), tt.runner.ran, tt.ran)
			}
			if tt.ran == 0 {
				return
			}
			cmd := tt.runner.ran[len(tt.runner.ran)-1]
			if got := cmd[12]; got != tt.iface {
				t.Errorf("captured on %q, want %q (%q)", got, tt.iface, cmd)
			}
			if rep.Verdict != tt.verdict || rep.Incomplete != tt.incomple {
				t.Errorf("verdict %s incomplete %v; want %s %v", rep.Verdict, rep.Incomplete, tt.verdict, tt.incomple)
			}
		})
	}
}

// What sudo on the node says becomes what to do about it.
func TestRemoteExitError(t *testing.T) {
	tests := []struct {
		err  RemoteExitError
		want string
	}{
		{RemoteExitError{Status: 1, Stderr: "sudo: a password is required"},
			"sudo on the node asks for a password (exit 1): allow tcpdump without one, e.g. with the sudoers rule `USER ALL=(root) NOPASSWD: /usr/bin/tcpdump` (the path of tcpdump on the node), or log in as root (--ssh-user root)"},
		{RemoteExitError{Status: 127, Stderr: "timeout: failed to run command 'sudo': No such file or directory"},
			"sudo is not installed on the node (exit 127: timeout: failed to run command 'sudo': No such file or directory): install it, or log in as root (--ssh-user root)"},
		{RemoteExitError{Status: 1, Stderr: "tcpdump: listening\ntcpdump: eth9: No such device exists"},
			"the capture command failed on the node (exit 1): tcpdump: listening; tcpdump: eth9: No such device exists"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

// The discovery finds ip and bridge with the PATH of a login that is not
// root (no sbin).
func TestDiscoverWithoutSbinInPath(t *testing.T) {
	argv := DiscoverArgs(netip.MustParseAddr("127.0.0.1"))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	route, _, _ := strings.Cut(string(out), "@@")
	if !strings.Contains(route, "127.0.0.1") || !strings.Contains(route, " dev lo ") {
		t.Errorf("ip route get did not run: %q", out)
	}
}
