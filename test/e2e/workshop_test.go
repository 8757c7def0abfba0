package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// Split tolerance: with the frontend calling ten times a second, at least
// minSplitCalls calls are counted; v2's share of a 50/50 split then has a
// standard deviation under 3 points, so 50 ± 12 fails a correct split about
// once in ten thousand runs.
const (
	minSplitCalls  = 300
	splitTolerance = 12.0
	marker         = "Hi TGN meetup"
)

// TestWorkshop runs the workshop on the lab's own app in namespace default
// and checks every flip: plaintext with the marker → Istio mTLS without it,
// 1/1 → 2/2, certificates verified to istiod's root, the app reachable
// through the ingress gateway, and a 50/50 split seen in the traffic. It
// leaves default as it found it.
func TestWorkshop(t *testing.T) {
	env := labtest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	restoreWorkshop(t, env) // a previous run that died half-way
	t.Cleanup(func() { restoreWorkshop(t, env) })

	sniff := func(step string) workshopSniff {
		t.Helper()
		r := env.Mesh(t, "sniff", "-n", "default", "deploy/backend-app", "--ssh-config", sshConfig,
			"--duration", "4s", "--grep", marker, "-o", "json")
		if r.Err != nil {
			t.Fatalf("%s: sniff: %v\n%s", step, r.Err, r.Stderr)
		}
		var rep workshopSniff
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			t.Fatalf("%s: sniff -o json: %v\n%s", step, err, r.Stdout)
		}
		t.Logf("%s: sniff verdict %s, %d flows, %d packets, %d hits of %q", step, rep.Verdict, len(rep.Flows), rep.Packets, rep.GrepHits, marker)
		return rep
	}

	// Before the mesh: one container per pod, the greeting in clear text.
	waitWorkshopPods(t, env, "app=frontend-app", 1)
	waitWorkshopPods(t, env, "app=backend-app", 1)
	if rep := sniff("before the mesh"); rep.Verdict != "plaintext" || rep.GrepHits == 0 {
		t.Fatalf("before the mesh: verdict %q with %d hits of %q, want plaintext with hits", rep.Verdict, rep.GrepHits, marker)
	}

	// Injection and restart: two containers per pod.
	if r := env.Mesh(t, "enable-injection", "default"); r.Err != nil {
		t.Fatalf("enable-injection: %v\n%s", r.Err, r.Stderr)
	}
	if r := env.Mesh(t, "restart", "default"); r.Err != nil {
		t.Fatalf("restart: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	waitWorkshopPods(t, env, "app=frontend-app", 2)
	waitWorkshopPods(t, env, "app=backend-app", 2)

	// The frontend's certificate chains to istiod's own CA.
	ca, err := istioca.LoadCA(ctx, env.Kube)
	if err != nil {
		t.Fatal(err)
	}
	var got certs.Report // one workload prints as one object
	r := env.Mesh(t, "certs", "-n", "default", "frontend-app", "-o", "json")
	for i := 0; r.Err != nil && strings.Contains(r.Stderr, "no forward found") && i < 50; i++ {
		time.Sleep(200 * time.Millisecond) // KWOK has not seen the new pod's PortForward yet
		r = env.Mesh(t, "certs", "-n", "default", "frontend-app", "-o", "json")
	}
	if r.Err != nil {
		t.Fatalf("certs frontend-app: %v\n%s", r.Err, r.Stderr)
	}
	if err := json.Unmarshal([]byte(r.Stdout), &got); err != nil || len(got.Certificates) == 0 {
		t.Fatalf("certs -o json: %v\n%s", err, r.Stdout)
	}
	if !got.Verdict.OK {
		t.Errorf("certs verdict failed: %v", got.Verdict.Failures())
	}
	root := got.Certificates[len(got.Certificates)-1]
	if root.Role != "root" || root.SHA256 != certs.Fingerprint(ca.Cert) {
		t.Errorf("certs root is %s %s (%s), want istiod's CA %s", root.Role, root.Subject, root.SHA256, certs.Fingerprint(ca.Cert))
	}
	if want := istioca.SPIFFEID("default", "frontend"); got.Certificates[0].SPIFFEID != want {
		t.Errorf("leaf identity %q, want %q", got.Certificates[0].SPIFFEID, want)
	}

	// Sidecar to sidecar: Istio mTLS, the greeting no longer readable.
	if rep := sniff("after injection"); rep.Verdict != "encrypted-istio" || rep.GrepHits != 0 {
		t.Fatalf("after injection: verdict %q with %d hits of %q, want encrypted-istio without hits", rep.Verdict, rep.GrepHits, marker)
	}

	// Through the ingress gateway, from outside the cluster.
	r = env.Mesh(t, "expose", "frontend", "-n", "default")
	if r.Err != nil {
		t.Fatalf("expose: %v\n%s", r.Err, r.Stderr)
	}
	url := strings.TrimSpace(r.Stdout)
	if want := fmt.Sprintf("http://%s:31080/", podnet.NodeIP); url != want {
		t.Errorf("expose printed %q, want %q", url, want)
	}
	body := workshopGet(t, url, `"mtls":true`)
	if !strings.Contains(body, marker) {
		t.Errorf("GET %s = %s, want the backend's greeting", url, body)
	}

	// v2, then half of the traffic to it.
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
	if r := env.Mesh(t, "split", "backend", "-n", "default", "50/50"); r.Err != nil {
		t.Fatalf("split: %v\n%s", r.Err, r.Stderr)
	}
	since := metav1.NewTime(time.Now().Add(time.Second)) // podnet's watch sees the split within it
	counts := workshopSplitCounts(t, env, since)
	total := counts["v1"] + counts["v2"]
	share := float64(counts["v2"]) * 100 / float64(total)
	t.Logf("50/50 split: %d calls to v1, %d to v2 (%.1f%% v2), %d failed", counts["v1"], counts["v2"], share, counts["failed"])
	if share < 50-splitTolerance || share > 50+splitTolerance || counts["failed"] > total/100 {
		t.Errorf("50/50 split: %v calls, v2 got %.1f%%, want 50 ± %.0f and under 1%% failed", counts, share, splitTolerance)
	}
}

type workshopSniff struct {
	Verdict  string `json:"verdict"`
	GrepHits int    `json:"grepHits"`
	Packets  int    `json:"packets"`
	Flows    []struct {
		Verdict string `json:"verdict"`
	} `json:"flows"`
}

// waitPods waits until the workload's pods have n containers, all ready,
// and podnet runs them (the frontend logs calls).
func waitWorkshopPods(t *testing.T, env *labtest.Env, selector string, containers int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := env.Kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		last = ""
		for _, p := range pods.Items {
			ready := 0
			for _, s := range p.Status.ContainerStatuses {
				if s.Ready {
					ready++
				}
			}
			last += fmt.Sprintf(" %s %d/%d %s", p.Name, ready, len(p.Spec.Containers), p.Status.Phase)
			if p.DeletionTimestamp != nil || len(p.Spec.Containers) != containers || ready != containers || p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		return len(pods.Items) == 1, nil
	})
	if err != nil {
		t.Fatalf("pods %s never became %d/%d:%s", selector, containers, containers, last)
	}
}

