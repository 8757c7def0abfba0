package cmd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

const sniffTestdata = "../sniff/testdata/"

func TestSniffRead(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		stdout   string
		wantErr  string
		exitCode int
	}{
		{
			name: "plaintext with grep",
			args: []string{"sniff", "-r", sniffTestdata + "plaintext.pcap", "--grep", "TGN", "--expect", "plaintext"},
			stdout: `10.1.0.5:52314 → 10.1.0.7:80  HTTP/1.1 POST /greetings  PLAINTEXT
10.1.0.7:80 → 10.1.0.5:52314  HTTP/1.1 200  PLAINTEXT
10.1.0.7:80 → 10.1.0.5:52314  PLAINTEXT  …{"greetings":"Hi TGN meetup"}…
SOURCE          DESTINATION  PROTOCOL  DETAIL                  PACKETS  BYTES  VERDICT
10.1.0.5:52314  10.1.0.7:80  HTTP/1.1  POST /greetings grep=1  11       792    PLAINTEXT
Packets: 11 (1 TCP flow)
Grep "TGN": 1 hit
Verdict: PLAINTEXT
`,
		},
		{
			name:     "mTLS is not plaintext",
			args:     []string{"sniff", "-r", sniffTestdata + "mtls.pcap", "--expect", "plaintext"},
			wantErr:  "expected plaintext traffic, but the verdict is ENCRYPTED (Istio mTLS)",
			exitCode: 2,
		},
		{
			name:    "HTTPS is encrypted but not Istio",
			args:    []string{"sniff", "-r", sniffTestdata + "https.pcap", "--expect", "istio-mtls"},
			wantErr: "expected istio-mtls traffic, but the verdict is ENCRYPTED (TLS, not Istio)", exitCode: 2,
		},
		{
			name: "count limits the packets read",
			args: []string{"sniff", "-r", sniffTestdata + "plaintext.pcap", "--count", "3", "--expect", "encrypted"},
			stdout: `SOURCE          DESTINATION  PROTOCOL  DETAIL  PACKETS  BYTES  VERDICT
10.1.0.5:52314  10.1.0.7:80  -         -       3        180    NO DATA
Packets: 3 (1 TCP flow)
Verdict: NO TRAFFIC
`,
			wantErr:  "expected encrypted traffic but none was captured: make the workload send requests during the capture, or widen --duration",
			exitCode: 3,
		},
		{name: "jsonpath", args: []string{"sniff", "-r", sniffTestdata + "plaintext.pcap", "--grep", "TGN", "-o", "jsonpath={.verdict} {.grepHits} {.flows[0].dst}"},
			stdout: "plaintext 1 10.1.0.7:80"},
		{name: "yaml", args: []string{"sniff", "-r", sniffTestdata + "plaintext.pcap", "--count", "3", "-o", "yaml"},
			stdout: `datagramPackets: 0
flows:
- alpn: []
  bytes: 180
  dst: 10.1.0.7:80
  evidence: no payload
  grepHits: 0
  packets: 3
  protocol: '-'
  rule: no-payload
  sni: ""
  src: 10.1.0.5:52314
  tlsVersion: ""
  transport: tcp
  verdict: no-data
grepHits: 0
infra: []
linkType: 1
otherPackets: 0
packets: 3
verdict: no-traffic
`},
		{name: "unknown output", args: []string{"sniff", "-r", "x.pcap", "-o", "xml"},
			wantErr: `unable to match a printer suitable for the output format "xml", allowed formats are: json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`, exitCode: 1},
		{name: "missing file", args: []string{"sniff", "-r", "nope.pcap"}, wantErr: "opening the capture: open nope.pcap: no such file or directory", exitCode: 1},
		{name: "no target", args: []string{"sniff"}, wantErr: "name one pod (POD or TYPE/NAME) or give -l SELECTOR, e.g. kubectl mesh sniff deploy/backend-app", exitCode: 1},
		{name: "bad via", args: []string{"sniff", "p", "--via", "telnet"}, wantErr: `--via must be auto, ssh or pod, got "telnet"`, exitCode: 1},
		{name: "bad expect", args: []string{"sniff", "p", "--expect", "secure"}, wantErr: `--expect must be encrypted, plaintext or istio-mtls, got "secure"`, exitCode: 1},
		{name: "two stdouts", args: []string{"sniff", "p", "-w", "-", "-o", "json"}, wantErr: "-w - and -o json both want stdout: write the capture to a file", exitCode: 1},
		{name: "two stdouts, yaml", args: []string{"sniff", "p", "-w", "-", "-o", "yaml"}, wantErr: "-w - and -o yaml both want stdout: write the capture to a file", exitCode: 1},
		{name: "read and pod", args: []string{"sniff", "p", "-r", "x.pcap"}, wantErr: "-r analyses a file: do not name a pod or selector too", exitCode: 1},
		{name: "hostile filter", args: []string{"sniff", "p", "--filter", "port 80; reboot"}, wantErr: `invalid --filter "port 80; reboot": use a tcpdump (BPF) expression of letters, digits, spaces and . : / ( ) [ ] ! & | = < > + * _ -`, exitCode: 1},
		{name: "hostile interface", args: []string{"sniff", "p", "--interface", "eth0 -w /x"}, wantErr: `--interface: invalid interface name "eth0 -w /x": expected up to 15 letters, digits, '.', '_' or '-'`, exitCode: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(nil, nil)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				code := 1
				var ec exitCoder
				if errors.As(err, &ec) {
					code = ec.ExitCode()
				}
				if code != tt.exitCode {
					t.Errorf("exit code %d, want %d", code, tt.exitCode)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tt.stdout != "" || tt.wantErr == "" {
				if got := f.Out.String(); got != tt.stdout {
					t.Errorf("stdout =\n%s\nwant\n%s", got, tt.stdout)
				}
			}
			if len(f.Kube.Actions()) != 0 {
				t.Errorf("made API calls: %v", f.Kube.Actions())
			}
		})
	}
}

