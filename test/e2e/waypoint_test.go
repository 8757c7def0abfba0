package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// wpZtunnel makes sure a ready ztunnel DaemonSet exists, since --ambient
// refuses without one: the lab's own if it runs one, else one created for
// the test and deleted (and waited for) at its end, so later tests see the
// lab as it was.
func wpZtunnel(t *testing.T, env *labtest.Env) {
	t.Helper()
	ctx := context.Background()
	// Another test's ztunnel may still be going away with its namespace:
	// wait for that, so it neither counts nor adds notes.
	var list *appsv1.DaemonSetList
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		if list, err = env.Kube.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{LabelSelector: "app=ztunnel"}); err != nil {
			return false, err
		}
		for _, d := range list.Items {
			n, err := env.Kube.CoreV1().Namespaces().Get(ctx, d.Namespace, metav1.GetOptions{})
			if d.DeletionTimestamp != nil || err != nil || n.Status.Phase != corev1.NamespaceActive {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatal("ztunnel DaemonSets of earlier tests never went away:", err)
	}
	if len(list.Items) > 0 {
		return
	}
	ns := env.Namespace(t, nil)
	zero := int64(0)
	z := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ztunnel", Labels: map[string]string{"app": "ztunnel"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "istio-proxy", Image: "istio/ztunnel"}}}}}}
	if _, err := env.Kube.AppsV1().DaemonSets(ns).Create(ctx, z, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Kube.AppsV1().DaemonSets(ns).Delete(ctx, "ztunnel", metav1.DeleteOptions{})
		_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := env.Kube.AppsV1().DaemonSets(ns).Get(ctx, "ztunnel", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := env.Kube.AppsV1().DaemonSets(ns).Get(ctx, "ztunnel", metav1.GetOptions{})
		return err == nil && d.Status.NumberReady == 1, err
	}); err != nil {
		t.Fatal("ztunnel never ready:", err)
	}
}