func workshopGet(t *testing.T, url, want string) string {
	t.Helper()
	var body string
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 50; i++ {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = fmt.Sprintf("HTTP %d %s", resp.StatusCode, b)
			if resp.StatusCode == http.StatusOK && strings.Contains(body, want) {
				return body
			}
		} else {
			body = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s: %s, want 200 with %s", url, body, want)
	return ""
}

// splitCounts reads the frontend's log (kubectl logs, served by KWOK from
// podnet's file) from since on until it holds minSplitCalls calls, and
// counts them by backend version.
func workshopSplitCounts(t *testing.T, env *labtest.Env, since metav1.Time) map[string]int {
	t.Helper()
	pods, err := env.Kube.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=frontend-app"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("finding the frontend pod: %v", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := env.Kube.CoreV1().Pods("default").GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: podnet.AppContainer, SinceTime: &since}).DoRaw(context.Background())
		if err != nil {
			t.Fatalf("kubectl logs of the frontend: %v", err)
		}
		counts := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || f[0] != "call" {
				continue
			}
			if f[2] != "200" {
				counts["failed"]++
				continue
			}
			counts[f[3]]++
		}
		if counts["v1"]+counts["v2"] >= minSplitCalls {
			return counts
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v calls logged by the frontend since %s", counts, since.Format(time.RFC3339))
		}
		time.Sleep(2 * time.Second)
	}
}

func workshopDeployment(y string) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	return &d, yaml.Unmarshal([]byte(y), &d)
}

// restoreWorkshop puts default back as the lab starts it: no injection, no
// v2, no routing objects, pods without sidecars.
func restoreWorkshop(t *testing.T, env *labtest.Env) {
	t.Helper()
	ctx := context.Background()
	del := func(err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("restoring default: %v", err)
		}
	}
	del(env.Kube.AppsV1().Deployments("default").Delete(ctx, "backend-app-v2", metav1.DeleteOptions{}))
	del(env.Istio.NetworkingV1().VirtualServices("default").Delete(ctx, "backend", metav1.DeleteOptions{}))
	del(env.Istio.NetworkingV1().DestinationRules("default").Delete(ctx, "backend", metav1.DeleteOptions{}))
	del(env.Istio.NetworkingV1().VirtualServices("default").Delete(ctx, "frontend-ingress", metav1.DeleteOptions{}))
	del(env.Istio.NetworkingV1().Gateways("default").Delete(ctx, "frontend-gateway", metav1.DeleteOptions{}))
	if r := env.Mesh(t, "disable-injection", "default"); r.Err != nil {
		t.Errorf("restoring default: disable-injection: %v\n%s", r.Err, r.Stderr)
	}
	if r := env.Mesh(t, "restart", "default"); r.Err != nil {
		t.Errorf("restoring default: restart: %v\n%s%s", r.Err, r.Stdout, r.Stderr)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := env.Kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if certs.HasProxy(&p) || p.Labels["version"] == "v2" {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Errorf("restoring default: pods with sidecars or of v2 remain: %v", err)
	}
}
