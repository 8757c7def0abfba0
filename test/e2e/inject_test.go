package e2e

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// meshLabels returns a namespace's mesh labels as "k=v,…", sorted.
func meshLabels(t *testing.T, env *labtest.Env, ns string) string {
	t.Helper()
	n, err := env.Kube.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kv []string
	for k, v := range n.Labels {
		if k == "istio-injection" || strings.HasPrefix(k, "istio.io/") {
			kv = append(kv, k+"="+v)
		}
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func expect(t *testing.T, what string, res labtest.Result, stdout, stderr string, exit int) {
	t.Helper()
	if res.Stdout != stdout || res.Stderr != stderr || res.ExitCode != exit {
		t.Fatalf("%s:\nstdout %q\nwant   %q\nstderr %q\nwant   %q\nexit %d, want %d", what, res.Stdout, stdout, res.Stderr, stderr, res.ExitCode, exit)
	}
}

// revisionTag creates, for the test's duration, a revision tag pointing at
// the default revision as `istioctl tag set` does: an injector webhook
// configuration copied from the lab's real one, so it calls the same istiod,
// matching only namespaces or pods that ask for the tag.
func revisionTag(t *testing.T, env *labtest.Env, tag string) {
	t.Helper()
	ctx := context.Background()
	def, err := env.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "istio-sidecar-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name, sel, labels := "istio-revision-tag-"+tag, tag, map[string]string{"istio.io/rev": "default", "istio.io/tag": tag}
	c := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, w := range def.Webhooks {
		if !strings.HasPrefix(w.Name, "rev.") {
			continue
		}
		w := *w.DeepCopy()
		for _, s := range []*metav1.LabelSelector{w.NamespaceSelector, w.ObjectSelector} {
			for i := range s.MatchExpressions {
				if s.MatchExpressions[i].Key == "istio.io/rev" && s.MatchExpressions[i].Operator == metav1.LabelSelectorOpIn {
					s.MatchExpressions[i].Values = []string{sel}
				}
			}
		}
		c.Webhooks = append(c.Webhooks, w)
	}
	if _, err := env.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func TestEnableDisableInjection(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)

	need := fmt.Sprintf("1 workload needs a restart: deployment/web — run: kubectl mesh restart %s\n", ns)
	expect(t, "enable", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n", need, 0)
	if got := meshLabels(t, env, ns); got != "istio-injection=enabled" {
		t.Fatalf("labels after enable = %q", got)
	}
	expect(t, "enable again", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" already enabled\n", need, 0)

	// Moving to a revision replaces istio-injection, which would win.
	revisionTag(t, env, "prod")
	expect(t, "enable --revision prod", env.Mesh(t, "enable-injection", ns, "--revision", "prod"), "namespace/"+ns+" labeled\n",
		"note: namespace/"+ns+": removing istio-injection=enabled: it takes precedence over istio.io/rev\n"+need, 0)
	if got := meshLabels(t, env, ns); got != "istio.io/rev=prod" {
		t.Fatalf("labels after --revision = %q", got)
	}

	expect(t, "disable", env.Mesh(t, "disable-injection", ns), "namespace/"+ns+" labeled\n",
		"no workloads in "+ns+" need a restart\n", 0)
	if got := meshLabels(t, env, ns); got != "" {
		t.Fatalf("labels after disable = %q", got)
	}
	expect(t, "disable again", env.Mesh(t, "disable-injection", ns), "namespace/"+ns+" already disabled\n",
		"no workloads in "+ns+" need a restart\n", 0)
}

func TestEnableInjectionDryRun(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	for _, mode := range []string{"client", "server"} {
		res := env.Mesh(t, "enable-injection", ns, "--dry-run="+mode, "-o", "jsonpath={.metadata.labels.istio-injection}")
		expect(t, "--dry-run="+mode, res, "enabled", "no workloads in "+ns+" need a restart\n", 0)
		if got := meshLabels(t, env, ns); got != "" {
			t.Fatalf("--dry-run=%s changed the labels: %q", mode, got)
		}
	}
	res := env.Mesh(t, "enable-injection", ns, "--dry-run=server")
	expect(t, "server dry run message", res, "namespace/"+ns+" labeled (server dry run)\n", "no workloads in "+ns+" need a restart\n", 0)
}

func TestEnableInjectionAmbient(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	env.Deployment(t, ns, "web", nil, 1) // injected: it has a sidecar

	// Without ztunnel nothing would capture the namespace's traffic.
	res := env.Mesh(t, "enable-injection", ns, "--ambient")
	if want := "error: ambient mode needs ztunnel, and no ztunnel DaemonSet (label app=ztunnel) was found; install Istio with the ambient profile first (istioctl install --set profile=ambient), or drop --ambient to use sidecars"; res.ExitCode != 1 || res.Err == nil || res.Err.Error() != want || res.Stdout != "" {
		t.Fatalf("--ambient without ztunnel: exit %d, stdout %q, error %v", res.ExitCode, res.Stdout, res.Err)
	}
	if got := meshLabels(t, env, ns); got != "istio-injection=enabled" {
		t.Fatalf("labels changed: %q", got)
	}
	// A ztunnel DaemonSet, its pod run by the lab's node like any other.
	ztunnelNS := env.Namespace(t, nil)
	zero := int64(0)
	z := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ztunnelNS, Name: "ztunnel", Labels: map[string]string{"app": "ztunnel"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "istio-proxy", Image: "istio/ztunnel"}}}}}}
	if _, err := env.Kube.AppsV1().DaemonSets(ztunnelNS).Create(context.Background(), z, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := env.Kube.AppsV1().DaemonSets(ztunnelNS).Get(ctx, "ztunnel", metav1.GetOptions{})
		return err == nil && d.Status.NumberReady == 1, err
	}); err != nil {
		t.Fatal("ztunnel never ready:", err)
	}

	res = env.Mesh(t, "enable-injection", ns, "--ambient")
	expect(t, "--ambient", res, "namespace/"+ns+" labeled\n",
		"note: namespace/"+ns+": removing istio-injection=enabled: pods with a sidecar are not captured by ambient\n"+
			"1 workload needs a restart: deployment/web — run: kubectl mesh restart "+ns+"\n", 0)
	if got := meshLabels(t, env, ns); got != "istio.io/dataplane-mode=ambient" {
		t.Fatalf("labels = %q", got)
	}
	res = env.Mesh(t, "restart", ns)
	if res.ExitCode != 0 {
		t.Fatalf("restart: %v\n%s", res.Err, res.Stderr)
	}
	rows := tableRows(t, res.Stdout)
	if want := [][]string{{ns + "/deployment/web", "1", "1", "0/1", "(none", "wanted)", "restarted"}}; fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("restart rows = %v, want %v", rows, want)
	}
	assertPods(t, env, ns, "web", false)
	st := env.Mesh(t, "status", "-n", ns)
	if !regexp.MustCompile(`(?m)^` + ns + `\s+ambient\s+0/1\s+0\s`).MatchString(st.Stdout) {
		t.Fatalf("status:\n%s", st.Stdout)
	}
}

