package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestRestartInjectsSidecars is the workshop flow: enable, restart, and
// every pod is 2/2 with istiod's real sidecar; a second restart has nothing
// to do.
func TestRestartInjectsSidecars(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "frontend", nil, 2)
	env.Deployment(t, ns, "backend", nil, 1)
	env.Deployment(t, ns, "opted-out", map[string]string{"sidecar.istio.io/inject": "false"}, 1)

	need := fmt.Sprintf("2 workloads need a restart: deployment/backend, deployment/frontend — run: kubectl mesh restart %s\n", ns)
	expect(t, "enable", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n", need, 0)

	plan := env.Mesh(t, "restart", ns, "--dry-run")
	if got, want := fmt.Sprint(tableRows(t, plan.Stdout)), fmt.Sprint([][]string{
		{ns + "/deployment/backend", "1", "0/1", "1/1", "pods", "have", "no", "sidecar"},
		{ns + "/deployment/frontend", "2", "0/2", "2/2", "pods", "have", "no", "sidecar"}}); got != want {
		t.Fatalf("dry run rows = %s, want %s", got, want)
	}

	res := env.Mesh(t, "restart", ns)
	if res.ExitCode != 0 {
		t.Fatalf("restart: %v\n%s", res.Err, res.Stderr)
	}
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{
		{ns + "/deployment/backend", "1", "1", "1/1", "restarted"},
		{ns + "/deployment/frontend", "2", "2", "2/2", "restarted"}}); got != want {
		t.Fatalf("restart rows = %s, want %s", got, want)
	}
	// Progress went to stderr, ending with each workload's result.
	for _, w := range []string{"backend", "frontend"} {
		if !strings.Contains(res.Stderr, ns+"/deployment/"+w+": restarted\n") {
			t.Errorf("stderr lacks the final progress line for %s:\n%s", w, res.Stderr)
		}
	}
	assertPods(t, env, ns, "frontend", true)
	assertPods(t, env, ns, "backend", true)
	assertPods(t, env, ns, "opted-out", false)

	again := env.Mesh(t, "restart", ns)
	expect(t, "restart again", again, "", "nothing to restart: every pod already matches what Istio injects now (use --all to restart anyway)\n", 0)

	// disable → restart removes the sidecars again.
	expect(t, "disable", env.Mesh(t, "disable-injection", ns), "namespace/"+ns+" labeled\n", need, 0)
	res = env.Mesh(t, "restart", ns, "-l", "app=backend")
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{
		{ns + "/deployment/backend", "1", "1", "0/1", "(none", "wanted)", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart after disable: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, ns, "backend", false)
}

// TestRestartTimeoutOthersContinue: one rollout can never finish (its new
// pod asks for a node that does not exist); it hits --timeout and is
// reported, the other workload is restarted, and the exit code is 1.
func TestRestartTimeoutOthersContinue(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "good", nil, 1)
	env.Deployment(t, ns, "stuck", nil, 1)
	expect(t, "enable", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n",
		fmt.Sprintf("2 workloads need a restart: deployment/good, deployment/stuck — run: kubectl mesh restart %s\n", ns), 0)
	patch := `{"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/hostname":"no-such-node"}}}}}`
	if _, err := env.Kube.AppsV1().Deployments(ns).Patch(ctx, "stuck", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	res := env.Mesh(t, "restart", ns, "--timeout", "5s")
	if res.ExitCode != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	rows := tableRows(t, res.Stdout)
	if len(rows) != 2 || fmt.Sprint(rows[0]) != fmt.Sprint([]string{ns + "/deployment/good", "1", "1", "1/1", "restarted"}) {
		t.Fatalf("rows = %v", rows)
	}
	stuck := strings.Join(rows[1], " ")
	// PODS BEFORE is 1 or 2: the pending pod of the nodeSelector change may
	// or may not exist yet when restart looks.
	if !strings.HasPrefix(stuck, ns+"/deployment/stuck ") || !strings.Contains(stuck, "failed: rollout not finished after --timeout 5s: Waiting for deployment \"stuck\" rollout to finish:") {
		t.Fatalf("stuck row = %q", stuck)
	}
	if !strings.Contains(res.Err.Error(), "1 of 2 workloads failed to restart:") {
		t.Fatalf("error = %v", res.Err)
	}
	assertPods(t, env, ns, "good", true)
}

func TestRestartPausedAndBarePods(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "paused", nil, 1)
	zero := int64(0)
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug", Labels: map[string]string{"app": "debug"}},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "debug", Image: "kubectl-mesh-lab/debug"}}}}
	if _, err := env.Kube.CoreV1().Pods(ns).Create(ctx, bare, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kube.AppsV1().Deployments(ns).Patch(ctx, "paused", types.MergePatchType, []byte(`{"spec":{"paused":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Mesh(t, "enable-injection", ns)

	res := env.Mesh(t, "restart", ns)
	want := fmt.Sprint([][]string{
		strings.Fields(ns + "/deployment/paused 1 - - skipped: deployment is paused; run kubectl rollout resume, then restart again"),
		strings.Fields(ns + "/pod/debug 1 - - not deleted: bare pod with no controller; recreate it yourself or pass --delete-bare-pods")})
	if got := fmt.Sprint(tableRows(t, res.Stdout)); res.ExitCode != 0 || got != want {
		t.Fatalf("exit %d rows %s\nwant %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	if _, err := env.Kube.CoreV1().Pods(ns).Get(ctx, "debug", metav1.GetOptions{}); err != nil {
		t.Fatalf("bare pod: %v", err)
	}

	res = env.Mesh(t, "restart", ns, "-l", "app=debug", "--delete-bare-pods")
	want = fmt.Sprint([][]string{strings.Fields(ns + "/pod/debug 1 - - deleted: bare pod deleted; nothing recreates it")})
	if got := fmt.Sprint(tableRows(t, res.Stdout)); res.ExitCode != 0 || got != want {
		t.Fatalf("exit %d rows %s\nwant %s", res.ExitCode, got, want)
	}
}

// TestRestartRevisionTag: a revision tag is an extra webhook configuration
// pointing at an existing revision, so it can be real in the lab: pods of a
// namespace labelled istio.io/rev=prod are injected by the default istiod
// and carry revision default, which is what the tag means.
func TestRestartRevisionTag(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)
	revisionTag(t, env, "prod")

	expect(t, "enable --revision prod", env.Mesh(t, "enable-injection", ns, "--revision", "prod"), "namespace/"+ns+" labeled\n",
		fmt.Sprintf("1 workload needs a restart: deployment/web — run: kubectl mesh restart %s\n", ns), 0)
	res := env.Mesh(t, "restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{{ns + "/deployment/web", "1", "1", "1/1", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, ns, "web", true)
}
