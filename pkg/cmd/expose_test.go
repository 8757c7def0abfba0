package cmd

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func ingressObjects(lbIP string) []runtime.Object {
	gw := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-ingressgateway", Labels: map[string]string{"istio": "ingressgateway"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"istio": "ingressgateway"},
			Ports: []corev1.ServicePort{{Name: "status-port", Port: 15021, NodePort: 31021}, {Name: "http2", Port: 80, NodePort: 31080}}},
	}
	if lbIP != "" {
		gw.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}}}
	return append(backendObjects(), gw, node)
}

func TestExposeCommand(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		kube   []runtime.Object
		stdout string
		stderr string
		err    string
	}{
		{
			name:   "node port while load balancer pending",
			args:   []string{"expose", "backend"},
			kube:   ingressObjects(""),
			stdout: "http://192.0.2.10:31080/\n",
			stderr: "gateway.networking.istio.io/backend-gateway created\nvirtualservice.networking.istio.io/backend-ingress created\n" +
				"the load balancer address of service istio-system/istio-ingressgateway is pending; using node port 31080 meanwhile (watch: kubectl get service -n istio-system istio-ingressgateway -w)\n",
		},
		{
			name:   "load balancer and host",
			args:   []string{"expose", "backend", "--host", "shop.example.com", "--path-prefix", "/api", "--dry-run=server"},
			kube:   ingressObjects("203.0.113.7"),
			stdout: "http://203.0.113.7/api\n",
			stderr: "gateway.networking.istio.io/backend-gateway created (server dry run)\nvirtualservice.networking.istio.io/backend-ingress created (server dry run)\n" +
				"requests must carry Host: shop.example.com; until DNS points there, try: curl -H 'Host: shop.example.com' http://203.0.113.7/api\n",
		},
		{
			name:   "bare --dry-run is client",
			args:   []string{"expose", "backend", "--dry-run"},
			kube:   ingressObjects("203.0.113.7"),
			stdout: "http://203.0.113.7/\n",
			stderr: "gateway.networking.istio.io/backend-gateway created (dry run)\nvirtualservice.networking.istio.io/backend-ingress created (dry run)\n",
		},
		{
			name: "no gateway service",
			args: []string{"expose", "backend", "--dry-run=client", "-o", "yaml"},
			kube: backendObjects(),
			stdout: `apiVersion: v1
items:
- apiVersion: networking.istio.io/v1
  kind: Gateway
  metadata:
    name: backend-gateway
    namespace: shop
  spec:
    selector:
      istio: ingressgateway
    servers:
    - hosts:
      - '*'
      port:
        name: http
        number: 80
        protocol: HTTP
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata:
    name: backend-ingress
    namespace: shop
  spec:
    gateways:
    - backend-gateway
    hosts:
    - '*'
    http:
    - route:
      - destination:
          host: backend
          port:
            number: 8080
kind: List
metadata:
  resourceVersion: ""
`,
			stderr: "gateway.networking.istio.io/backend-gateway created (dry run)\nvirtualservice.networking.istio.io/backend-ingress created (dry run)\n" +
				"no ingress gateway Service has label istio=ingressgateway, so the URL is unknown; is the ingress gateway installed? (see --gateway-selector)\n",
		},
		{name: "bad host", args: []string{"expose", "backend", "--host", "Shop_1"}, kube: backendObjects(),
			err: `invalid --host "Shop_1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'); use a DNS name such as shop.example.com, or * for any host`},
		{name: "bad path", args: []string{"expose", "backend", "--path-prefix", "api"}, kube: backendObjects(), err: `invalid --path-prefix "api": it must start with /`},
		{name: "bad port", args: []string{"expose", "backend", "--port", "9090"}, kube: backendObjects(), err: `service shop/backend has no port 9090 (ports: 8080); choose one with --port`},
		{name: "bad selector", args: []string{"expose", "backend", "--gateway-selector", "!x"}, kube: backendObjects(), err: `invalid --gateway-selector "!x": use labels like istio=ingressgateway`},
		{name: "missing service", args: []string{"expose", "nope"}, kube: backendObjects(), err: `service "nope" not found in namespace "shop"; list services with: kubectl get services -n shop`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := trafficFake(tt.kube, false)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(context.Background())
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.Out.String(); got != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.stdout)
			}
			if got := f.ErrOut.String(); got != tt.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tt.stderr)
			}
		})
	}
}