func TestEnableInjectionBadInput(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	tests := []struct {
		name string
		args []string
		err  string
	}{
		{"unknown namespace", []string{"enable-injection", ns, "no-such-namespace"},
			`error: namespace "no-such-namespace" not found; check the name with: kubectl get namespaces`},
		{"unknown revision", []string{"enable-injection", ns, "--revision", "nope"},
			`error: revision "nope" not found; revisions and tags installed: default (pass one of them to --revision)`},
		{"ambient with revision", []string{"enable-injection", ns, "--ambient", "--revision", "default"},
			`error: --ambient and --revision cannot be combined: ambient namespaces are not injected`},
		{"restart unknown namespace", []string{"restart", "no-such-namespace"},
			`error: namespace "no-such-namespace" not found; check the name with: kubectl get namespaces`},
		{"status unknown namespace", []string{"status", "-n", "no-such-namespace"},
			`error: namespace "no-such-namespace" not found; check the name with: kubectl get namespaces`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := env.Mesh(t, tt.args...)
			if res.ExitCode != 1 || res.Err == nil || res.Err.Error() != tt.err || res.Stdout != "" {
				t.Fatalf("exit %d, stdout %q, error %v\nwant error %s", res.ExitCode, res.Stdout, res.Err, tt.err)
			}
			if got := meshLabels(t, env, ns); got != "" {
				t.Fatalf("labels changed: %q", got)
			}
		})
	}
}