// wpGateways lists ns's Gateways as name:class:createdByUs.
func wpGateways(t *testing.T, env *labtest.Env, ns string) string {
	t.Helper()
	list, err := env.Dynamic.Resource(traffic.Gateways).Namespace(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range list.Items {
		class, _, _ := unstructured.NestedString(g.Object, "spec", "gatewayClassName")
		out = append(out, fmt.Sprintf("%s:%s:%v", g.GetName(), class, inject.CreatedByUs(&g)))
	}
	return strings.Join(out, ",")
}

const wpGatewayYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  annotations:
    inject.kubectl-mesh.io/created-by: kubectl-mesh enable-injection
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: %s
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`

// TestEnableInjectionWaypoint: --ambient --waypoint on the lab's real API
// server and istiod: dry runs change nothing, the Gateway is created and
// the namespace labelled, the wait reports the waypoint's Deployment or
// exactly what is missing, and disable-injection deletes only the Gateway
// enable-injection created.
func TestEnableInjectionWaypoint(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	res := env.Mesh(t, "enable-injection", ns, "--waypoint")
	if want := "error: --waypoint needs --ambient: waypoints serve ambient namespaces, while sidecars route traffic themselves; add --ambient"; res.ExitCode != 1 || res.Err == nil || res.Err.Error() != want || res.Stdout != "" {
		t.Fatalf("--waypoint without --ambient: exit %d, stdout %q, error %v", res.ExitCode, res.Stdout, res.Err)
	}
	wpZtunnel(t, env)

	// Dry runs show the Gateway and the label change and touch nothing.
	for _, mode := range []string{"client", "server"} {
		res := env.Mesh(t, "enable-injection", ns, "--ambient", "--waypoint", "--dry-run="+mode, "-o", "yaml")
		docs := strings.Split(res.Stdout, "---\n")
		if res.ExitCode != 0 || len(docs) != 2 {
			t.Fatalf("--dry-run=%s -o yaml: exit %d, %v\n%s", mode, res.ExitCode, res.Err, res.Stdout)
		}
		want := fmt.Sprintf(wpGatewayYAML, ns)
		if mode == "server" {
			// What the server would store: our object with its metadata and
			// the CRD's defaults.
			for _, part := range []string{"kind: Gateway\n", "  uid: ", "    inject.kubectl-mesh.io/created-by: kubectl-mesh enable-injection\n",
				"  gatewayClassName: istio-waypoint\n", "    name: mesh\n", "    port: 15008\n", "    protocol: HBONE\n"} {
				if !strings.Contains(docs[0], part) {
					t.Errorf("--dry-run=server gateway lacks %q:\n%s", part, docs[0])
				}
			}
		} else if docs[0] != want {
			t.Errorf("--dry-run=client gateway:\n%s\nwant\n%s", docs[0], want)
		}
		if !strings.Contains(docs[1], "kind: Namespace\n") || !strings.Contains(docs[1], "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n") {
			t.Errorf("--dry-run=%s namespace:\n%s", mode, docs[1])
		}
	}
	res = env.Mesh(t, "enable-injection", ns, "--ambient", "--waypoint", "--dry-run=server")
	expect(t, "server dry run", res, "gateway.gateway.networking.k8s.io/waypoint created (server dry run)\nnamespace/"+ns+" labeled (server dry run)\n",
		"no workloads in "+ns+" need a restart\n", 0)
	if got := meshLabels(t, env, ns); got != "" {
		t.Fatalf("dry runs changed the labels: %q", got)
	}
	if got := wpGateways(t, env, ns); got != "" {
		t.Fatalf("dry runs created gateways: %q", got)
	}

	// The real thing.
	res = env.Mesh(t, "enable-injection", ns, "--ambient", "--waypoint", "--timeout=5s")
	if got := wpGateways(t, env, ns); got != "waypoint:istio-waypoint:true" {
		t.Fatalf("gateways = %q\n%s", got, res.Stderr)
	}
	if got := meshLabels(t, env, ns); got != "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint" {
		t.Fatalf("labels = %q", got)
	}
	wantOut := "gateway.gateway.networking.k8s.io/waypoint created\nnamespace/" + ns + " labeled\n"
	waiting := "no workloads in " + ns + " need a restart\nwaiting up to 5s for the waypoint's deployment " + ns + "/waypoint\n"
	// The lab's istiod runs its gateway controller: it deploys the
	// waypoint (Deployment, Service, ServiceAccount owned by the Gateway)
	// and programs the Gateway.
	d, err := env.Kube.AppsV1().Deployments(ns).Get(context.Background(), "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the waypoint's deployment: %v\n%s", err, res.Stderr)
	}
	expect(t, "--waypoint", res, wantOut, waiting+fmt.Sprintf("waypoint %s/waypoint ready: deployment %[1]s/waypoint has %d available, and istiod has programmed the Gateway\n", ns, d.Status.AvailableReplicas), 0)
	if own := d.OwnerReferences; len(own) != 1 || own[0].Kind != "Gateway" || own[0].Name != "waypoint" {
		t.Errorf("deployment owners = %v, want the Gateway", own)
	}
	gw, err := env.Dynamic.Resource(traffic.Gateways).Namespace(ns).Get(context.Background(), "waypoint", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := mesh.WaypointProgrammed(gw); !ok {
		t.Errorf("the command said ready, but the Gateway is not programmed: %s", why)
	}
	if res := env.Mesh(t, "status", "-n", ns); !regexp.MustCompile(`(?m)^` + ns + `\s+namespace\s+0/0\s+0\s+0\s+waypoint\s+0\s+-$`).MatchString(res.Stdout) {
		t.Errorf("status after --waypoint:\n%s", res.Stdout)
	}

	// Again: nothing to do but wait.
	res = env.Mesh(t, "enable-injection", ns, "--ambient", "--waypoint", "--timeout=1s")
	if res.Stdout != "gateway.gateway.networking.k8s.io/waypoint unchanged\nnamespace/"+ns+" already enabled\n" {
		t.Fatalf("second run: %q", res.Stdout)
	}

	// A user's own waypoint is used, and kept by disable-injection.
	mine := env.Namespace(t, nil)
	// As `istioctl waypoint apply --name mine` writes it.
	trApply(t, env, traffic.Gateways, mine, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: mine
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`)
	res = env.Mesh(t, "enable-injection", mine, "--ambient", "--waypoint=mine", "--timeout=1s")
	if res.Stdout != "gateway.gateway.networking.k8s.io/mine unchanged\nnamespace/"+mine+" labeled\n" {
		t.Fatalf("user's waypoint: %q\n%s", res.Stdout, res.Stderr)
	}
	expect(t, "disable keeps a user's waypoint", env.Mesh(t, "disable-injection", mine), "namespace/"+mine+" labeled\n",
		"note: namespace/"+mine+": kept gateway "+mine+"/mine: kubectl mesh did not create it (no inject.kubectl-mesh.io/created-by annotation); delete it yourself when nothing uses it\n"+
			"no workloads in "+mine+" need a restart\n", 0)
	if got := wpGateways(t, env, mine); got != "mine:istio-waypoint:false" {
		t.Fatalf("user's gateway after disable: %q", got)
	}
	if got := meshLabels(t, env, mine); got != "" {
		t.Fatalf("labels after disable: %q", got)
	}

	// disable-injection deletes the one it created.
	expect(t, "disable", env.Mesh(t, "disable-injection", ns),
		"namespace/"+ns+" labeled\ngateway.gateway.networking.k8s.io/waypoint deleted\n", "no workloads in "+ns+" need a restart\n", 0)
	if got := wpGateways(t, env, ns); got != "" {
		t.Fatalf("gateways after disable: %q", got)
	}
	if got := meshLabels(t, env, ns); got != "" {
		t.Fatalf("labels after disable: %q", got)
	}
	// What istiod created for it goes with it (owner references).
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := env.Kube.AppsV1().Deployments(ns).Get(ctx, "waypoint", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("the waypoint's deployment outlived its Gateway: %v", err)
	}
}

