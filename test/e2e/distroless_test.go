package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// distrolessIstiod creates the istiod Deployment Istio's chart renders with
// global.variant=distroless, for the test's duration. It has no replicas:
// the lab's istiod runs as a process, and only the Deployment's image says
// the control plane's version.
func distrolessIstiod(t *testing.T, env *labtest.Env) {
	t.Helper()
	ctx := context.Background()
	zero := int32(0)
	l := map[string]string{"app": "istiod", "istio.io/rev": "default", "istio": "pilot"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod", Labels: l},
		Spec: appsv1.DeploymentSpec{
			Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "istiod", "istio.io/rev": "default"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery",
					Image: "docker.io/istio/pilot:" + lab.IstioVersion + "-distroless", Args: []string{"discovery"}}}},
			},
		},
	}
	if _, err := env.Kube.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the distroless istiod Deployment: %v", err)
	}
	t.Cleanup(func() {
		_ = env.Kube.AppsV1().Deployments(d.Namespace).Delete(context.Background(), d.Name, metav1.DeleteOptions{})
	})
}

// TestDistrolessIstiod: with istiod and its proxies on the distroless image
// variant, status shows no version skew and restart picks nothing, though
// istiod's image is pilot:1.31.0-distroless and the sidecars'
// proxyv2:1.31.0-distroless.
func TestDistrolessIstiod(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	variant := lab.IstioVersion + "-distroless"
	// The injector then names the proxy image as global.variant=distroless
	// does; it is put back as soon as the pods are injected.
	setInjectorTag(t, env, ns, variant)
	restored := false
	t.Cleanup(func() {
		if !restored {
			setInjectorTag(t, env, ns, lab.IstioVersion)
		}
	})
	env.Deployment(t, ns, "web", nil, 2)
	env.Deployment(t, ns, "api", nil, 1)
	setInjectorTag(t, env, ns, lab.IstioVersion)
	restored = true
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if got := proxyImage(p); got != "docker.io/istio/proxyv2:"+variant {
			t.Fatalf("pod %s has proxy image %q, want the distroless variant", p.Name, got)
		}
	}
	distrolessIstiod(t, env)

	st := env.Mesh(t, "status", "-n", ns)
	if st.ExitCode != 0 {
		t.Fatalf("status: %v", st.Err)
	}
	cp := regexp.MustCompile(`(?m)^default\s.*$`).FindString(st.Stdout)
	if got, want := strings.Fields(cp), []string{"default", "-", lab.IstioVersion, "istio-sidecar-injector", "istio-system/istiod"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("control plane row %v, want %v\n%s", got, want, st.Stdout)
	}
	row := regexp.MustCompile(`(?m)^` + ns + `\s.*$`).FindString(st.Stdout)
	if got, want := strings.Fields(row), []string{ns, "sidecar", "2/2", "0", lab.IstioVersion, "PERMISSIVE"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status row %v, want %v\n%s", got, want, st.Stdout)
	}

	plan := env.Mesh(t, "restart", ns, "--dry-run")
	if want := "nothing to restart: every pod already matches what Istio injects now (use --all to restart anyway)\n"; plan.ExitCode != 0 || plan.Stdout != "" || plan.Stderr != want {
		t.Errorf("restart --dry-run: exit %d\nstdout %q\nstderr %q\nwant stderr %q", plan.ExitCode, plan.Stdout, plan.Stderr, want)
	}
}

func proxyImage(p corev1.Pod) string {
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == "istio-proxy" {
			return c.Image
		}
	}
	return ""
}