// TestInjectionForbidden runs the commands as a user who may read
// everything they need but change nothing.
func TestInjectionForbidden(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)
	if _, err := env.Kube.CoreV1().Namespaces().Patch(ctx, ns, "application/merge-patch+json", []byte(`{"metadata":{"labels":{"istio-injection":"enabled"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := env.UserKubeconfig(t, "alice-"+ns, nil)

	// With no rights at all, reading the namespace already fails (the
	// injector's objects are optional reads).
	res := env.Mesh(t, "--kubeconfig", kc, "enable-injection", ns)
	if res.ExitCode != 1 || !strings.HasPrefix(res.Err.Error(), fmt.Sprintf(`error: cannot get namespaces (%s): forbidden`, ns)) {
		t.Fatalf("no rights: exit %d, %v", res.ExitCode, res.Err)
	}

	env.Grant(t, "", "mesh-reader-"+ns, "alice-"+ns, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "pods", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "daemonsets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: []string{"get", "list"}},
	})
	waitCan(t, env, kc, ns)

	res = env.Mesh(t, "--kubeconfig", kc, "disable-injection", ns)
	want := fmt.Sprintf(`error: cannot label namespace %s: patching the Namespace object is forbidden, so nothing was changed.`, ns)
	if res.ExitCode != 1 || !strings.HasPrefix(res.Err.Error(), want) || res.Stdout != "" {
		t.Fatalf("disable as reader: exit %d, stdout %q\n%v\nwant %s", res.ExitCode, res.Stdout, res.Err, want)
	}
	if got := meshLabels(t, env, ns); got != "istio-injection=enabled" {
		t.Fatalf("labels changed: %q", got)
	}

	res = env.Mesh(t, "--kubeconfig", kc, "restart", ns)
	want = fmt.Sprintf("error: 1 of 1 workloads failed to restart:\n  %s/deployment/web: cannot patch deployments in namespace %s: forbidden; ask a cluster admin to grant \"patch\" on deployments: deployments.apps \"web\" is forbidden: User \"alice-%s\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace %q", ns, ns, ns, ns)
	if res.ExitCode != 1 || strings.TrimSpace(res.Stderr[strings.LastIndex(res.Stderr, "error: "):]) != want {
		t.Fatalf("restart as reader: exit %d\n%s\nwant %s", res.ExitCode, res.Stderr, want)
	}
	rows := tableRows(t, res.Stdout)
	if len(rows) != 1 || rows[0][1] != "1" || rows[0][2] != "-" || rows[0][3] != "-" || rows[0][4] != "failed:" {
		t.Fatalf("restart rows = %v", rows)
	}
}

// waitCan waits until the user's new RBAC is in effect (the authorizer's
// cache follows the binding within a moment).
func waitCan(t *testing.T, env *labtest.Env, kc, ns string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return env.Mesh(t, "--kubeconfig", kc, "status", "-n", ns).ExitCode == 0, nil
	})
	if err != nil {
		t.Fatal("RBAC for the reader never took effect")
	}
}

func tableRows(t testing.TB, out string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 1 || !strings.HasPrefix(lines[0], "WORKLOAD ") {
		t.Fatalf("no table in %q", out)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// assertPods checks every live pod of app: Ready, and with istio-proxy
// exactly when sidecar is true (2/2 or 1/1 containers ready).
func assertPods(t *testing.T, env *labtest.Env, ns, app string, sidecar bool) {
	t.Helper()
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		has := false
		for _, c := range append(append([]corev1.Container{}, p.Spec.Containers...), p.Spec.InitContainers...) {
			has = has || c.Name == "istio-proxy"
		}
		ready, total := 0, len(p.Spec.Containers)
		for _, s := range p.Status.ContainerStatuses {
			if s.Ready {
				ready++
			}
		}
		if has != sidecar || ready != total || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: istio-proxy %v (want %v), %d/%d ready, %s", p.Name, has, sidecar, ready, total, p.Status.Phase)
		}
	}
	if live == 0 {
		t.Errorf("no live pods for app=%s", app)
	}
}
