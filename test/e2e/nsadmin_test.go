package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// unchecked is what a namespace admin is told their rights kept from being
// checked.
const unchecked = `note: could not check the sidecar injector webhooks (injection is judged by the selectors of Istio's standard injector webhooks); a ClusterRole and ClusterRoleBinding granting "list" on mutatingwebhookconfigurations.admissionregistration.k8s.io would let it
note: could not check the istiod Deployments (istiod's version is read from the injector ConfigMap only); a ClusterRole and ClusterRoleBinding granting "list" on deployments.apps would let it
note: could not check the injector ConfigMaps (the chart's default injection policy is assumed and the injected proxy version is not known); a ClusterRole and ClusterRoleBinding granting "list" on configmaps would let it
note: could not check ztunnel (ambient namespaces are not checked for the node proxy that captures their traffic); a ClusterRole and ClusterRoleBinding granting "list" on daemonsets.apps would let it
`

// namespaceAdmin binds Kubernetes' built-in admin ClusterRole to a new user
// in namespace ns only, as `kubectl create rolebinding --clusterrole=admin`
// does, and returns the user and their kubeconfig once the binding is in
// effect.
func namespaceAdmin(t *testing.T, env *labtest.Env, ns string) (user, kubeconfig string) {
	t.Helper()
	ctx := context.Background()
	user = "ann-" + ns
	kubeconfig = env.UserKubeconfig(t, user, nil)
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: user}}}
	if _, err := env.Kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("the admin RoleBinding for %s never took effect", user)
	}
	return user, kubeconfig
}

// TestNamespaceAdmin: a user with the admin role in one namespace runs
// status, restart and enable-injection there, as they can run kubectl
// rollout restart. What only cluster-wide reads could check is a note on
// stderr naming the permission. Labelling the namespace is refused with
// the RBAC it needs and nothing changed, and works once that is granted.
func TestNamespaceAdmin(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 2)
	user, kc := namespaceAdmin(t, env, ns)
	as := func(args ...string) labtest.Result {
		return env.Mesh(t, append([]string{"--kubeconfig", kc}, args...)...)
	}
	row := func(out string) []string {
		return strings.Fields(regexp.MustCompile(`(?m)^` + ns + `\s.*$`).FindString(out))
	}

	// status also reads PeerAuthentications in istio-system, for the
	// mesh-wide policy, which a namespace admin may not.
	mtls := "unknown"
	statusNotes := unchecked + `note: could not check PeerAuthentications (mTLS modes are shown as unknown); a ClusterRole and ClusterRoleBinding granting "list" on peerauthentications.security.istio.io would let it` + "\n"

	st := as("status", "-n", ns)
	if st.ExitCode != 0 || st.Stderr != statusNotes {
		t.Fatalf("status: exit %d, %v\nstderr:\n%s", st.ExitCode, st.Err, st.Stderr)
	}
	if !strings.HasPrefix(st.Stdout, "Control plane: not readable with your permissions (see the notes)\n") ||
		fmt.Sprint(row(st.Stdout)) != fmt.Sprint([]string{ns, "off", "0/1", "0", "-", mtls}) {
		t.Errorf("status:\n%s", st.Stdout)
	}

	res := as("enable-injection", ns)
	want := fmt.Sprintf(`error: cannot label namespace %[1]s: patching the Namespace object is forbidden, so nothing was changed. A Namespace is cluster-scoped, so the admin role bound inside %[1]s does not cover it; ask a cluster admin to grant "patch" on namespaces/%[1]s:
  kubectl create clusterrole label-namespace-%[1]s --verb=get,patch --resource=namespaces --resource-name=%[1]s
  kubectl create clusterrolebinding label-namespace-%[1]s --clusterrole=label-namespace-%[1]s --user=%[2]s
(namespaces %[1]q is forbidden: User %[2]q cannot patch resource "namespaces" in API group "" in the namespace %[1]q)`, ns, user)
	if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != unchecked+want+"\n" {
		t.Fatalf("enable-injection as namespace admin: exit %d, stdout %q\nstderr:\n%s\nwant:\n%s", res.ExitCode, res.Stdout, res.Stderr, want)
	}
	if got := meshLabels(t, env, ns); got != "" {
		t.Fatalf("labels changed: %q", got)
	}

	// What the error asks a cluster admin for.
	env.Grant(t, "", "label-namespace-"+ns, user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{ns}, Verbs: []string{"get", "patch"}}})
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		res = as("enable-injection", ns)
		return res.ExitCode == 0, nil
	})
	if err != nil {
		t.Fatalf("enable-injection with the granted role: %v\n%s", res.Err, res.Stderr)
	}
	if want := "namespace/" + ns + " labeled\n"; res.Stdout != want || res.Stderr != unchecked+"1 workload needs a restart: deployment/web — run: kubectl mesh restart "+ns+"\n" {
		t.Errorf("enable-injection: stdout %q, want %q\nstderr:\n%s", res.Stdout, want, res.Stderr)
	}
	if got := meshLabels(t, env, ns); got != "istio-injection=enabled" {
		t.Fatalf("labels: %q", got)
	}

	st = as("status", "-n", ns)
	if got, want := row(st.Stdout), []string{ns, "sidecar", "0/1", "2", "-", mtls}; st.ExitCode != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status after labelling: exit %d row %v, want %v\n%s", st.ExitCode, got, want, st.Stderr)
	}

	res = as("restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{{ns + "/deployment/web", "2", "2", "2/2", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, ns, "web", true)
	st = as("status", "-n", ns)
	if got, want := row(st.Stdout), []string{ns, "sidecar", "1/1", "0", lab.IstioVersion, mtls}; st.ExitCode != 0 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status after restart: exit %d row %v, want %v\n%s", st.ExitCode, got, want, st.Stderr)
	}

	// Their rights end at their namespace.
	other := env.Namespace(t, nil)
	res = as("status", "-n", other)
	if res.ExitCode != 1 || !strings.HasPrefix(res.Err.Error(), fmt.Sprintf("error: cannot get namespaces (%s): forbidden", other)) {
		t.Errorf("status of another namespace: exit %d, %v", res.ExitCode, res.Err)
	}
}
