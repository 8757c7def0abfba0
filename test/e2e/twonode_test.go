package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestTwoNodes runs the workshop across the lab's two nodes: backend v2 is
// pinned to node2, the frontend stays on node1 and calls it through the
// backend Service. The calls leave node1 through its uplink with the real
// pod IPs (a tcpdump on node1's uplink sees them) and arrive on node2,
// where `kubectl mesh sniff` of the v2 pod, over SSH to node2 with the
// lab's SSH config, sees the frontend's pod IP.
func TestTwoNodes(t *testing.T) {
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	ctx := context.Background()
	plan, err := podnet.Plan(lab.NodeNames()...)
	if err != nil {
		t.Fatal(err)
	}
	node1, node2 := plan[0], plan[1]
	restoreWorkshop(t, env) // a previous run that died half-way
	t.Cleanup(func() { restoreWorkshop(t, env) })

	n2, err := env.Kube.CoreV1().Nodes().Get(ctx, lab.Node2Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n2.Spec.PodCIDR != node2.PodCIDR.String() || len(n2.Spec.Taints) != 1 || n2.Spec.Taints[0].Key != lab.Node2Taint || nodeInternalIP(n2) != node2.IP.String() {
		t.Errorf("node %s: podCIDR %q, taints %v, InternalIP %q; want %s, %s, %s", n2.Name, n2.Spec.PodCIDR, n2.Spec.Taints, nodeInternalIP(n2), node2.PodCIDR, lab.Node2Taint, node2.IP)
	}

	objs, err := workshopDeployment(lab.BackendV2YAML)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kube.AppsV1().Deployments("default").Create(ctx, objs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitDeploymentReady(ctx, env.Kube, "default", "backend-app-v2", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	front := workshopPod(t, env, "app=frontend-app")
	v2 := workshopPod(t, env, "app=backend-app,version=v2")
	frontIP, v2IP := netip.MustParseAddr(front.Status.PodIP), netip.MustParseAddr(v2.Status.PodIP)
	if front.Spec.NodeName != node1.Name || !node1.PodCIDR.Contains(frontIP) {
		t.Fatalf("frontend %s at %s on %q, want an IP of %s on %s", front.Name, frontIP, front.Spec.NodeName, node1.PodCIDR, node1.Name)
	}
	if v2.Spec.NodeName != node2.Name || !node2.PodCIDR.Contains(v2IP) || v2.Status.HostIP != node2.IP.String() {
		t.Fatalf("backend v2 %s at %s on %q (host IP %s), want an IP of %s on %s (%s)", v2.Name, v2IP, v2.Spec.NodeName, v2.Status.HostIP, node2.PodCIDR, node2.Name, node2.IP)
	}

	// The frontend on node1 reaches the backend on node2.
	waitFrontendCalls(t, env, front.Name, "call backend: 200 v2 "+v2.Name+" "+v2IP.String()+" ", 5)

	// A capture on node1's uplink, as an operator would run it on the node.
	uplinkPcap := filepath.Join(t.TempDir(), "node1-uplink.pcap")
	dump := exec.Command("ip", "netns", "exec", node1.NS, "tcpdump", "-i", "uplink", "-nn", "-U", "-w", uplinkPcap,
		"tcp and host "+frontIP.String()+" and host "+v2IP.String())
	if out, err := os.Create(uplinkPcap + ".log"); err == nil {
		dump.Stdout, dump.Stderr = out, out
		defer out.Close()
	}
	if err := dump.Start(); err != nil {
		t.Fatalf("tcpdump on %s's uplink: %v", node1.Name, err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = dump.Process.Signal(syscall.SIGTERM)
			_ = dump.Wait()
		}
	}
	defer stop()

	// sniff of the v2 pod captures on node2, over SSH.
	pcap := filepath.Join(t.TempDir(), "node2.pcap")
	r := env.Mesh(t, "sniff", "-n", "default", "pod/"+v2.Name, "--ssh-config", podnet.SSHConfigFile(env.Lab.PodnetDir()),
		"--duration", "4s", "-o", "json", "-w", pcap)
	stop()
	var c sniffCapture
	if err := json.Unmarshal([]byte(r.Stdout), &c.report); err != nil {
		t.Fatalf("sniff -o json (exit %d, %v): %v\nstdout:\n%s\nstderr:\n%s", r.ExitCode, r.Err, err, r.Stdout, r.Stderr)
	}
	walkFlows(c.report, "", &c.flows)
	if !strings.Contains(r.Stderr, node2.Name) {
		t.Errorf("sniff's progress does not name node %s:\n%s", node2.Name, r.Stderr)
	}
	var seen []string
	fromFrontend := 0
	for _, f := range c.flows {
		seen = append(seen, f.Src+" → "+f.Dst)
		if strings.HasPrefix(f.Src, frontIP.String()+":") && f.Dst == netip.AddrPortFrom(v2IP, 80).String() {
			fromFrontend++
		}
	}
	if fromFrontend == 0 {
		t.Errorf("sniff on %s saw no flow from the frontend %s to %s:80; flows: %v\nstderr:\n%s", node2.Name, frontIP, v2IP, seen, r.Stderr)
	}
	onWire := tshark(t, pcap, "ip.src == "+frontIP.String()+" && ip.dst == "+v2IP.String()+" && tcp.dstport == 80", "ip.src")
	if len(onWire) == 0 {
		t.Errorf("the pcap sniff wrote on %s holds no packet from %s to %s:80", node2.Name, frontIP, v2IP)
	}

	// sniff --via pod: a capture pod on node2, whose exec the lab's shims
	// run in node2's namespace, finds the v2 pod's veth there.
	if err := env.Lab.EnsureNodeExec(ctx); err != nil {
		t.Fatal(err)
	}
	r = env.Mesh(t, "sniff", "-n", "default", "pod/"+v2.Name, "--via", "pod", "--duration", "3s", "-o", "json")
	var viaPod sniffCapture
	if err := json.Unmarshal([]byte(r.Stdout), &viaPod.report); err != nil {
		t.Fatalf("sniff --via pod -o json (exit %d, %v): %v\nstdout:\n%s\nstderr:\n%s", r.ExitCode, r.Err, err, r.Stdout, r.Stderr)
	}
	walkFlows(viaPod.report, "", &viaPod.flows)
	viaFrontend := 0
	for _, f := range viaPod.flows {
		if strings.HasPrefix(f.Src, frontIP.String()+":") && f.Dst == netip.AddrPortFrom(v2IP, 80).String() {
			viaFrontend++
		}
	}
	if want := "capturing on node " + node2.Name + " (pod default/mesh-sniff-"; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, " interface kml") || viaFrontend == 0 {
		t.Errorf("sniff --via pod of %s: %d flows from the frontend; want some, and stderr with %q and the pod's veth:\n%s", v2.Name, viaFrontend, want, r.Stderr)
	}
	noCapturePod(t, env, "default")

	// The same flow left node1 through its uplink, with the pod IPs.
	left := tshark(t, uplinkPcap, "ip.src == "+frontIP.String()+" && ip.dst == "+v2IP.String()+" && tcp.dstport == 80", "ip.src", "ip.dst")
	if len(left) == 0 {
		log, _ := os.ReadFile(uplinkPcap + ".log")
		t.Errorf("tcpdump on %s's uplink saw no packet from %s to %s:80 (tcpdump: %s)", node1.Name, frontIP, v2IP, log)
	} else {
		t.Logf("%d packets frontend → backend v2 on %s's uplink, %d in sniff's capture on %s, %d flows in its report", len(left), node1.Name, len(onWire), node2.Name, fromFrontend)
	}
}

func nodeInternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// waitFrontendCalls waits until the frontend pod has logged n lines with
// want in them.
func waitFrontendCalls(t *testing.T, env *labtest.Env, frontPod, want string, n int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		b, err := env.Kube.CoreV1().Pods("default").GetLogs(frontPod, &corev1.PodLogOptions{Container: podnet.AppContainer}).DoRaw(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		calls := strings.Count(string(b), want)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		last = lines[len(lines)-1]
		return calls >= n, nil
	})
	if err != nil {
		t.Fatalf("the frontend never logged %q %d times; last line: %s", want, n, last)
	}
}
