package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestRestartStatefulSetAndDaemonSet: the three workload kinds are restarted
// together, each awaited on the shared watch of its kind, and -o wide says
// how long each took from its restart to its verified pods.
func TestRestartStatefulSetAndDaemonSet(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)
	zero := int64(0)
	template := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/" + app}}}}
	}
	two := int32(2)
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: template("db")}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: template("agent")}}
	if _, err := env.Kube.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kube.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait until both run their pods, so restart sees them without sidecars.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := env.Kube.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		d, err := env.Kube.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return s.Status.ReadyReplicas == 2 && d.Status.DesiredNumberScheduled == 1 && d.Status.NumberReady == 1, nil
	})
	if err != nil {
		t.Fatal("statefulset/daemonset never ready:", err)
	}
	expect(t, "enable", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n",
		fmt.Sprintf("3 workloads need a restart: deployment/web, statefulset/db, daemonset/agent — run: kubectl mesh restart %s\n", ns), 0)

	res := env.Mesh(t, "restart", ns, "-o", "wide")
	if res.ExitCode != 0 {
		t.Fatalf("restart: %v\n%s\n%s", res.Err, res.Stdout, res.Stderr)
	}
	if head := strings.Fields(strings.SplitN(res.Stdout, "\n", 2)[0]); fmt.Sprint(head) != "[WORKLOAD PODS BEFORE PODS AFTER SIDECAR TOOK RESULT]" {
		t.Fatalf("header = %v", head)
	}
	var got [][]string
	for _, row := range tableRows(t, res.Stdout) {
		took, err := time.ParseDuration(row[4])
		if err != nil || took <= 0 || took > time.Minute {
			t.Errorf("%s: TOOK %q is not a plausible duration", row[0], row[4])
		}
		got = append(got, append(row[:4:4], row[5:]...))
	}
	want := [][]string{
		{ns + "/deployment/web", "1", "1", "1/1", "restarted"},
		{ns + "/statefulset/db", "2", "2", "2/2", "restarted"},
		{ns + "/daemonset/agent", "1", "1", "1/1", "restarted"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows = %v\nwant %v\n%s", got, want, res.Stderr)
	}
	for _, app := range []string{"web", "db", "agent"} {
		assertPods(t, env, ns, app, true)
	}
}

// TestRestartWatchForbidden: a user who may list and patch Deployments but
// not watch them gets the watch refused by name at once, not a timeout.
func TestRestartWatchForbidden(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)
	if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx, ns, "application/merge-patch+json", []byte(`{"metadata":{"labels":{"istio-injection":"enabled"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	user := "bob-" + ns
	kc := env.UserKubeconfig(t, user, nil)
	env.Grant(t, "", "mesh-no-watch-"+ns, user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "patch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"statefulsets", "daemonsets"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: []string{"get", "list"}},
	})
	waitCan(t, env, kc, ns)

	start := time.Now()
	res := env.Mesh(t, "--kubeconfig", kc, "restart", ns, "--timeout", "1m")
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("restart took %s: the forbidden watch should end it, not --timeout", took)
	}
	if res.Stdout == "" {
		t.Fatalf("exit %d, no table; stderr:\n%s", res.ExitCode, res.Stderr)
	}
	rows := tableRows(t, res.Stdout)
	row := strings.Join(rows[0], " ")
	// PODS AFTER depends on how far the rollout got when the watch was
	// refused: the patch was allowed, and the cluster carries it out.
	msg := "failed: cannot watch deployments in namespace " + ns + `: forbidden; ask a cluster admin to grant "watch" on deployments:`
	if res.ExitCode != 1 || len(rows) != 1 || rows[0][0] != ns+"/deployment/web" || !strings.Contains(row, msg) {
		t.Fatalf("exit %d row %q\nwant %q\n%s", res.ExitCode, row, msg, res.Stderr)
	}
}

// TestRestartAllNamespaces: with -A the rollouts are followed on
// cluster-wide watches; two namespaces, one selector.
func TestRestartAllNamespaces(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	a, b := env.Namespace(t, nil), env.Namespace(t, nil)
	app := "web-" + b[len(b)-4:] // unique in the lab, so -A touches nothing else
	for _, ns := range []string{a, b} {
		env.Deployment(t, ns, app, nil, 1)
		if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx, ns, "application/merge-patch+json", []byte(`{"metadata":{"labels":{"istio-injection":"enabled"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	res := env.Mesh(t, "restart", "-A", "-l", "app="+app)
	want := [][]string{
		{a + "/deployment/" + app, "1", "1", "1/1", "restarted"},
		{b + "/deployment/" + app, "1", "1", "1/1", "restarted"},
	}
	if a > b {
		want[0], want[1] = want[1], want[0]
	}
	if got := tableRows(t, res.Stdout); res.ExitCode != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("exit %d rows %v\nwant %v\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, a, app, true)
	assertPods(t, env, b, app, true)
}

// TestRestartOnDeleteStatefulSet: a StatefulSet that replaces pods only when
// they are deleted is reported with what to do, and left alone.
func TestRestartOnDeleteStatefulSet(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	one, zero := int32(1), int64(0)
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/db"}}}}}}
	if _, err := env.Kube.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := env.Kube.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
		return err == nil && s.Status.ReadyReplicas == 1, err
	}); err != nil {
		t.Fatal("statefulset never ready:", err)
	}
	expect(t, "enable", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n",
		fmt.Sprintf("1 workload needs a restart: statefulset/db — run: kubectl mesh restart %s\n", ns), 0)

	res := env.Mesh(t, "restart", ns)
	row := ns + "/statefulset/db 1 - - skipped: updateStrategy OnDelete: new pods come only when old ones are deleted; delete them one at a time (kubectl delete pod -n " + ns + " -l app=db)"
	if rows := tableRows(t, res.Stdout); res.ExitCode != 0 || len(rows) != 1 || strings.Join(rows[0], " ") != row {
		t.Fatalf("exit %d rows %v\nwant %s\n%s", res.ExitCode, rows, row, res.Stderr)
	}
	s, err := env.Kube.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, patched := s.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; patched {
		t.Error("the OnDelete StatefulSet was patched")
	}
	assertPods(t, env, ns, "db", false)
}
