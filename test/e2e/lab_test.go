package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestLabRunsPods proves the control plane schedules and KWOK runs pods.
func TestLabRunsPods(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 2)
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("got %d pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.Spec.NodeName != lab.NodeName {
			t.Errorf("pod %s: phase %s, IP %q, node %q; want Running with an IP on %s", p.Name, p.Status.Phase, p.Status.PodIP, p.Spec.NodeName, lab.NodeName)
		}
	}
}

// TestLabInjectsSidecars proves injection is istiod's, for real: label the
// namespace, restart, and the new pod has istio-init and istio-proxy and is
// 2/2 Ready.
func TestLabInjectsSidecars(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)

	patch := `{"metadata":{"labels":{"istio-injection":"enabled"}}}`
	if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	restart := `{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"` + time.Now().Format(time.RFC3339) + `"}}}}}`
	if _, err := env.Kube.AppsV1().Deployments(ns).Patch(ctx, "web", types.StrategicMergePatchType, []byte(restart), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitDeploymentReady(ctx, env.Kube, ns, "web", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	pods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	var running []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			running = append(running, p)
		}
	}
	if len(running) != 1 {
		t.Fatalf("got %d live pods after the restart, want 1", len(running))
	}
	p := running[0]
	names := func(cs []corev1.Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got := strings.Join(names(p.Spec.InitContainers), ","); got != "istio-init" {
		t.Errorf("init containers = %q, want istio-init", got)
	}
	if got := strings.Join(names(p.Spec.Containers), ","); got != "app,istio-proxy" {
		t.Errorf("containers = %q, want app,istio-proxy", got)
	}
	ready := 0
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready {
			ready++
		}
	}
	if ready != 2 {
		t.Errorf("pod %s is %d/2 ready", p.Name, ready)
	}
	if p.Annotations["sidecar.istio.io/status"] == "" {
		t.Errorf("pod %s lacks istiod's sidecar.istio.io/status annotation", p.Name)
	}
}

// TestLabValidatesIstioSchema proves the API server checks Istio's CRD
// schema: a string weight is rejected.
func TestLabValidatesIstioSchema(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": "reviews", "namespace": ns},
		"spec": map[string]any{
			"hosts": []any{"reviews"},
			"http": []any{map[string]any{"route": []any{
				map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v1"}, "weight": "90"},
				map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v2"}, "weight": 10},
			}}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	_, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), vs, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "weight") {
		t.Fatalf("creating a VirtualService with weight \"90\": got %v, want an Invalid error about weight", err)
	}
}

// TestLabValidatesWithIstiod proves istiod's validating webhook runs: a
// VirtualService the schema accepts but Istio does not (weight -5) is denied
// by the webhook (the CRD schema allows negative weights).
func TestLabValidatesWithIstiod(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": "negative", "namespace": ns},
		"spec": map[string]any{
			"hosts": []any{"reviews"},
			"http": []any{map[string]any{"route": []any{
				map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v1"}, "weight": -5},
				map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v2"}, "weight": 105},
			}}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	_, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), vs, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `admission webhook "validation.istio.io" denied the request: configuration is invalid: weight -5 < 0`) {
		t.Fatalf("creating a VirtualService with weight -5: got %v, want a denial from istiod's validation webhook", err)
	}
}

// TestVersionThroughKubectl runs `kubectl mesh version` the way users do:
// kubectl finds kubectl-mesh on PATH.
func TestVersionThroughKubectl(t *testing.T) {
	env := labtest.Get(t)
	binDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(binDir, "kubectl-mesh"),
		"-ldflags", "-X github.com/kubectl-mesh/kubectl-mesh/pkg/version.Version=v0.0.0-e2e",
		"github.com/kubectl-mesh/kubectl-mesh/cmd/kubectl-mesh")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-mesh: %v\n%s", err, out)
	}
	kubectl := filepath.Join(env.Lab.BinDir, "kubectl-"+lab.KubeVersion)
	cmd := exec.Command(kubectl, "mesh", "version", "--kubeconfig", env.Kubeconfig)
	cmd.Env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl mesh version: %v\n%s", err, out)
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`(?m)^Client Version: v0\.0\.0-e2e \(commit none, built unknown, go1\.[0-9.]+, linux/amd64\)$`),
		regexp.MustCompile(`(?m)^Server Version: v1\.35\.0$`),
		regexp.MustCompile(`(?m)^Istio Control Plane: 1\.31\.0 \(revision default; injector istio-sidecar-injector\)$`),
	}
	for _, re := range want {
		if !re.Match(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
}

// TestVersionJSON checks the machine-readable form against the lab.
func TestVersionJSON(t *testing.T) {
	env := labtest.Get(t)
	res := env.Mesh(t, "version", "-o", "json")
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Stderr)
	}
	var got struct {
		ServerVersion struct{ GitVersion string }
		MeshVersions  []struct{ Revision, Version, Namespace, Injector string }
	}
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, res.Stdout)
	}
	if got.ServerVersion.GitVersion != lab.KubeVersion {
		t.Errorf("serverVersion.gitVersion = %q, want %q", got.ServerVersion.GitVersion, lab.KubeVersion)
	}
	want := []struct{ Revision, Version, Namespace, Injector string }{{"default", lab.IstioVersion, "istio-system", "istio-sidecar-injector"}}
	if fmt.Sprint(got.MeshVersions) != fmt.Sprint(want) {
		t.Errorf("meshVersions = %+v, want %+v", got.MeshVersions, want)
	}
}

// TestVersionUnreachable: a server that does not answer is an error after
// the client version, and --client never dials.
func TestVersionUnreachable(t *testing.T) {
	// Port 1 on loopback: nothing listens there.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	res := labtest.RunMesh([]string{"--kubeconfig", kc, "version"}, "")
	if res.ExitCode != 1 || !strings.HasPrefix(res.Stdout, "Client Version: ") ||
		!strings.Contains(res.Stderr, "error: cannot reach the Kubernetes API server: ") || !strings.Contains(res.Stderr, "127.0.0.1:1") {
		t.Errorf("got exit %d\nstdout: %s\nstderr: %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	res = labtest.RunMesh([]string{"--kubeconfig", kc, "version", "--client"}, "")
	if res.ExitCode != 0 || res.Stderr != "" {
		t.Errorf("--client: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
}

// TestLabNodes checks the Node objects against podnet's plan: each node's
// InternalIP is its namespace's address, node2 carries its pod subnet and
// its taint, node1 neither, and both are Ready.
func TestLabNodes(t *testing.T) {
	env := labtest.Get(t)
	plan, err := podnet.Plan(lab.NodeNames()...)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for i, n := range plan {
		node, err := env.Kube.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := "NotReady"
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = "Ready"
			}
		}
		var taints []string
		for _, tn := range node.Spec.Taints {
			taints = append(taints, tn.Key+":"+string(tn.Effect))
		}
		got = append(got, fmt.Sprintf("%s %s %s podCIDR=%q taints=%v", node.Name, ready, nodeInternalIP(node), node.Spec.PodCIDR, taints))
		cidr, taint := "", "[]"
		if i > 0 {
			cidr, taint = n.PodCIDR.String(), "["+lab.Node2Taint+":NoSchedule]"
		}
		want = append(want, fmt.Sprintf("%s Ready %s podCIDR=%q taints=%s", n.Name, n.IP, cidr, taint))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("nodes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
