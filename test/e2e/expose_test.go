package e2e

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// trIngressURL is the URL expose should print on the lab: the ingress
// gateway's load balancer is pending (no LB controller), so node port of
// port 80 on the node's address.
func trIngressURL(t *testing.T, env *labtest.Env, path string) (url string, nodePort int32) {
	t.Helper()
	return trServiceURL(t, env, "istio-system", "istio-ingressgateway", path)
}

// trServiceURL is that URL for the gateway Service ns/name.
func trServiceURL(t *testing.T, env *labtest.Env, ns, name, path string) (url string, nodePort int32) {
	t.Helper()
	ctx := context.Background()
	svc, err := env.Kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Spec.Ports {
		if p.Port == 80 {
			nodePort = p.NodePort
		}
	}
	nodes, err := env.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("listing nodes: %v", err)
	}
	return fmt.Sprintf("http://%s:%d%s", nodes.Items[0].Status.Addresses[0].Address, nodePort, path), nodePort
}

func TestExposeWorkshop(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, nil)
	trService(t, env, ns, "frontend", map[string]string{"app": "frontend"})
	env.Deployment(t, ns, "frontend", map[string]string{"version": "v1"}, 1)
	url, nodePort := trIngressURL(t, env, "/")
	pending := fmt.Sprintf("the load balancer address of service istio-system/istio-ingressgateway is pending; using node port %d meanwhile (watch: kubectl get service -n istio-system istio-ingressgateway -w)\n", nodePort)

	res := env.Mesh(t, "expose", "frontend", "-n", ns)
	wantErr := "gateway.networking.istio.io/frontend-gateway created\nvirtualservice.networking.istio.io/frontend-ingress created\n" + pending
	if res.Err != nil || res.Stdout != url+"\n" || res.Stderr != wantErr {
		t.Fatalf("%v\nstdout %q want %q\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, url+"\n", res.Stderr, wantErr)
	}
	gw := trGet(t, env, traffic.IstioGateways, ns, "frontend-gateway")
	wantGW := "selector:\n  istio: ingressgateway\nservers:\n- hosts:\n  - '*'\n  port:\n    name: http\n    number: 80\n    protocol: HTTP\n"
	if g := trYAML(t, gw.Object["spec"]); g != wantGW {
		t.Errorf("gateway spec:\n%s\nwant:\n%s", g, wantGW)
	}
	vs := trGet(t, env, traffic.VirtualServices, ns, "frontend-ingress")
	wantVS := "gateways:\n- frontend-gateway\nhosts:\n- '*'\nhttp:\n- route:\n  - destination:\n      host: frontend\n      port:\n        number: 80\n"
	if g := trYAML(t, vs.Object["spec"]); g != wantVS {
		t.Errorf("virtual service spec:\n%s\nwant:\n%s", g, wantVS)
	}

	// Running it again changes nothing.
	res = env.Mesh(t, "expose", "frontend", "-n", ns)
	wantErr = "gateway.networking.istio.io/frontend-gateway unchanged\nvirtualservice.networking.istio.io/frontend-ingress unchanged\n" + pending
	if res.Err != nil || res.Stdout != url+"\n" || res.Stderr != wantErr {
		t.Fatalf("again: %v\nstdout %q\nstderr:\n%s", res.Err, res.Stdout, res.Stderr)
	}
	if g := trGet(t, env, traffic.VirtualServices, ns, "frontend-ingress"); g.GetResourceVersion() != vs.GetResourceVersion() {
		t.Errorf("second expose rewrote the virtual service")
	}

	// Another host and path on the same objects: "*" already covers the
	// host, and the existing route is kept, so nothing changes and expose
	// says the path was not applied.
	res = env.Mesh(t, "expose", "frontend", "--host", "shop.example.com", "--path-prefix", "/shop", "-n", ns)
	wantErr = "gateway.networking.istio.io/frontend-gateway unchanged\nvirtualservice.networking.istio.io/frontend-ingress unchanged\n" +
		"--path-prefix /shop is not applied: virtualservice frontend-ingress exists and its routes are kept\n" + pending +
		"requests must carry Host: shop.example.com; until DNS points there, try: curl -H 'Host: shop.example.com' " + url + "\n"
	if res.Err != nil || res.Stdout != url+"\n" || res.Stderr != wantErr {
		t.Fatalf("second host: %v\nstdout %q\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, res.Stderr, wantErr)
	}
	if g := trGet(t, env, traffic.VirtualServices, ns, "frontend-ingress"); g.GetResourceVersion() != vs.GetResourceVersion() {
		t.Errorf("covered host rewrote the virtual service")
	}
}

// TestExposeExistingVirtualService binds the VirtualService that already
// routes the service in the mesh to the gateway, keeping its routes and its
// mesh binding.
func TestExposeExistingVirtualService(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	if res := env.Mesh(t, "split", "backend", "50/50", "-n", ns); res.Err != nil {
		t.Fatal(res.Err)
	}
	before := trGet(t, env, traffic.VirtualServices, ns, "backend")

	res := env.Mesh(t, "expose", "backend", "-n", ns)
	wantErr := fmt.Sprintf("error: virtualservice backend already routes service %s/backend inside the mesh, and Istio does not allow host * on a VirtualService bound to the mesh; pass --host (e.g. --host backend.example.com) to bind it to the gateway under that name\n", ns)
	if res.ExitCode != 1 || res.Stderr != wantErr {
		t.Fatalf("exit %d stderr %q want %q", res.ExitCode, res.Stderr, wantErr)
	}
	if _, err := env.Dynamic.Resource(traffic.IstioGateways).Namespace(ns).Get(context.Background(), "backend-gateway", metav1.GetOptions{}); err == nil {
		t.Errorf("failed expose created the gateway")
	}

	res = env.Mesh(t, "expose", "backend", "--host", "api.example.com", "-n", ns)
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, res.Stderr)
	}
	after := trGet(t, env, traffic.VirtualServices, ns, "backend")
	want := before.DeepCopy()
	_ = unstructured.SetNestedStringSlice(want.Object, []string{"mesh", "backend-gateway"}, "spec", "gateways")
	_ = unstructured.SetNestedStringSlice(want.Object, []string{"backend", "api.example.com"}, "spec", "hosts")
	if g, w := trYAML(t, trComparable(after)), trYAML(t, trComparable(want)); g != w {
		t.Errorf("virtual service:\n%s\nwant:\n%s", g, w)
	}
	// Still the mesh route split works on.
	res = env.Mesh(t, "split", "backend", "-n", ns)
	wantOut := "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/1\n"
	if res.Err != nil || res.Stdout != wantOut {
		t.Errorf("split after expose: %v\n%s", res.Err, res.Stdout)
	}
}

