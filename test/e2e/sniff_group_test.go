package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestSniffGroup: `sniff deploy/backend-app` with the workshop's backend
// scaled to two replicas, spread over the lab's nodes when it has several
// (tolerating their taints), captures every pod: one capture per node, all
// at once, each filtered to its node's pod IPs, and the frontend's calls
// to both pods show in the report. With one node both pods share one
// capture on interface any.
func TestSniffGroup(t *testing.T) {
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	restoreWorkshop(t, env) // the workshop before the mesh: plaintext
	ctx := context.Background()
	deps := env.Kube.AppsV1().Deployments("default")
	orig, err := deps.Get(ctx, "backend-app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d, err := deps.Get(context.Background(), "backend-app", metav1.GetOptions{})
		if err != nil {
			t.Errorf("restoring backend-app: %v", err)
			return
		}
		d.Spec.Replicas, d.Spec.Template.Spec = orig.Spec.Replicas, orig.Spec.Template.Spec
		if _, err := deps.Update(context.Background(), d, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restoring backend-app: %v", err)
			return
		}
		if err := lab.WaitDeploymentReady(context.Background(), env.Kube, "default", "backend-app", 60*time.Second); err != nil {
			t.Errorf("restoring backend-app: %v", err)
		}
	})

	// Two replicas, at most one per node while there are two nodes.
	two := int32(2)
	d := orig.DeepCopy()
	d.Spec.Replicas = &two
	d.Spec.Template.Spec.Tolerations = append(d.Spec.Template.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	// Counted per ReplicaSet (pod-template-hash), so the old pod does not
	// skew where the new ones go.
	d.Spec.Template.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
		WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: d.Spec.Selector, MatchLabelKeys: []string{appsv1.DefaultDeploymentUniqueLabelKey}}}
	if _, err := deps.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := groupPods(t, env, d, 2)
	nodes := map[string][]*corev1.Pod{}
	for _, p := range pods {
		nodes[p.Spec.NodeName] = append(nodes[p.Spec.NodeName], p)
	}
	t.Logf("backend-app pods: %s on %s, %s on %s", pods[0].Name, pods[0].Spec.NodeName, pods[1].Name, pods[1].Spec.NodeName)
	front := workshopPod(t, env, "app=frontend-app")
	waitCallsTo(t, env, front.Name, pods)

	// One pod alone first: the time one capture takes here and now.
	const duration = 6 * time.Second
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	start := time.Now()
	one := env.Mesh(t, "sniff", "-n", "default", pods[0].Name, "--ssh-config", sshConfig, "--duration", duration.String(), "-o", "json")
	single := time.Since(start)
	if one.ExitCode != 0 {
		t.Fatalf("sniff %s: exit %d: %v\n%s", pods[0].Name, one.ExitCode, one.Err, one.Stderr)
	}
	start = time.Now()
	r := env.Mesh(t, "sniff", "-n", "default", "deploy/backend-app", "--ssh-config", sshConfig,
		"--duration", duration.String(), "-o", "json", "--expect", "plaintext")
	elapsed := time.Since(start)
	t.Logf("sniff of %d pods on %d nodes, --duration %s: %s wall time (one pod: %s)\nstderr:\n%s", len(pods), len(nodes), duration,
		elapsed.Round(10*time.Millisecond), single.Round(10*time.Millisecond), r.Stderr)
	if r.ExitCode != 0 {
		t.Fatalf("exit %d: %v\nstdout:\n%s\nstderr:\n%s", r.ExitCode, r.Err, r.Stdout, r.Stderr)
	}
	var report map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &report); err != nil {
		t.Fatalf("sniff -o json: %v\n%s", err, r.Stdout)
	}
	if report["verdict"] != "plaintext" {
		t.Errorf("verdict %v, want plaintext (the workshop before the mesh)", report["verdict"])
	}
	var flows []flowRecord
	walkFlows(report, "", &flows)
	for _, p := range pods {
		dst := netip.AddrPortFrom(netip.MustParseAddr(p.Status.PodIP), 80).String()
		n := 0
		for _, f := range flows {
			if f.Dst == dst && strings.HasPrefix(f.Src, front.Status.PodIP+":") {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no flow from the frontend %s to %s (pod %s on %s) in the report:\n%s", front.Status.PodIP, dst, p.Name, p.Spec.NodeName, r.Stdout)
		}
	}

	if len(nodes) == 1 {
		// One node: one capture of both pods, on every interface.
		want := "interface any: (host " + pods[0].Status.PodIP + " or host " + pods[1].Status.PodIP + ")"
		if !strings.Contains(r.Stderr, want) || report["nodes"] != nil {
			t.Errorf("want one capture with %q and a one-node report; stderr:\n%s", want, r.Stderr)
		}
		t.Logf("the lab runs these pods on one node: the capture on two nodes was not exercised")
		return
	}
	// Two nodes: each captured once, in parallel, with its own pod's IP.
	nodeReports, _ := report["nodes"].([]any)
	if len(nodeReports) != 2 {
		t.Fatalf("want 2 node reports, got %d:\n%s", len(nodeReports), r.Stdout)
	}
	for _, nr := range nodeReports {
		m := nr.(map[string]any)
		node, _ := m["node"].(string)
		p := nodes[node]
		if len(p) != 1 {
			t.Errorf("node report for %q, which runs %d backend pods", node, len(p))
			continue
		}
		ips, _ := m["podIPs"].([]any)
		if len(ips) != 1 || ips[0] != p[0].Status.PodIP || m["error"] != nil {
			t.Errorf("node %s: podIPs %v, error %v; want [%s]", node, ips, m["error"], p[0].Status.PodIP)
		}
		for _, want := range []string{node + ": sniffing pod default/" + p[0].Name + " (" + p[0].Status.PodIP + ") on ",
			node + ": capturing on ", ": host " + p[0].Status.PodIP + "\n"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
			}
		}
	}
	// In parallel: one after the other would take twice the one pod's time.
	if elapsed >= single+duration*3/4 {
		t.Errorf("two nodes took %s, one pod %s, with --duration %s: the captures did not run in parallel", elapsed, single, duration)
	}

	// The table: each node's summary, then the overall verdict.
	r = env.Mesh(t, "sniff", "-n", "default", "-l", "app=backend-app", "--ssh-config", sshConfig, "--duration", "2s")
	if r.ExitCode != 0 {
		t.Fatalf("exit %d: %v\nstdout:\n%s\nstderr:\n%s", r.ExitCode, r.Err, r.Stdout, r.Stderr)
	}
	for _, p := range pods {
		if want := "=== node " + p.Spec.NodeName + ": default/" + p.Name + " (" + p.Status.PodIP + ")\n"; !strings.Contains(r.Stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
		}
	}
	if want := "\nOverall verdict: PLAINTEXT (2 pods on 2 nodes)\n"; !strings.HasSuffix(r.Stdout, want) {
		t.Errorf("stdout does not end with %q:\n%s", want, r.Stdout)
	}
}

