package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestInjectionWithoutIstio runs the injection commands against a real API
// server that has never seen Istio: each says to install Istio first and
// the namespace keeps its labels.
func TestInjectionWithoutIstio(t *testing.T) {
	env := labtest.Get(t)
	kc := trBareAPIServer(t, env)
	const noInjector = "error: no Istio sidecar injector found (no MutatingWebhookConfiguration with a *.sidecar-injector.istio.io webhook); install Istio first\n"
	for _, args := range [][]string{
		{"enable-injection", "default"},
		{"enable-injection", "default", "--dry-run=server"},
	} {
		res := env.Mesh(t, append(args, "--kubeconfig", kc)...)
		if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != noInjector {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q\nwant   %q", args, res.ExitCode, res.Stdout, res.Stderr, noInjector)
		}
	}
	// Nothing to disable: a no-op that says so, not an error.
	res := env.Mesh(t, "disable-injection", "default", "--kubeconfig", kc)
	if res.ExitCode != 0 || res.Stdout != "namespace/default already disabled\n" || res.Stderr != "no workloads in default need a restart\n" {
		t.Errorf("disable-injection: exit %d\nstdout %q\nstderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := kube.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range ns.Labels {
		if strings.Contains(k, "istio") {
			t.Errorf("namespace default got label %s on a cluster without Istio", k)
		}
	}
	// status still reports, and says there is no control plane.
	res = env.Mesh(t, "status", "-n", "default", "--kubeconfig", kc)
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "Control plane: none found (no sidecar injector, istiod or injector ConfigMap)\n") ||
		!regexp.MustCompile(`(?m)^default +off +0/0 `).MatchString(res.Stdout) {
		t.Errorf("status: exit %d\nstdout:\n%s\nstderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
}
