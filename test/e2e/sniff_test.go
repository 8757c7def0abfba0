package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// sniffWorld is the workshop's two pods on a real "node" (network
// namespaces with sshd and tcpdump), mirrored in the lab by a Node and a
// Pod whose addresses point into those namespaces.
type sniffWorld struct {
	env      *labtest.Env
	net      *netlab.Lab
	sshd     *netlab.SSHD
	frontend *netlab.Pod
	backend  *netlab.Pod
	ns       string
	node     string
}

func newSniffWorld(t *testing.T) *sniffWorld {
	t.Helper()
	env := labtest.Get(t)
	l, err := netlab.Setup(netlab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Teardown)
	w := &sniffWorld{env: env, net: l, ns: env.Namespace(t, nil), node: "sniff-" + l.Prefix}
	if w.frontend, err = l.AddPod("frontend"); err != nil {
		t.Fatal(err)
	}
	if w.backend, err = l.AddPod("backend"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if w.sshd, err = l.StartSSHD(ctx); err != nil {
		t.Fatal(err)
	}
	// The Node is not managed by KWOK: nothing but this test touches it.
	kube := env.Kube
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: w.node}}
	if _, err := kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kube.CoreV1().Nodes().Delete(context.Background(), w.node, metav1.DeleteOptions{}) })
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: l.NodeIP.String()}, {Type: corev1.NodeHostName, Address: w.node}}
	if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// backend-app: a Deployment whose pod lives in the backend namespace.
	labels := map[string]string{"app": "backend-app", "version": "v1"}
	zero := int32(0)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "backend-app", Namespace: w.ns},
		Spec: appsv1.DeploymentSpec{Replicas: &zero, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "backend"}}}}},
	}
	if _, err := kube.AppsV1().Deployments(w.ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "backend-app-7d9c5-x2x4q", Namespace: w.ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: w.node, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "app", Image: "backend"}}},
	}
	pod, err = kube.CoreV1().Pods(w.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := w.backend.IP.String()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if _, err := kube.CoreV1().Pods(w.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// traffic starts the backend in mode and the frontend's request loop.
func (w *sniffWorld) traffic(t *testing.T, mode netlab.Mode) *netlab.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := w.net.StartBackend(ctx, w.backend, mode)
	if err != nil {
		t.Fatal(err)
	}
	c := w.net.NewClient(w.frontend, b)
	if body, err := c.Do(ctx); err != nil || body != netlab.Greeting {
		t.Fatalf("frontend → backend: %q, %v", body, err)
	}
	if err := w.net.Learn(w.backend); err != nil {
		t.Fatal(err)
	}
	c.Loop(100 * time.Millisecond)
	t.Cleanup(c.Stop)
	return c
}

func (w *sniffWorld) sshArgs(extra ...string) []string {
	return append([]string{"sniff", "backend-app", "-n", w.ns, "--ssh-user", "root", "--ssh-key", w.sshd.ClientKey,
		"--ssh-known-hosts", w.sshd.KnownHosts, "--ssh-config", "/dev/null"}, extra...)
}

// tcpdumps lists capture processes still running on the node.
func (w *sniffWorld) tcpdumps(t *testing.T) []string {
	t.Helper()
	pids, err := w.net.NodePIDs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for pid, comm := range pids {
		if comm == "tcpdump" || comm == "timeout" || comm == "sudo" {
			out = append(out, fmt.Sprintf("%d %s", pid, comm))
		}
	}
	return out
}

func (w *sniffWorld) noCaptureLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := w.tcpdumps(t)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("capture processes left on the node: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The workshop, before and after the mesh: the same request is readable
// in plaintext, invisible under Istio mTLS, and plain HTTPS is told apart.
// Each capture is also checked against tshark.
func TestSniffVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		mode    netlab.Mode
		verdict string
		line    *regexp.Regexp
		expect  string
		hits    bool
	}{
		{name: "plaintext", mode: netlab.Plaintext, verdict: "Verdict: PLAINTEXT", expect: "plaintext", hits: true,
			line: regexp.MustCompile(`(?m)^10\.\S+:\d+ → 10\.\S+:80  HTTP/1\.1 POST /greetings  PLAINTEXT$`)},
		{name: "istio mtls", mode: netlab.IstioMTLS, verdict: "Verdict: ENCRYPTED (Istio mTLS)", expect: "istio-mtls",
			line: regexp.MustCompile(`(?m)^10\.\S+:\d+ → 10\.\S+:80  TLS1\.3 SNI=outbound_\.80_\._\.backend\.default\.svc\.cluster\.local ALPN=istio-peer-exchange,istio  ISTIO-MTLS$`)},
		{name: "plain https", mode: netlab.HTTPS, verdict: "Verdict: ENCRYPTED (TLS, not Istio)", expect: "encrypted",
			line: regexp.MustCompile(`(?m)^10\.\S+:\d+ → 10\.\S+:80  TLS1\.3 SNI=backend\.example ALPN=http/1\.1  TLS$`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newSniffWorld(t)
			w.traffic(t, tt.mode)
			pcap := filepath.Join(t.TempDir(), "capture.pcap")
			res := w.env.Mesh(t, w.sshArgs("--duration", "2s", "--grep", "TGN", "-w", pcap, "--expect", tt.expect)...)
			if res.ExitCode != 0 {
				t.Fatalf("exit %d: %v\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Err, res.Stdout, res.Stderr)
			}
			if !strings.Contains(res.Stdout, tt.verdict+"\n") || !tt.line.MatchString(res.Stdout) {
				t.Errorf("want %q and a line matching %s; got:\n%s", tt.verdict, tt.line, res.Stdout)
			}
			hits := regexp.MustCompile(`Grep "TGN": (\d+) hits?`).FindStringSubmatch(res.Stdout)
			if hits == nil || (hits[1] != "0") != tt.hits {
				t.Errorf("grep hits %v, want hits=%v:\n%s", hits, tt.hits, res.Stdout)
			}
			// On the pod's own veth, found through the bridge: no duplicates.
			if !strings.Contains(res.Stderr, "interface veth2: host "+w.backend.IP.String()) {
				t.Errorf("did not capture on the backend's veth:\n%s", res.Stderr)
			}
			w.noCaptureLeft(t)
			checkWithTshark(t, pcap, tt.mode)
		})
	}
}

// checkWithTshark decodes the same capture with tshark and checks it sees
// what the verdict rests on.
func checkWithTshark(t *testing.T, pcap string, mode netlab.Mode) {
	t.Helper()
	run := func(args ...string) string {
		out, err := exec.Command("tshark", append([]string{"-r", pcap, "-d", "tcp.port==80,tls"}, args...)...).Output()
		if err != nil {
			t.Fatalf("tshark %v: %v", args, err)
		}
		return string(out)
	}
	hellos := run("-Y", "tls.handshake.type == 1", "-T", "fields", "-e", "tls.handshake.extensions_server_name", "-e", "tls.handshake.extensions_alpn_str")
	marker := strings.TrimSpace(run("-Y", `frame contains "TGN"`, "-T", "fields", "-e", "frame.number"))
	switch mode {
	case netlab.Plaintext:
		if hellos != "" || marker == "" {
			t.Errorf("tshark: ClientHellos %q, marker frames %q; want none and some", hellos, marker)
		}
	case netlab.IstioMTLS:
		if !strings.Contains(hellos, netlab.IstioSNI+"\tistio-peer-exchange,istio") || marker != "" {
			t.Errorf("tshark: ClientHellos %q, marker frames %q", hellos, marker)
		}
	case netlab.HTTPS:
		if !strings.Contains(hellos, "backend.example\thttp/1.1") || strings.Contains(hellos, "istio") || marker != "" {
			t.Errorf("tshark: ClientHellos %q, marker frames %q", hellos, marker)
		}
	}
}

// A changed host key stops everything before a command runs.
func TestSniffHostKeyMismatch(t *testing.T) {
	w := newSniffWorld(t)
	args := w.sshArgs("--duration", "2s")
	for i, a := range args {
		if a == w.sshd.KnownHosts {
			args[i] = w.sshd.WrongKnownHosts
		}
	}
	res := w.env.Mesh(t, args...)
	want := "has CHANGED"
	if res.ExitCode != 1 || res.Err == nil || !strings.Contains(res.Err.Error(), want) || res.Stdout != "" {
		t.Fatalf("exit %d, err %v, stdout %q; want exit 1 and %q", res.ExitCode, res.Err, res.Stdout, want)
	}
	if strings.Contains(w.net.Log("sshd"), "Accepted publickey") {
		t.Errorf("a session was authenticated despite the host key mismatch:\n%s", w.net.Log("sshd"))
	}
	if left := w.tcpdumps(t); len(left) > 0 {
		t.Errorf("capture ran: %v", left)
	}
}

// Hostile flags are refused before anything runs on the node.
func TestSniffRejectsHostileInput(t *testing.T) {
	w := newSniffWorld(t)
	for _, extra := range [][]string{
		{"--filter", "port 80' ; touch /tmp/pwned-sniff ; '"},
		{"--interface", "eth0;touch"},
	} {
		res := w.env.Mesh(t, w.sshArgs(extra...)...)
		if res.ExitCode != 1 || !strings.Contains(res.Err.Error(), "invalid") {
			t.Errorf("%v: exit %d, %v", extra, res.ExitCode, res.Err)
		}
	}
	if strings.Contains(w.net.Log("sshd"), "Accepted publickey") {
		t.Errorf("connected to the node:\n%s", w.net.Log("sshd"))
	}
	if _, err := os.Stat("/tmp/pwned-sniff"); err == nil {
		t.Error("the injected command ran")
	}
}

// Losing the SSH connection mid-capture prints what was seen, fails, and
// leaves no tcpdump behind on the node.
func TestSniffConnectionDropped(t *testing.T) {
	w := newSniffWorld(t)
	w.traffic(t, netlab.Plaintext)
	done := make(chan labtest.Result, 1)
	go func() { done <- w.env.Mesh(t, w.sshArgs("--duration", "60s", "--grep", "TGN")...) }()
	// Wait for the capture to run and see some traffic, then cut the
	// connection by killing the node's per-connection sshd.
	deadline := time.Now().Add(15 * time.Second)
	for len(w.tcpdumps(t)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the capture never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A running tcpdump has not necessarily streamed anything back yet: give
	// it some thirty requests' worth of packets before cutting the line.
	time.Sleep(3 * time.Second)
	pids, err := w.net.NodePIDs()
	if err != nil {
		t.Fatal(err)
	}
	for pid, comm := range pids {
		if strings.HasPrefix(comm, "sshd") && pid != w.sshd.PID {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	var res labtest.Result
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("sniff did not notice the dropped connection")
	}
	if res.ExitCode != 1 || !strings.Contains(res.Err.Error(), "was lost during the capture") {
		t.Errorf("exit %d, err %v; want 1 and a lost connection", res.ExitCode, res.Err)
	}
	if !strings.Contains(res.Stdout, "Verdict: PLAINTEXT") || !strings.Contains(res.Stdout, "POST /greetings") {
		t.Errorf("no partial summary:\n%s", res.Stdout)
	}
	w.noCaptureLeft(t)
}

// --count stops the capture, and a JSON report carries the verdict.
func TestSniffCountJSON(t *testing.T) {
	w := newSniffWorld(t)
	w.traffic(t, netlab.IstioMTLS)
	res := w.env.Mesh(t, w.sshArgs("--count", "40", "-o", "json", "--duration", "30s")...)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %v\n%s", res.ExitCode, res.Err, res.Stderr)
	}
	if !strings.Contains(res.Stdout, `"verdict": "encrypted-istio"`) || !strings.Contains(res.Stdout, `"packets": 40,`) {
		t.Errorf("unexpected JSON:\n%s", res.Stdout)
	}
	w.noCaptureLeft(t)
}

// viaPodWorld is a workshop-like namespace on the lab's KWOK node: a
// frontend-app and a backend-app without sidecars, whose pods get network
// namespaces on podnet's node (as podnet gives the workshop's own pods in
// default) and carry the frontend's requests. Exec into `--via pod`'s
// capture pod runs in the node's namespace (lab.EnsureNodeExec).
type viaPodWorld struct {
	env     *labtest.Env
	ns      string
	net     *netlab.Lab
	backend *netlab.Pod
}

func newViaPodWorld(t *testing.T) *viaPodWorld {
	t.Helper()
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.Lab.EnsureNodeExec(ctx); err != nil {
		t.Fatal(err)
	}
	w := &viaPodWorld{env: env, ns: env.Namespace(t, nil)}
	pods := map[string]*netlab.Pod{}
	for _, app := range []string{"backend-app", "frontend-app"} {
		env.Deployment(t, w.ns, app, nil, 1)
		list, err := env.Kube.CoreV1().Pods(w.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("pods of %s: %v, %v", app, list, err)
		}
		kp := list.Items[0]
		addr, err := netip.ParseAddr(kp.Status.PodIP)
		if err != nil || kp.Spec.NodeName != lab.NodeName {
			t.Fatalf("pod %s: IP %q on node %q, want an IP on %s", kp.Name, kp.Status.PodIP, kp.Spec.NodeName, lab.NodeName)
		}
		p, remove, err := podnet.AttachPod(w.ns, kp.Name, string(kp.UID), addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(remove) // before the namespace goes: KWOK reuses the IP
		pods[app] = p
	}
	w.backend = pods["backend-app"]
	w.net = netlab.Attach(podnet.NodeNS)
	t.Cleanup(w.net.Teardown)
	b, err := w.net.StartBackend(ctx, w.backend, netlab.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	c := w.net.NewClient(pods["frontend-app"], b)
	if body, err := c.Do(ctx); err != nil || body != netlab.Greeting {
		t.Fatalf("frontend → backend: %q, %v", body, err)
	}
	c.Loop(100 * time.Millisecond)
	t.Cleanup(c.Stop)
	return w
}

// noCapturePod waits until no capture pod is left in the namespace.
func noCapturePod(t *testing.T, env *labtest.Env, ns string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kubectl-mesh-sniff"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			p := pods.Items[0]
			t.Fatalf("capture pod %s left behind (deletion %v)", p.Name, p.DeletionTimestamp)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeCaptures lists the tcpdump processes in the node's namespace that
// capture ip: other captures of the shared node (SSH sniffs of the
// workshop) are not this test's.
func nodeCaptures(t *testing.T, ip netip.Addr) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", podnet.NodeNS).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", podnet.NodeNS, err)
	}
	var found []string
	for _, f := range strings.Fields(string(out)) {
		comm, _ := os.ReadFile("/proc/" + f + "/comm")
		cmdline, _ := os.ReadFile("/proc/" + f + "/cmdline")
		if strings.TrimSpace(string(comm)) == "tcpdump" && strings.Contains(string(cmdline), "host "+ip.String()+"\x00") {
			found = append(found, f+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}

// --via pod captures for real in the lab: the capture pod runs on node1,
// tcpdump runs in node1's network namespace through KWOK's exec, and the
// pcap streams through the API server to the plugin. The verdict, the
// marker and the backend's own veth (found by the discovery exec) prove the
// packets are the node's; afterwards the pod and tcpdump are gone.
func TestSniffViaPod(t *testing.T) {
	w := newViaPodWorld(t)
	pcap := filepath.Join(t.TempDir(), "capture.pcap")
	res := w.env.Mesh(t, "sniff", "backend-app", "-n", w.ns, "--via", "pod", "--duration", "3s", "--grep", "TGN",
		"-w", pcap, "--expect", "plaintext")
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %v\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Err, res.Stdout, res.Stderr)
	}
	line := regexp.MustCompile(`(?m)^10\.244\.\S+:\d+ → ` + regexp.QuoteMeta(w.backend.IP.String()) + `:80  HTTP/1\.1 POST /greetings  PLAINTEXT$`)
	if !strings.Contains(res.Stdout, "Verdict: PLAINTEXT\n") || !line.MatchString(res.Stdout) {
		t.Errorf("want a PLAINTEXT verdict and a line matching %s; got:\n%s", line, res.Stdout)
	}
	if hits := regexp.MustCompile(`Grep "TGN": (\d+) hits?`).FindStringSubmatch(res.Stdout); hits == nil || hits[1] == "0" {
		t.Errorf("grep hits %v, want some:\n%s", hits, res.Stdout)
	}
	for _, want := range []string{
		"starting a capture pod on node " + lab.NodeName + " ",
		// Found by ip and bridge in the node's namespace, through exec.
		"capturing on node " + lab.NodeName + " (pod " + w.ns + "/mesh-sniff-",
		" interface " + w.backend.HostVeth + ": host " + w.backend.IP.String(),
	} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	checkWithTshark(t, pcap, netlab.Plaintext)
	noCapturePod(t, w.env, w.ns)

	// tcpdump failing on the node: its message comes back through the exec
	// stream. (KWOK wraps the command's exit error, so the API server
	// reports an internal error rather than the exit status a kubelet
	// would: the status is not checked here.)
	res = w.env.Mesh(t, "sniff", "backend-app", "-n", w.ns, "--via", "pod", "--duration", "3s", "--interface", "kmlnosuch0")
	if res.ExitCode != 1 || res.Err == nil || !strings.Contains(res.Err.Error(), "tcpdump: kmlnosuch0: No such device") {
		t.Errorf("exit %d, err %v; want 1 and tcpdump's message\n%s", res.ExitCode, res.Err, res.Stderr)
	}
	noCapturePod(t, w.env, w.ns)
	deadline := time.Now().Add(10 * time.Second)
	for left := nodeCaptures(t, w.backend.IP); len(left) > 0; left = nodeCaptures(t, w.backend.IP) {
		if time.Now().After(deadline) {
			t.Fatalf("tcpdump left running on the node: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A user who may create pods but not exec into them gets the capture pod
// created and refused: sniff fails saying so, and deletes the pod.
func TestSniffViaPodExecForbidden(t *testing.T) {
	w := newViaPodWorld(t)
	user := "sniffer-" + w.ns
	w.env.Grant(t, w.ns, "pod-runner", user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get"}},
	})
	kc := w.env.UserKubeconfig(t, user, nil)
	res := w.env.Mesh(t, "--kubeconfig", kc, "sniff", "backend-app", "-n", w.ns, "--via", "pod", "--duration", "2s")
	// The exec was refused: not the capture command failing on the node.
	want := "error: exec in node " + lab.NodeName + " (pod " + w.ns + "/mesh-sniff-"
	if res.ExitCode != 1 || res.Err == nil || !strings.HasPrefix(res.Err.Error(), want) ||
		!strings.Contains(res.Err.Error(), `cannot create resource "pods/exec"`) {
		t.Fatalf("exit %d, err %v; want 1 and %q… a forbidden exec\nstdout:\n%s\nstderr:\n%s", res.ExitCode, res.Err, want, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "starting a capture pod on node "+lab.NodeName+" ") {
		t.Errorf("stderr:\n%s", res.Stderr)
	}
	noCapturePod(t, w.env, w.ns)
	if left := nodeCaptures(t, w.backend.IP); len(left) > 0 {
		t.Errorf("tcpdump ran on the node: %v", left)
	}
}
