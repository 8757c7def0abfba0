package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// meshBinary builds the kubectl-mesh binary once, so both sides of a
// comparison pay process start-up.
func meshBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "kubectl-mesh")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/kubectl-mesh/kubectl-mesh/cmd/kubectl-mesh").CombinedOutput()
	if err != nil {
		b.Fatalf("building kubectl-mesh: %v\n%s", err, out)
	}
	return bin
}

// timed runs a binary with stdout discarded (as a pipe to /dev/null would)
// and returns its wall time.
func timed(b *testing.B, bin string, args ...string) time.Duration {
	b.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v\n%s", filepath.Base(bin), args, err, stderr.String())
	}
	return time.Since(start)
}

func kubectlBinary(env *labtest.Env) string {
	return filepath.Join(env.Lab.BinDir, "kubectl-"+lab.KubeVersion)
}

// benchDeployment is a Deployment like labtest's, created without waiting.
func benchDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	zero := int64(0)
	l := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero,
					Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/" + name}}}}},
	}
}

// deleteNamespaces deletes and waits until they are gone, so the next
// benchmark or test starts from a quiet cluster.
func deleteNamespaces(env *labtest.Env, names []string) {
	ctx := context.Background()
	for _, n := range names {
		_ = env.Kube.CoreV1().Namespaces().Delete(ctx, n, metav1.DeleteOptions{})
	}
	_ = wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if _, err := env.Kube.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitPods waits until n pods are Running cluster-wide in namespaces with
// the given prefix label.
func waitPods(b *testing.B, env *labtest.Env, selector string, n int) {
	b.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		deps, err := env.Kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, d := range deps.Items {
			ready += int(d.Status.AvailableReplicas)
		}
		return ready >= n, nil
	})
	if err != nil {
		b.Fatalf("pods not ready: %v", err)
	}
}

// BenchmarkInjectionStatusAll compares `kubectl mesh status -A` with
// `kubectl get pods -A -o json` on 200 namespaces and 5,000 pods (half the
// namespaces injected by the lab's istiod), both as processes, alternating.
func BenchmarkInjectionStatusAll(b *testing.B) {
	env := labtest.Get(b)
	ctx := context.Background()
	const namespaces, perNS = 200, 25
	var names []string
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < namespaces; i++ {
		name := fmt.Sprintf("bench-status-%03d", i)
		names = append(names, name)
		labels := map[string]string{"bench": "status"}
		if i%2 == 0 {
			labels["istio-injection"] = "enabled"
		}
		if _, err := env.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			d := benchDeployment(name, "app", perNS)
			d.Labels["bench"] = "status"
			if _, err := env.Kube.AppsV1().Deployments(name).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	b.Cleanup(func() { deleteNamespaces(env, names) })
	waitPods(b, env, "bench=status", namespaces*perNS)

	mesh, kubectl := meshBinary(b), kubectlBinary(env)
	var meshT, kubectlT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		meshT += timed(b, mesh, "--kubeconfig", env.Kubeconfig, "status", "-A")
		kubectlT += timed(b, kubectl, "--kubeconfig", env.Kubeconfig, "get", "pods", "-A", "-o", "json")
	}
	b.StopTimer()
	b.ReportMetric(float64(meshT.Milliseconds())/float64(b.N), "mesh-status-ms")
	b.ReportMetric(float64(kubectlT.Milliseconds())/float64(b.N), "kubectl-get-ms")
	b.ReportMetric(float64(meshT)/float64(kubectlT), "ratio")
}

// BenchmarkInjectionRestart50 restarts 50 Deployments that need a sidecar
// with `kubectl mesh restart` (parallel, waiting, verifying), then the same
// 50 one by one with `kubectl rollout restart` + `kubectl rollout status`,
// and compares the parallel total with the slowest single rollout.
func BenchmarkInjectionRestart50(b *testing.B) {
	env := labtest.Get(b)
	ctx := context.Background()
	const n = 50
	ns := "bench-restart"
	if _, err := env.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteNamespaces(env, []string{ns}) })
	for i := 0; i < n; i++ {
		d := benchDeployment(ns, fmt.Sprintf("app-%02d", i), 1)
		d.Labels["bench"] = "restart"
		if _, err := env.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	waitPods(b, env, "bench=restart", n)
	mesh, kubectl := meshBinary(b), kubectlBinary(env)
	kc := []string{"--kubeconfig", env.Kubeconfig}
	if out, err := exec.Command(mesh, append(kc, "enable-injection", ns)...).CombinedOutput(); err != nil {
		b.Fatalf("enable-injection: %v\n%s", err, out)
	}

	var meshT, seqT, slowest time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// --all: from the second iteration on, every pod already has its sidecar.
		meshT += timed(b, mesh, append(kc, "restart", ns, "--all", "--concurrency", "50", "--timeout", "5m")...)
		time.Sleep(time.Second) // restartedAt has second precision
		for j := 0; j < n; j++ {
			d := fmt.Sprintf("deployment/app-%02d", j)
			start := time.Now()
			timed(b, kubectl, append(kc, "-n", ns, "rollout", "restart", d)...)
			timed(b, kubectl, append(kc, "-n", ns, "rollout", "status", d, "--timeout", "5m")...)
			took := time.Since(start)
			seqT += took
			if took > slowest {
				slowest = took
			}
		}
		time.Sleep(time.Second)
	}
	b.StopTimer()
	b.ReportMetric(meshT.Seconds()/float64(b.N), "mesh-restart-s")
	b.ReportMetric(seqT.Seconds()/float64(b.N), "kubectl-sequential-s")
	b.ReportMetric(slowest.Seconds(), "slowest-single-s")
	b.ReportMetric(meshT.Seconds()/float64(b.N)/slowest.Seconds(), "ratio-to-slowest")
}
