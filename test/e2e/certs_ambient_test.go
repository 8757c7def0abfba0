package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestCertsAmbient: a pod without a sidecar in a namespace enrolled with
// `enable-injection --ambient` has its workload certificate in the ztunnel
// on its node. certs finds that ztunnel (a DaemonSet's pod, which podnet's
// stand-in serves), reads its /config_dump through the port-forward and
// verifies the certificate of the pod's identity like a sidecar's. Before
// the enrolment the pod has no mesh certificate; without a ztunnel on the
// node certs says so; a user who may not port-forward to the ztunnel is
// told which right is missing.
func TestCertsAmbient(t *testing.T) {
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	ctx := context.Background()
	// The workshop's backend: podnet runs the workshop's apps only.
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, podnet.AppBackend, nil, 1)
	pods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + podnet.AppBackend})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Spec.NodeName == "" {
		t.Fatalf("backend pods: %v %v", pods, err)
	}
	pod := pods.Items[0]
	node := pod.Spec.NodeName

	// Not enrolled: no sidecar, no ztunnel's care, no certificate.
	r := env.Mesh(t, "certs", "-n", ns, pod.Name)
	if r.ExitCode != 1 || !strings.Contains(r.Stderr, "pod "+ns+"/"+pod.Name+" has no istio-proxy container") {
		t.Fatalf("before enrolment: exit %d, stderr:\n%s", r.ExitCode, r.Stderr)
	}

	// A ztunnel DaemonSet (enable-injection --ambient wants one) whose pod
	// runs nowhere yet.
	zns := env.Namespace(t, nil)
	zero := int64(0)
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: zns, Name: "ztunnel"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, NodeSelector: map[string]string{corev1.LabelHostname: "no-such-node"},
					Containers: []corev1.Container{{Name: "istio-proxy", Image: "istio/ztunnel"}}}}}}
	if _, err := env.Kube.AppsV1().DaemonSets(zns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := env.Mesh(t, "enable-injection", ns, "--ambient"); r.ExitCode != 0 {
		t.Fatalf("enable-injection --ambient: exit %d, %v\n%s%s", r.ExitCode, r.Err, r.Stdout, r.Stderr)
	}

	// Without a ztunnel on the node (unless another test's is still there).
	if zs := ztunnelsOn(t, env, node); len(zs) == 0 {
		r := env.Mesh(t, "certs", "-n", ns, pod.Name)
		want := "pod " + ns + "/" + pod.Name + " is enrolled in ambient mode but no ztunnel pod (label app=ztunnel) runs on its node " + node
		if r.ExitCode != 1 || !strings.Contains(r.Stderr, want) {
			t.Errorf("without ztunnel: exit %d, want 1 and %q; stderr:\n%s", r.ExitCode, want, r.Stderr)
		}
	} else {
		t.Logf("a ztunnel already runs on %s (%v): the no-ztunnel case is covered by the unit tests only", node, zs)
	}

	// The DaemonSet's pod on the node; podnet's stand-in takes the pod
	// into its care and holds its identity's certificate from istiod's CA.
	patch := []byte(`{"spec":{"template":{"spec":{"nodeSelector":null}}}}`)
	if _, err := env.Kube.AppsV1().DaemonSets(zns).Patch(ctx, "ztunnel", types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var zpod string
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, z := range ztunnelsOn(t, env, node) {
			if strings.HasPrefix(z, zns+"/") {
				zpod = z
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("no ready ztunnel of %s on %s: %v", zns, node, err)
	}
	id := istioca.SPIFFEID(ns, "default")
	start := time.Now()
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		r = env.Mesh(t, "certs", "-n", ns, "deploy/"+podnet.AppBackend)
		return r.ExitCode == 0, nil
	}); err != nil {
		n, _ := env.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		p, _ := env.Kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		t.Fatalf("certs of the ambient pod never verified: exit %d, %v\nstdout:\n%s\nstderr:\n%s\nnamespace labels %v; pod %s on %s, %s, IP %s",
			r.ExitCode, r.Err, r.Stdout, r.Stderr, n.Labels, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
	}
	t.Logf("certs verified %.1fs after the ztunnel was ready:\n%s", time.Since(start).Seconds(), r.Stdout)
	// Several ztunnels may run on the node (another test's, in istio-system
	// first): any of them holds the node's certificates.
	source := regexp.MustCompile(`(?m)^Source:\s+ztunnel (\S+) on node ` + regexp.QuoteMeta(node) + `, admin config_dump via port-forward to 15000$`)
	m := source.FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Errorf("stdout lacks the ztunnel source line:\n%s", r.Stdout)
	} else if zpod = m[1]; !contains(ztunnelsOn(t, env, node), zpod) {
		t.Errorf("source %s is no ready ztunnel on %s", zpod, node)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^Pod:\s+` + regexp.QuoteMeta(ns+"/"+pod.Name) + ` \(service account default\)$`),
		regexp.MustCompile(`(?m)^Identity:\s+` + regexp.QuoteMeta(id) + `$`),
		regexp.MustCompile(`(?m)^Verdict:\s+OK$`),
		regexp.MustCompile(`(?m)^\s+ok\s+identity: identity ` + regexp.QuoteMeta(id) + ` matches the pod's namespace and service account$`),
		regexp.MustCompile(`(?m)^\s+ok\s+chain: chain verifies to root `),
	} {
		if !want.MatchString(r.Stdout) {
			t.Errorf("stdout lacks %s:\n%s", want, r.Stdout)
		}
	}
	if r := env.Mesh(t, "certs", "-n", ns, pod.Name, "-o", "json"); r.ExitCode != 0 || !strings.Contains(r.Stdout, `"source": "ztunnel"`) {
		t.Errorf("-o json: exit %d, want source ztunnel:\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}

	// A user who may find the ztunnel but not port-forward to it.
	user := "certs-ambient-" + ns
	kc := env.UserKubeconfig(t, user, nil)
	env.Grant(t, "", user, user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list"}},
	})
	want := "not allowed to port-forward to pod " + zpod
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r = env.Mesh(t, "--kubeconfig", kc, "certs", "-n", ns, pod.Name)
		return strings.Contains(r.Stderr, want), nil
	}); err != nil || r.ExitCode != 1 {
		t.Errorf("without pods/portforward: exit %d, want 1 and %q; stderr:\n%s", r.ExitCode, want, r.Stderr)
	}
}

// ztunnelsOn lists the ready ztunnel pods (NAMESPACE/NAME) on node,
// istio-system's first as certs picks them.
func ztunnelsOn(t *testing.T, env *labtest.Env, node string) []string {
	t.Helper()
	list, err := env.Kube.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{LabelSelector: "app=ztunnel", FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatalf("ztunnel pods on %s: %v", node, err)
	}
	var out []string
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				out = append(out, p.Namespace+"/"+p.Name)
			}
		}
	}
	return out
}