// groupPods waits until d has exactly n running pods of its current
// template, each with an IP, and returns them sorted by name.
func groupPods(t *testing.T, env *labtest.Env, d *appsv1.Deployment, n int) []*corev1.Pod {
	t.Helper()
	var out []*corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 300*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		cur, err := env.Kube.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		list, err := env.Kube.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + d.Name})
		if err != nil {
			return false, nil
		}
		out, last = nil, ""
		for i := range list.Items {
			p := &list.Items[i]
			last += " " + p.Name + "@" + p.Spec.NodeName + "/" + string(p.Status.Phase)
			if p.DeletionTimestamp != nil {
				return false, nil
			}
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				out = append(out, p)
			}
		}
		done := cur.Status.ObservedGeneration >= cur.Generation && cur.Status.UpdatedReplicas == int32(n) &&
			cur.Status.ReadyReplicas == int32(n) && len(list.Items) == n && len(out) == n
		return done, nil
	})
	if err != nil {
		t.Fatalf("%s never ran %d pods: %v (last:%s)", d.Name, n, err, last)
	}
	if out[0].Name > out[1].Name {
		out[0], out[1] = out[1], out[0]
	}
	return out
}

// waitCallsTo waits until the frontend's log shows calls answered by each
// of the pods, so the capture has traffic to both.
func waitCallsTo(t *testing.T, env *labtest.Env, front string, pods []*corev1.Pod) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		b, err := env.Kube.CoreV1().Pods("default").GetLogs(front, &corev1.PodLogOptions{Container: podnet.AppContainer, TailLines: ptrTo(int64(200))}).DoRaw(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = string(b)
		for _, p := range pods {
			if !strings.Contains(last, " "+p.Name+" "+p.Status.PodIP+" ") {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the frontend never called both backend pods: %v\nlast log:\n%s", err, last)
	}
}

func ptrTo[T any](v T) *T { return &v }
