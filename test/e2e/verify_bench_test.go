package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/verify"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// apiRequest matches the line client-go logs at -v=6 for every response to
// a request it sent (round_trippers.go: `"Response" verb="GET" url=…`),
// port-forward upgrades included.
var apiRequest = regexp.MustCompile(`(?m)"Response" verb="[A-Z]+" url="https://`)

// BenchmarkVerify50Pods runs `kubectl mesh verify` on a namespace of 50
// injected backend pods spread over the lab's two nodes (25 each, every one
// with the lab's sidecar stand-in in its own network namespace) and a
// frontend calling them, and `kubectl mesh sniff` of one pod with the same
// --duration as the reference: verify's captures run on both nodes at once,
// so its wall time should stay near one capture's. It reports wall times,
// verify's time beyond --duration, and the API requests verify sent
// (counted from client-go's -v=6 request log).
func BenchmarkVerify50Pods(b *testing.B) {
	env := labtest.Get(b)
	ctx := context.Background()
	const perNode = 25
	const duration = 5 * time.Second
	ns := fmt.Sprintf("bench-verify-%04x", rand.IntN(0x10000))
	if _, err := env.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"istio-injection": "enabled", podnet.NetworkLabel: "true"}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { deleteNamespaces(env, []string{ns}) })
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "backend-app"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80)}}}}
	if _, err := env.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	deps := []*appsv1.Deployment{
		verifyBenchDeployment(ns, "backend-app", "v1", perNode, ""),
		verifyBenchDeployment(ns, "backend-app", "v2", perNode, lab.Node2Name),
		verifyBenchDeployment(ns, "frontend-app", "v1", 1, ""),
	}
	for _, d := range deps {
		if _, err := env.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, d := range deps {
		if err := lab.WaitDeploymentReady(ctx, env.Kube, ns, d.Name, 5*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	// The pods' network namespaces and sidecar stand-ins follow the API;
	// give the frontend's pooled connections time to open.
	time.Sleep(10 * time.Second)

	mesh := meshBinary(b)
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	common := []string{"--kubeconfig", env.Kubeconfig, "-n", ns, "--ssh-config", sshConfig, "--duration", duration.String()}
	pods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=backend-app"})
	if err != nil || len(pods.Items) != 2*perNode {
		b.Fatalf("want %d backend pods, got %d (%v)", 2*perNode, len(pods.Items), err)
	}

	var verifyT, sniffT time.Duration
	var requests, identities, edges, nodes int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(mesh, append([]string{"verify", ns, "-v=6", "-o", "json"}, common...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		verifyT += time.Since(start)
		// Exit 2 or 3 are verdicts, not errors of the benchmark.
		if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() == 1) {
			b.Fatalf("verify: %v\n%s", err, lastLines(stderr.String(), 20))
		}
		requests += len(apiRequest.FindAllString(stderr.String(), -1))
		var res verify.Result
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			b.Fatalf("verify -o json: %v", err)
		}
		identities, edges, nodes = 0, len(res.Wire.Edges), len(res.Wire.Nodes)
		for _, row := range res.Identities.Rows {
			if row.Read && row.OK {
				identities++
			}
		}
		b.Logf("verify: %s (exit %d), %d identities verified, %d edges, %d nodes captured", res.Verdict, res.ExitCode, identities, edges, nodes)
		if i == 0 {
			for _, w := range res.Workloads {
				b.Logf("workload %s: %+v", w.Name(), w)
			}
			b.Logf("identities: skipped %q, %d rows; unproven %q; failures %q", res.Identities.Skipped, len(res.Identities.Rows), res.Unproven, res.Failures)
		}
		stderr.Reset()

		cmd = exec.Command(mesh, append([]string{"sniff", pods.Items[0].Name}, common...)...)
		cmd.Stderr = &stderr
		start = time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("sniff: %v\n%s", err, lastLines(stderr.String(), 20))
		}
		sniffT += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(verifyT.Seconds()/n, "verify-s/op")
	b.ReportMetric((verifyT-time.Duration(b.N)*duration).Seconds()/n, "verify-beyond-duration-s/op")
	b.ReportMetric(sniffT.Seconds()/n, "sniff-1-pod-s/op")
	b.ReportMetric(float64(requests)/n, "verify-api-requests/op")
	b.ReportMetric(float64(identities), "identities-verified")
	b.ReportMetric(float64(nodes), "nodes-captured")
}

func verifyBenchDeployment(ns, app, version string, replicas int32, node string) *appsv1.Deployment {
	zero := int64(0)
	l := map[string]string{"app": app, "version": version}
	spec := corev1.PodSpec{TerminationGracePeriodSeconds: &zero,
		Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/" + app + ":" + version,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}}
	if node != "" {
		spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
		spec.Tolerations = []corev1.Toleration{{Key: lab.Node2Taint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app + "-" + version, Labels: l},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l, Annotations: tinySidecar}, Spec: spec}},
	}
}

func lastLines(s string, n int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