func TestSniffReadJSON(t *testing.T) {
	f := fake.New(nil, nil)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"sniff", "-r", sniffTestdata + "mtls.pcap", "--grep", "TGN", "-o", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Verdict  string `json:"verdict"`
		GrepHits int    `json:"grepHits"`
		Flows    []struct {
			Src, Dst, Protocol, SNI, TLSVersion, Verdict string
			ALPN                                         []string
			Packets, Bytes                               int
		} `json:"flows"`
	}
	if err := json.Unmarshal(f.Out.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, f.Out)
	}
	fl := got.Flows[0]
	if got.Verdict != "encrypted-istio" || got.GrepHits != 0 || len(got.Flows) != 1 ||
		fl.Src != "10.1.0.5:40000" || fl.Dst != "10.1.0.7:80" || fl.SNI != "outbound_.80_._.backend.default.svc.cluster.local" ||
		strings.Join(fl.ALPN, ",") != "istio-peer-exchange,istio" || fl.TLSVersion != "TLS1.3" || fl.Packets != 13 {
		t.Errorf("unexpected JSON: %s", f.Out)
	}
	if f.ErrOut.Len() != 0 {
		t.Errorf("stderr: %s", f.ErrOut)
	}
}

// Pod and node data come from the cluster: a hostile pod IP is refused
// before any connection to the node is attempted.
func TestSniffLiveRejectsBeforeConnecting(t *testing.T) {
	pod := func(name, ip, node string, phase corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{NodeName: node},
			Status:     corev1.PodStatus{Phase: phase, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		}
	}
	labelled := func(p *corev1.Pod) *corev1.Pod {
		p.Labels["tier"] = "api"
		return p
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	tests := []struct {
		name    string
		objects []kruntime.Object
		args    []string
		wantErr string
	}{
		{name: "hostile pod IP", objects: []kruntime.Object{pod("evil", "10.0.0.1'; reboot; '", "node1", corev1.PodRunning)},
			args: []string{"sniff", "evil", "--ssh-user", "root"}, wantErr: `pod default/evil: refusing pod IP "10.0.0.1'; reboot; '": not a unicast IP address`},
		{name: "no such pod", args: []string{"sniff", "ghost"}, wantErr: `no pod, deployment, statefulset or daemonset named "ghost" in namespace default; list pods with: kubectl get pods -n default`},
		{name: "no such namespace", args: []string{"sniff", "ghost", "-n", "nons"}, wantErr: `namespace "nons" not found: check -n (kubectl get namespaces)`},
		{name: "selector without running pods", objects: []kruntime.Object{pod("web-1", "10.0.0.2", "node1", corev1.PodPending)},
			args: []string{"sniff", "-l", "app=web-1"}, wantErr: "selector app=web-1 in namespace default has no running pod (1 Pending): wait until one runs; see kubectl get pods -n default -l app=web-1"},
		{name: "one node address for two nodes", objects: []kruntime.Object{labelled(pod("api-1", "10.0.1.2", "node1", corev1.PodRunning)), labelled(pod("api-2", "10.0.2.2", "node2", corev1.PodRunning))},
			args: []string{"sniff", "-l", "tier=api", "--node-address", "10.0.0.1", "--ssh-user", "root"}, wantErr: "--node-address and -w name one node, but the pods of selector tier=api run on 2 nodes: drop them, or name pods on one node"},
		{name: "one pcap for two nodes", objects: []kruntime.Object{labelled(pod("api-1", "10.0.1.2", "node1", corev1.PodRunning)), labelled(pod("api-2", "10.0.2.2", "node2", corev1.PodRunning))},
			args: []string{"sniff", "-l", "tier=api", "-w", "x.pcap", "--ssh-user", "root"}, wantErr: "--node-address and -w name one node, but the pods of selector tier=api run on 2 nodes: drop them, or name pods on one node"},
		{name: "no pod on a node", objects: []kruntime.Object{labelled(pod("api-1", "10.0.1.2", "", corev1.PodRunning)), labelled(pod("api-2", "", "node2", corev1.PodRunning))},
			args: []string{"sniff", "-l", "tier=api"}, wantErr: "no pod of selector tier=api in namespace default is on a node with an address yet: wait until they run"},
		{name: "pod without an address", objects: []kruntime.Object{pod("web-6", "", "node1", corev1.PodPending)},
			args: []string{"sniff", "web-6"}, wantErr: "pod default/web-6 has no IP address yet: wait until it is running"},
		{name: "unscheduled pod", objects: []kruntime.Object{pod("web-2", "10.0.0.3", "", corev1.PodRunning)},
			args: []string{"sniff", "web-2"}, wantErr: "pod default/web-2 is not scheduled to a node yet"},
		{name: "node without address", objects: []kruntime.Object{pod("web-3", "10.0.0.4", "node9", corev1.PodRunning), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node9"}}},
			args: []string{"sniff", "web-3", "--ssh-user", "root"}, wantErr: "node node9 has no InternalIP or ExternalIP: pass --node-address"},
		{name: "unknown host key file", objects: []kruntime.Object{pod("web-4", "10.0.0.5", "node1", corev1.PodRunning)},
			args:    []string{"sniff", "web-4", "--ssh-user", "root", "--node-address", "127.0.0.1", "--ssh-port", "1", "--ssh-known-hosts", filepath.Join(home, "kh")},
			wantErr: "cannot check the host key of node node1: no known_hosts file (" + filepath.Join(home, "kh") + ", /etc/ssh/ssh_known_hosts, /etc/ssh/ssh_known_hosts2); add the node's key with `ssh-keyscan -p 1 127.0.0.1 >> " + filepath.Join(home, "kh") + "` after verifying it, or pass --insecure-skip-host-key-check"},
		{name: "auto never makes a capture pod", objects: []kruntime.Object{pod("web-5", "10.0.0.6", "node5", corev1.PodRunning),
			&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node5"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.9"}}}}},
			args: []string{"sniff", "web-5", "--image", "registry.local/tcpdump:1"},
			wantErr: `no SSH settings for node node5: no --ssh-* flag is given and ssh_config (~/.ssh/config, /etc/ssh/ssh_config) has no Host entry for node node5 or its address 10.0.0.9.
Set up SSH: pass --ssh-user (with --ssh-key, --node-address or --ssh-jump as needed), or add "Host node5" with User and IdentityFile to ~/.ssh/config; the user must be root or may run "sudo -n tcpdump".
Or pass --via pod: it creates a pod on node node5 in namespace default with hostNetwork, capabilities NET_RAW and NET_ADMIN and image registry.local/tcpdump:1, runs tcpdump in it and deletes it afterwards`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(append(tt.objects, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}), nil)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(append([]string{"-n", "default"}, tt.args...))
			err := cmd.Execute()
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if f.Out.Len() != 0 {
				t.Errorf("stdout: %s", f.Out)
			}
			for _, a := range f.Kube.Actions() {
				if a.GetVerb() != "get" && a.GetVerb() != "list" {
					t.Errorf("%s %s: sniff changed the cluster before connecting", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(home, ".ssh")); err == nil {
		t.Error("created ~/.ssh")
	}
}
