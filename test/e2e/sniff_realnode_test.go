package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestSniffRealNode captures the injected workshop as a real node carries
// it: the kubelet probing istio-proxy (15021) and the rewritten app probes
// (15020) from the node's address, Prometheus scraping 15020/15090, the
// frontend resolving the backend over UDP DNS, and the sidecars' mTLS
// connection opened long before the capture, so the capture holds TLS
// records but no handshake. That is still Istio mTLS. A client outside the
// mesh calling the backend in cleartext then makes it MIXED, by name.
func TestSniffRealNode(t *testing.T) {
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	restoreWorkshop(t, env) // a previous run that died half-way
	t.Cleanup(func() { restoreWorkshop(t, env) })

	if r := env.Mesh(t, "enable-injection", "default"); r.Err != nil {
		t.Fatalf("enable-injection: %v\n%s", r.Err, r.Stderr)
	}
	if r := env.Mesh(t, "restart", "default"); r.Err != nil {
		t.Fatalf("restart: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	waitWorkshopPods(t, env, "app=frontend-app", 2)
	waitWorkshopPods(t, env, "app=backend-app", 2)
	backend := workshopPod(t, env, "app=backend-app")
	checkInjectedProbes(t, backend)
	backendIP := netip.MustParseAddr(backend.Status.PodIP)

	// The frontend's sidecar has opened its pooled connection once it logs
	// calls to this backend over mTLS; the capture starts after that.
	waitPooledCalls(t, env, backend.Name, 20)
	time.Sleep(time.Second)

	capture := func(step, deploy, duration string, expect bool) (sniffCapture, labtest.Result) {
		t.Helper()
		pcap := filepath.Join(t.TempDir(), "capture.pcap")
		args := []string{"sniff", "-n", "default", "deploy/" + deploy, "--ssh-config", sshConfig, "--duration", duration, "-o", "json", "-w", pcap}
		if expect {
			args = append(args, "--expect", "istio-mtls")
		}
		r := env.Mesh(t, args...)
		var c sniffCapture
		c.pcap = pcap
		if err := json.Unmarshal([]byte(r.Stdout), &c.report); err != nil {
			t.Fatalf("%s: sniff -o json (exit %d, %v): %v\nstdout:\n%s\nstderr:\n%s", step, r.ExitCode, r.Err, err, r.Stdout, r.Stderr)
		}
		walkFlows(c.report, "", &c.flows)
		t.Logf("%s: exit %d, verdict %v, %d flow records", step, r.ExitCode, c.report["verdict"], len(c.flows))
		return c, r
	}

	// 1. The injected backend: pooled mTLS, probes and scrapes.
	c, r := capture("backend", "backend-app", "5s", true)
	// What the wire holds, read by tshark: no handshake on the app port,
	// but TLS records; the kubelet's probes from the node in cleartext.
	if hs := tshark(t, c.pcap, "tcp.port == 80 && tls.handshake", "frame.number"); len(hs) != 0 {
		t.Errorf("tshark: %d TLS handshake frames on port 80; the pooled connection should have been open before the capture", len(hs))
	}
	if recs := tshark(t, c.pcap, "tcp.port == 80 && tls.record.content_type == 23", "frame.number"); len(recs) == 0 {
		t.Errorf("tshark: no TLS application-data records on port 80")
	}
	probes := tshark(t, c.pcap, "ip.src == "+podnet.NodeIP+" && http.request", "tcp.dstport", "http.request.uri")
	t.Logf("probe and scrape requests from the node: %v", counted(probes))
	if !contains(probes, "15020\t/app-health/app/readyz") {
		t.Errorf("tshark: no kubelet probe of /app-health/app/readyz on 15020 from %s; saw %v", podnet.NodeIP, counted(probes))
	}
	// The analyzer: Istio mTLS, the mid-stream flow counted as Istio by
	// association, the probes reported as mesh infrastructure.
	if r.ExitCode != 0 || c.report["verdict"] != "encrypted-istio" {
		t.Errorf("backend: exit %d (%v), verdict %v; want 0 and encrypted-istio", r.ExitCode, r.Err, c.report["verdict"])
	}
	app := c.flowsTo(backendIP, 80)
	if len(app) == 0 {
		t.Errorf("no flow to the backend's port 80 in the report:\n%s", r.Stdout)
	}
	for _, f := range app {
		if f.Protocol != "TLS" || f.SNI != "" || len(f.ALPN) != 0 || f.Bytes == 0 || f.Verdict != "encrypted-istio" {
			t.Errorf("app flow %s → %s: protocol %s, SNI %q, ALPN %v, %d bytes, verdict %s; want TLS records without a handshake, Istio by association",
				f.Src, f.Dst, f.Protocol, f.SNI, f.ALPN, f.Bytes, f.Verdict)
		}
	}
	infra := 0
	for _, port := range []uint16{15020, 15021, 15090} {
		for _, f := range c.flowsTo(backendIP, port) {
			if !strings.HasPrefix(f.Src, podnet.NodeIP+":") {
				continue
			}
			infra++
			if f.Path == "flows" && !strings.Contains(f.Verdict, "infra") {
				t.Errorf("probe flow %s → %s is listed with the application flows (verdict %s); want it reported as mesh infrastructure", f.Src, f.Dst, f.Verdict)
			}
		}
	}
	if infra == 0 {
		t.Errorf("no flow from the node %s to 15020/15021/15090 in the report", podnet.NodeIP)
	}

	// 2. The frontend resolves the backend over UDP before its calls.
	svc, err := env.Kube.CoreV1().Services("default").Get(context.Background(), "backend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeDNS, err := env.Kube.CoreV1().Services(podnet.DNSNamespace).Get(context.Background(), podnet.DNSService, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the cluster DNS Service: %v", err)
	}
	c, r = capture("frontend", "frontend-app", "7s", false)
	answers := tshark(t, c.pcap, `dns.flags.response == 1 && dns.qry.name == "backend.default.svc.cluster.local" && dns.a`, "ip.src", "dns.a")
	if want := kubeDNS.Spec.ClusterIP + "\t" + svc.Spec.ClusterIP; !contains(answers, want) {
		t.Errorf("tshark: DNS answers %v, want one from the cluster DNS %s with the backend's ClusterIP %s", answers, kubeDNS.Spec.ClusterIP, svc.Spec.ClusterIP)
	}
	dns := 0
	for _, f := range c.flows {
		if strings.Contains(strings.ToUpper(f.Protocol), "DNS") || strings.HasSuffix(f.Dst, ":53") {
			dns++
		}
	}
	if dns == 0 {
		t.Errorf("the report lists no DNS flow (otherPackets %v):\n%s", c.report["otherPackets"], r.Stdout)
	}

	// 3. A client outside the mesh calls the backend in cleartext.
	client := outsideClient(t, env, backendIP)
	c, r = capture("outside client", "backend-app", "5s", true)
	if r.ExitCode != 2 || c.report["verdict"] != "mixed" {
		t.Errorf("with a client outside the mesh: exit %d (%v), verdict %v; want 2 and mixed", r.ExitCode, r.Err, c.report["verdict"])
	}
	named := false
	for _, f := range c.flowsTo(backendIP, 80) {
		if strings.HasPrefix(f.Src, client.String()+":") && f.Verdict == "plaintext" {
			named = true
		}
	}
	if !named {
		t.Errorf("the report does not name the outside client %s with a plaintext flow:\n%s", client, r.Stdout)
	}
}

// sniffCapture is one capture: the pcap, the JSON report and every flow
// record found anywhere in it (application flows and those listed apart).
type sniffCapture struct {
	pcap   string
	report map[string]any
	flows  []flowRecord
}

type flowRecord struct {
	// Path is the JSON key of the list holding the record ("flows" for the
	// application flows).
	Path                             string
	Src, Dst, Protocol, SNI, Verdict string
	ALPN                             []string
	Bytes                            int
}

func (c sniffCapture) flowsTo(ip netip.Addr, port uint16) []flowRecord {
	var out []flowRecord
	want := netip.AddrPortFrom(ip, port).String()
	for _, f := range c.flows {
		if f.Dst == want {
			out = append(out, f)
		}
	}
	return out
}

// walkFlows collects every object with src and dst strings, wherever the
// report lists it.
func walkFlows(v any, key string, out *[]flowRecord) {
	switch v := v.(type) {
	case map[string]any:
		src, ok1 := v["src"].(string)
		dst, ok2 := v["dst"].(string)
		if ok1 && ok2 {
			f := flowRecord{Path: key, Src: src, Dst: dst}
			f.Protocol, _ = v["protocol"].(string)
			f.SNI, _ = v["sni"].(string)
			f.Verdict, _ = v["verdict"].(string)
			if b, ok := v["bytes"].(float64); ok {
				f.Bytes = int(b)
			}
			if a, ok := v["alpn"].([]any); ok {
				for _, x := range a {
					s, _ := x.(string)
					f.ALPN = append(f.ALPN, s)
				}
			}
			*out = append(*out, f)
			return
		}
		for k, x := range v {
			walkFlows(x, k, out)
		}
	case []any:
		for _, x := range v {
			walkFlows(x, key, out)
		}
	}
}

// tshark lists the fields of the frames matching filter, one line each,
// with the lab's app and proxy ports decoded as TLS and HTTP.
func tshark(t *testing.T, pcap, filter string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", pcap, "-d", "tcp.port==80,tls", "-d", "tcp.port==15020,http", "-d", "tcp.port==15021,http",
		"-d", "tcp.port==15090,http", "-Y", filter, "-T", "fields"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark -Y %q: %v", filter, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func counted(lines []string) string {
	n := map[string]int{}
	for _, l := range lines {
		n[strings.ReplaceAll(l, "\t", " ")]++
	}
	var out []string
	for k, v := range n {
		out = append(out, fmt.Sprintf("%s ×%d", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func workshopPod(t *testing.T, env *labtest.Env, selector string) *corev1.Pod {
	t.Helper()
	pods, err := env.Kube.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %s: %v (%d found), want one", selector, err, len(pods.Items))
	}
	return &pods.Items[0]
}

// checkInjectedProbes checks what istiod's injector wrote: the app's probes
// rewritten to pilot-agent on 15020, istio-proxy probed on 15021.
func checkInjectedProbes(t *testing.T, p *corev1.Pod) {
	t.Helper()
	var got []string
	for _, pr := range podnet.ProbesFor(p) {
		got = append(got, pr.String())
	}
	for _, want := range []string{
		"app readiness HTTP :15020/app-health/app/readyz every 3s",
		"app liveness HTTP :15020/app-health/app/livez every 10s",
		"istio-proxy readiness HTTP :15021/healthz/ready every",
	} {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, want)
		}
		if !found {
			t.Errorf("injected pod %s has no probe %q; it has:\n%s", p.Name, want, strings.Join(got, "\n"))
		}
	}
}

// waitPooledCalls waits until the frontend has logged n calls to the
// backend pod over mTLS.
func waitPooledCalls(t *testing.T, env *labtest.Env, backendPod string, n int) {
	t.Helper()
	front := workshopPod(t, env, "app=frontend-app")
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		b, err := env.Kube.CoreV1().Pods("default").GetLogs(front.Name, &corev1.PodLogOptions{Container: podnet.AppContainer}).DoRaw(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		calls := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "call backend: 200 v1 "+backendPod+" ") && strings.Contains(line, " mtls ") {
				calls++
			}
		}
		last = fmt.Sprintf("%d mTLS calls to %s", calls, backendPod)
		return calls >= n, nil
	})
	if err != nil {
		t.Fatalf("the frontend never called %s over mTLS %d times: %s", backendPod, n, last)
	}
}