// TestEnableInjectionWaypointRefused: a Gateway of another class under the
// name, and a user who may label the namespace but not touch Gateways,
// leave the namespace as it was.
func TestEnableInjectionWaypointRefused(t *testing.T) {
	env := labtest.Get(t)
	wpZtunnel(t, env)
	ns := env.Namespace(t, nil)
	trApply(t, env, traffic.Gateways, ns, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 80
    protocol: HTTP
`)
	res := env.Mesh(t, "enable-injection", ns, "--ambient", "--waypoint")
	want := fmt.Sprintf(`error: gateway %s/waypoint exists with gatewayClassName "istio", not istio-waypoint, so it is no waypoint; choose another name with --waypoint NAME`, ns)
	if res.ExitCode != 1 || res.Err == nil || res.Err.Error() != want || res.Stdout != "" {
		t.Fatalf("another class: exit %d, stdout %q, error %v", res.ExitCode, res.Stdout, res.Err)
	}
	if got := meshLabels(t, env, ns); got != "" {
		t.Fatalf("labels changed: %q", got)
	}

	// A namespace admin allowed to label the namespace, but not to use
	// Gateways (Kubernetes' admin role does not cover gateway.networking.k8s.io).
	other := env.Namespace(t, nil)
	user, kubeconfig := namespaceAdmin(t, env, other)
	env.Grant(t, "", "label-namespace-"+other, user, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{other}, Verbs: []string{"get", "patch"}}})
	want = fmt.Sprintf(`error: cannot get gateway %[1]s/waypoint: get on gateways.gateway.networking.k8s.io in namespace %[1]s is forbidden, so nothing was changed; ask an admin of %[1]s to grant get, create and delete on them:
  kubectl create role waypoints -n %[1]s --verb=get,create,delete --resource=gateways.gateway.networking.k8s.io
  kubectl create rolebinding waypoints -n %[1]s --role=waypoints --user=%[2]s
(gateways.gateway.networking.k8s.io "waypoint" is forbidden: User %[2]q cannot get resource "gateways" in API group "gateway.networking.k8s.io" in the namespace %[1]q)`, other, user)
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		res = env.Mesh(t, "--kubeconfig", kubeconfig, "enable-injection", other, "--ambient", "--waypoint")
		return res.Err != nil && res.Err.Error() == want, nil
	})
	if err != nil || res.ExitCode != 1 || res.Stdout != "" {
		t.Fatalf("gateways forbidden: exit %d, stdout %q, error %v\nwant %s", res.ExitCode, res.Stdout, res.Err, want)
	}
	if got := meshLabels(t, env, other); got != "" {
		t.Fatalf("labels changed: %q", got)
	}
	if got := wpGateways(t, env, other); got != "" {
		t.Fatalf("gateways created: %q", got)
	}

	// With the role the error asks for, the same user gets the waypoint.
	env.Grant(t, other, "waypoints", user, []rbacv1.PolicyRule{
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gateways"}, Verbs: []string{"get", "create", "delete"}}})
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		res = env.Mesh(t, "--kubeconfig", kubeconfig, "enable-injection", other, "--ambient", "--waypoint", "--timeout=1s")
		return strings.HasPrefix(res.Stdout, "gateway.gateway.networking.k8s.io/waypoint created\n"), nil
	})
	if err != nil {
		t.Fatalf("with the granted role: exit %d, stdout %q, error %v", res.ExitCode, res.Stdout, res.Err)
	}
	if got := wpGateways(t, env, other); got != "waypoint:istio-waypoint:true" {
		t.Fatalf("gateways = %q", got)
	}
	if got := meshLabels(t, env, other); got != "istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint" {
		t.Fatalf("labels = %q", got)
	}
	res = env.Mesh(t, "--kubeconfig", kubeconfig, "disable-injection", other)
	if res.Stdout != "namespace/"+other+" labeled\ngateway.gateway.networking.k8s.io/waypoint deleted\n" || res.ExitCode != 0 {
		t.Fatalf("disable with the granted role: exit %d, stdout %q, error %v", res.ExitCode, res.Stdout, res.Err)
	}
	if got := wpGateways(t, env, other); got != "" {
		t.Fatalf("gateways after disable: %q", got)
	}
}
