// Where an exposed Service can be reached: the ingress gateway's load
// balancer, else a node port.

package traffic

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// ingressURL finds where the gateway is reachable. Failing to find it is
// not an error: the objects are in place, only the address is unknown.
func ingressURL(ctx context.Context, c Clients, cfg ExposeConfig) (string, []string) {
	var svc *corev1.Service
	var notes []string
	if cfg.API == APIGateway {
		gwName := GatewayName(cfg.Service)
		if gw, err := getOrNil(ctx, c, Gateways, cfg.Namespace, gwName); err == nil && gw != nil {
			addrs, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses")
			for _, a := range addrs {
				m, _ := a.(map[string]interface{})
				if v, _ := m["value"].(string); v != "" {
					return buildURL(v, GatewayPort, cfg), nil
				}
			}
		}
		// Istio deploys a Service named <gateway>-istio for each Gateway.
		s, err := c.Kube.CoreV1().Services(cfg.Namespace).Get(ctx, gwName+"-istio", metav1.GetOptions{})
		if err != nil {
			return "", []string{gatewayPending(ctx, c, cfg.Namespace, gwName)}
		}
		svc = s
	} else {
		sel := labels.SelectorFromSet(cfg.GatewaySelector).String()
		list, err := c.Kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return "", []string{fmt.Sprintf("cannot look up the ingress gateway Service (label %s) to print the URL: %v", sel, err)}
		}
		if len(list.Items) == 0 {
			return "", []string{fmt.Sprintf("no ingress gateway Service has label %s, so the URL is unknown; is the ingress gateway installed? (see --gateway-selector)", sel)}
		}
		items := list.Items
		sort.Slice(items, func(i, j int) bool {
			if items[i].Namespace != items[j].Namespace {
				return items[i].Namespace < items[j].Namespace
			}
			return items[i].Name < items[j].Name
		})
		svc = &items[0]
	}
	url, hint := serviceURL(ctx, c, svc, cfg)
	if hint != "" {
		notes = append(notes, hint)
	}
	if url != "" && cfg.Host != "*" {
		notes = append(notes, fmt.Sprintf("requests must carry Host: %s; until DNS points there, try: curl -H 'Host: %s' %s", cfg.Host, cfg.Host, url))
	}
	return url, notes
}

// gatewayPending explains why a Gateway API Gateway has no address, from its
// Programmed condition when the controller has set one.
func gatewayPending(ctx context.Context, c Clients, ns, name string) string {
	hint := fmt.Sprintf("check later with: kubectl get gateway %s -n %s", name, ns)
	gw, err := getOrNil(ctx, c, Gateways, ns, name)
	if err == nil && gw != nil {
		if status, reason, msg, ok := mesh.GatewayCondition(gw, "Programmed"); ok && status == "False" {
			return fmt.Sprintf("gateway %s is not programmed yet (%s: %s); %s", name, reason, msg, hint)
		}
	}
	return fmt.Sprintf("gateway %s has no address yet; %s", name, hint)
}

func buildURL(addr string, port int32, cfg ExposeConfig) string {
	host := addr
	if port != 80 {
		host = net.JoinHostPort(addr, strconv.Itoa(int(port)))
	} else if strings.Contains(addr, ":") {
		host = "[" + addr + "]"
	}
	return "http://" + host + cfg.PathPrefix
}

// serviceURL is the gateway Service's address: its load balancer, else a
// NodePort on a node, else nothing (with a port-forward hint).
func serviceURL(ctx context.Context, c Clients, svc *corev1.Service, cfg ExposeConfig) (string, string) {
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == GatewayPort {
			sp = &svc.Spec.Ports[i]
		}
	}
	ref := svc.Namespace + "/" + svc.Name
	if sp == nil {
		return "", fmt.Sprintf("ingress gateway service %s has no port %d, so the URL is unknown", ref, GatewayPort)
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			return buildURL(in.IP, GatewayPort, cfg), ""
		}
		if in.Hostname != "" {
			return buildURL(in.Hostname, GatewayPort, cfg), ""
		}
	}
	if sp.NodePort != 0 {
		if addr := nodeAddress(ctx, c); addr != "" {
			hint := ""
			if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
				hint = fmt.Sprintf("the load balancer address of service %s is pending; using node port %d meanwhile (watch: kubectl get service -n %s %s -w)",
					ref, sp.NodePort, svc.Namespace, svc.Name)
			}
			return buildURL(addr, sp.NodePort, cfg), hint
		}
	}
	return "", fmt.Sprintf("service %s has no external address yet; meanwhile: kubectl port-forward -n %s service/%s 8080:%d, then open http://localhost:8080%s",
		ref, svc.Namespace, svc.Name, GatewayPort, cfg.PathPrefix)
}

// nodeAddress is the first node's external IP, else its internal IP.
func nodeAddress(ctx context.Context, c Clients) string {
	nodes, err := c.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		return ""
	}
	items := nodes.Items
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
		for _, n := range items {
			for _, a := range n.Status.Addresses {
				if a.Type == t && a.Address != "" {
					return a.Address
				}
			}
		}
	}
	return ""
}