// outsideClient starts a pod outside the mesh (its own namespace, no
// sidecar) on the lab's node, with a network namespace as podnet gives
// pods, and has it curl the backend in cleartext five times a second until
// the test ends. It returns the client's IP.
func outsideClient(t *testing.T, env *labtest.Env, backend netip.Addr) netip.Addr {
	t.Helper()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "curl-client", nil, 1)
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=curl-client"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of curl-client: %v, %v", pods, err)
	}
	kp := pods.Items[0]
	addr, err := netip.ParseAddr(kp.Status.PodIP)
	if err != nil || kp.Spec.NodeName != lab.NodeName {
		t.Fatalf("pod %s: IP %q on node %q, want an IP on %s", kp.Name, kp.Status.PodIP, kp.Spec.NodeName, lab.NodeName)
	}
	p, remove, err := podnet.AttachPod(ns, kp.Name, string(kp.UID), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(remove) // before the namespace goes: KWOK reuses the IP
	url := "http://" + backend.String() + ":80/greetings"
	curl := func() (string, error) {
		out, err := exec.Command("ip", "netns", "exec", p.NS, "curl", "-sS", "-m", "2", url).CombinedOutput()
		return string(out), err
	}
	if out, err := curl(); err != nil || !strings.Contains(out, marker) {
		t.Fatalf("curl %s from %s: %v: %s", url, addr, err, out)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = curl()
			}
		}
	}()
	t.Cleanup(func() { close(stop); wg.Wait() })
	return addr
}
