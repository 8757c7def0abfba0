package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// setInjectorTag makes the lab's istiod inject proxies of another version,
// as an older control plane did before an upgrade: it edits global.tag in
// the injector ConfigMap, which istiod reloads, and waits until a dry-run
// pod in ns is injected with that version.
func setInjectorTag(t *testing.T, env *labtest.Env, ns, tag string) {
	t.Helper()
	ctx := context.Background()
	cms := env.Kube.CoreV1().ConfigMaps("istio-system")
	cm, err := cms.Get(ctx, "istio-sidecar-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := json.Unmarshal([]byte(cm.Data["values"]), &values); err != nil {
		t.Fatal(err)
	}
	values["global"].(map[string]any)["tag"] = tag
	raw, _ := json.Marshal(values)
	patch, _ := json.Marshal(map[string]any{"data": map[string]string{"values": string(raw)}})
	if _, err := cms.Patch(ctx, cm.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/probe"}}}}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := env.Kube.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		for _, c := range p.Spec.Containers {
			if c.Name == "istio-proxy" {
				last = c.Image
			}
		}
		return strings.HasSuffix(last, ":"+tag), nil
	})
	if err != nil {
		t.Fatalf("istiod still injects %q, want tag %s: %v", last, tag, err)
	}
}

// TestRestartAfterUpgrade: pods injected by the previous version keep
// their old sidecars after the control plane moves on. status shows the
// skew, restart picks exactly those workloads, and the new pods run the
// control plane's version.
func TestRestartAfterUpgrade(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	const old = "1.30.0"
	setInjectorTag(t, env, ns, old)
	restored := false
	t.Cleanup(func() {
		if !restored {
			setInjectorTag(t, env, ns, lab.IstioVersion)
		}
	})
	env.Deployment(t, ns, "web", nil, 2)
	env.Deployment(t, ns, "api", nil, 1)
	setInjectorTag(t, env, ns, lab.IstioVersion) // the upgrade
	restored = true
	env.Deployment(t, ns, "fresh", nil, 1) // injected after it

	st := env.Mesh(t, "status", "-n", ns)
	row := regexp.MustCompile(`(?m)^` + ns + `\s.*$`).FindString(st.Stdout)
	if got, want := strings.Fields(row), []string{ns, "sidecar", "3/3", "3", old + "," + lab.IstioVersion, "(skew)", "PERMISSIVE"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("status row %v, want %v\n%s", got, want, st.Stdout)
	}

	plan := env.Mesh(t, "restart", ns, "--dry-run")
	reason := []string{"sidecar", old + ",", "control", "plane", lab.IstioVersion}
	if got, want := fmt.Sprint(tableRows(t, plan.Stdout)), fmt.Sprint([][]string{
		append([]string{ns + "/deployment/api", "1", "1/1"}, reason...),
		append([]string{ns + "/deployment/web", "2", "2/2"}, reason...)}); got != want {
		t.Fatalf("plan = %s\nwant %s", got, want)
	}

	res := env.Mesh(t, "restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{
		{ns + "/deployment/api", "1", "1", "1/1", "restarted"},
		{ns + "/deployment/web", "2", "2", "2/2", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Spec.Containers {
			if c.Name == "istio-proxy" && !strings.HasSuffix(c.Image, ":"+lab.IstioVersion) {
				t.Errorf("pod %s runs %s after the restart", p.Name, c.Image)
			}
		}
	}
	st = env.Mesh(t, "status", "-n", ns)
	row = regexp.MustCompile(`(?m)^` + ns + `\s.*$`).FindString(st.Stdout)
	if got, want := strings.Fields(row), []string{ns, "sidecar", "3/3", "0", lab.IstioVersion, "PERMISSIVE"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("status row after restart %v, want %v\n%s", got, want, st.Stdout)
	}
}