func TestExposeBadInput(t *testing.T) {
	env := labtest.Get(t)
	ns := trBackendApp(t, env)
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"expose", "nope"}, fmt.Sprintf(`service "nope" not found in namespace %q; list services with: kubectl get services -n %s`, ns, ns)},
		{[]string{"expose", "backend", "--port", "8080"}, fmt.Sprintf(`service %s/backend has no port 8080 (ports: 80); choose one with --port`, ns)},
		{[]string{"expose", "backend", "--path-prefix", "shop"}, `invalid --path-prefix "shop": it must start with /`},
		{[]string{"expose", "backend", "--api", "smi"}, `invalid --api "smi": use istio or gateway`},
	}
	for _, tt := range tests {
		res := env.Mesh(t, append(tt.args, "-n", ns)...)
		if res.ExitCode != 1 || res.Stdout != "" || res.Stderr != "error: "+tt.err+"\n" {
			t.Errorf("%v: exit %d\nstderr %q\nwant   %q", tt.args, res.ExitCode, res.Stderr, "error: "+tt.err+"\n")
		}
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Errorf("bad input wrote objects: %s", got)
	}
}

// TestExposeGatewayAPI: Gateway (class istio) and HTTPRoute. The server
// dry run has no address to give; once istiod has deployed and programmed
// the Gateway, expose prints its node port. (The lab's stand-in proxies
// route VirtualServices only, so nothing answers that URL: not probed.)
func TestExposeGatewayAPI(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	trService(t, env, ns, "frontend", map[string]string{"app": "frontend"})

	res := env.Mesh(t, "expose", "frontend", "--api", "gateway", "--dry-run=server", "-n", ns)
	wantErr := "gateway.gateway.networking.k8s.io/frontend-gateway created (server dry run)\nhttproute.gateway.networking.k8s.io/frontend-ingress created (server dry run)\n" +
		fmt.Sprintf("gateway frontend-gateway has no address yet; check later with: kubectl get gateway frontend-gateway -n %s\n", ns)
	if res.Err != nil || res.Stdout != "" || res.Stderr != wantErr {
		t.Fatalf("dry run: %v\nstdout %q\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, res.Stderr, wantErr)
	}
	if got := trObjects(t, env, ns); got != "" {
		t.Fatalf("dry run wrote objects: %s", got)
	}

	res = env.Mesh(t, "expose", "frontend", "--api", "gateway", "--host", "shop.example.com", "-n", ns)
	if res.Err != nil || res.Stdout != "" {
		t.Fatalf("%v\nstdout %q\nstderr:\n%s", res.Err, res.Stdout, res.Stderr)
	}
	route := trGet(t, env, traffic.HTTPRoutes, ns, "frontend-ingress")
	wantRoute := `hostnames:
- shop.example.com
parentRefs:
- group: gateway.networking.k8s.io
  kind: Gateway
  name: frontend-gateway
rules:
- backendRefs:
  - group: ""
    kind: Service
    name: frontend
    port: 80
    weight: 1
  matches:
  - path:
      type: PathPrefix
      value: /
`
	if g := trYAML(t, route.Object["spec"]); g != wantRoute {
		t.Errorf("route spec:\n%s\nwant:\n%s", g, wantRoute)
	}

	// istiod's gateway controller deploys the Gateway (Deployment and a
	// LoadBalancer Service named NAME-istio). With no load balancer in the
	// lab its Programmed condition stays False (AddressNotAssigned), as on
	// a bare cluster, and expose gives the Service's node port.
	var reason string
	trEventually(t, func() bool {
		gw, err := env.Dynamic.Resource(traffic.Gateways).Namespace(ns).Get(ctx, "frontend-gateway", metav1.GetOptions{})
		if err != nil {
			return false
		}
		_, reason, _, _ = mesh.GatewayCondition(gw, "Programmed")
		return reason == "AddressNotAssigned"
	})
	if reason != "AddressNotAssigned" {
		t.Fatalf("istiod never deployed the Gateway (Programmed reason %q)", reason)
	}
	url, nodePort := trServiceURL(t, env, ns, "frontend-gateway-istio", "/")
	res = env.Mesh(t, "expose", "frontend", "--api", "gateway", "--host", "shop.example.com", "-n", ns)
	wantErr = "gateway.gateway.networking.k8s.io/frontend-gateway unchanged\nhttproute.gateway.networking.k8s.io/frontend-ingress unchanged\n" +
		fmt.Sprintf("the load balancer address of service %[1]s/frontend-gateway-istio is pending; using node port %[2]d meanwhile (watch: kubectl get service -n %[1]s frontend-gateway-istio -w)\n", ns, nodePort) +
		fmt.Sprintf("requests must carry Host: shop.example.com; until DNS points there, try: curl -H 'Host: shop.example.com' %s\n", url)
	if res.Err != nil || res.Stdout != url+"\n" || res.Stderr != wantErr {
		t.Fatalf("again: %v\nstdout %q\nstderr:\n%s\nwant:\n%s", res.Err, res.Stdout, res.Stderr, wantErr)
	}
}
