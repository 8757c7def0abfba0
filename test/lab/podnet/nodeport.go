package podnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// nodePortNamespaces are the workshop's and the ingress gateway's: podnet
// runs their pods and plays kube-proxy for their NodePorts.
var nodePortNamespaces = map[string]bool{"default": true, "istio-system": true}

// nodePort is kube-proxy for one NodePort: a listener on the node's
// address that forwards each connection to a ready endpoint of the Service.
type nodePort struct {
	ln        net.Listener
	namespace string
	service   string
	port      string // the Service port's name
	wg        sync.WaitGroup
}

func (d *daemon) syncNodePorts(ctx context.Context) {
	if d.nodePorts == nil {
		d.nodePorts = map[int32]*nodePort{}
	}
	svcs, _ := d.services.List(labels.Everything())
	want := map[int32]*corev1.Service{}
	ports := map[int32]string{}
	for _, s := range svcs {
		if !nodePortNamespaces[s.Namespace] || (s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer) {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.NodePort != 0 && p.Protocol != corev1.ProtocolUDP {
				want[p.NodePort], ports[p.NodePort] = s, p.Name
			}
		}
	}
	for port, np := range d.nodePorts {
		if s, ok := want[port]; !ok || s.Namespace != np.namespace || s.Name != np.service || ports[port] != np.port {
			np.close()
			delete(d.nodePorts, port)
		}
	}
	for port, s := range want {
		if _, ok := d.nodePorts[port]; ok {
			continue
		}
		np := &nodePort{namespace: s.Namespace, service: s.Name, port: ports[port]}
		addr := net.JoinHostPort(d.node.net.IP.String(), strconv.Itoa(int(port)))
		if err := netlab.InNetNS(d.node.net.NS, func() (err error) {
			np.ln, err = net.Listen("tcp", addr)
			return err
		}); err != nil {
			d.cfg.logf("NodePort %d of %s/%s: %v", port, s.Namespace, s.Name, err)
			continue
		}
		d.nodePorts[port] = np
		go np.serve(ctx, d)
		d.cfg.logf("NodePort %s → service %s/%s port %s", addr, s.Namespace, s.Name, np.port)
	}
}

func (np *nodePort) serve(ctx context.Context, d *daemon) {
	for {
		c, err := np.ln.Accept()
		if err != nil {
			return
		}
		np.wg.Add(1)
		go func() {
			defer np.wg.Done()
			defer c.Close()
			addr, err := d.nodePortTarget(np)
			if err != nil {
				return
			}
			var up net.Conn
			if err := netlab.InNetNS(d.node.net.NS, func() (err error) {
				up, err = net.Dial("tcp", addr)
				return err
			}); err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// nodePortTarget picks a ready endpoint address and port of the Service.
func (d *daemon) nodePortTarget(np *nodePort) (string, error) {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: np.service})
	slices, _ := d.slices.EndpointSlices(np.namespace).List(sel)
	var addrs []string
	for _, s := range slices {
		port := int32(0)
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == np.port && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if (e.Conditions.Ready == nil || *e.Conditions.Ready) && len(e.Addresses) > 0 {
				addrs = append(addrs, net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(port))))
			}
		}
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("service %s/%s has no ready endpoint", np.namespace, np.service)
	}
	d.rndMu.Lock()
	defer d.rndMu.Unlock()
	return addrs[d.rnd.IntN(len(addrs))], nil
}

func (np *nodePort) close() {
	_ = np.ln.Close()
}
