package podnet

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// On real namespaces (a node with a bridge and one pod, as podnet lays
// them out): the kubelet's probe leaves the node from the node's address,
// and the pod resolves names through the DNS on the node's loopback at the
// cluster DNS address. Needs root.
func TestNodeProbesAndDNS(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for network namespaces: CI runs as root, so this must run there")
		}
		t.Skip("needs root for network namespaces")
	}
	l, err := netlab.Setup(netlab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Teardown()
	p, err := l.AddPod("app")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := netlab.InNetNS(p.NS, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(p.IP.String(), "80"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var from []string
	srv := &http.Server{Handler: appHealth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NotFound(w, r)
	})), ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			from = append(from, netip.MustParseAddrPort(c.RemoteAddr().String()).Addr().String())
			mu.Unlock()
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pb := Prober{Dial: dialFrom(l.Node, l.NodeIP)}
	for _, pr := range []Probe{
		{Scheme: "HTTP", Port: 80, Path: HealthPath, Timeout: time.Second},
		{Scheme: "TCP", Port: 80, Timeout: time.Second},
	} {
		if err := pb.Run(ctx, p.IP, pr); err != nil {
			t.Errorf("%s: %v", pr, err)
		}
	}
	if err := pb.Run(ctx, p.IP, Probe{Scheme: "HTTP", Port: 80, Path: "/nope", Timeout: time.Second}); err == nil || err.Error() != "HTTP probe failed with statuscode: 404" {
		t.Errorf("probe of a missing path: %v", err)
	}
	mu.Lock()
	for _, f := range from {
		if f != l.NodeIP.String() {
			t.Errorf("a probe came from %s, want the node's %s", f, l.NodeIP)
		}
	}
	if len(from) != 3 {
		t.Errorf("%d probe connections, want 3 (one per probe)", len(from))
	}
	mu.Unlock()

	dnsIP := netip.MustParseAddr(ClusterDNS)
	if err := ip("-n", l.Node, "addr", "replace", dnsIP.String()+"/32", "dev", "lo"); err != nil {
		t.Fatal(err)
	}
	var conn net.PacketConn
	server := netip.AddrPortFrom(dnsIP, 53)
	if err := netlab.InNetNS(l.Node, func() (err error) {
		conn, err = net.ListenPacket("udp4", server.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{addr: server, conn: conn, lookup: testLookup, done: make(chan struct{})}
	go s.serve()
	defer s.close()
	var cache dnsCache
	addrs, err := cache.resolve(ctx, p.NS, server, "backend.default.svc.cluster.local")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "10.0.0.42" {
		t.Fatalf("resolving from the pod: %v, %v", addrs, err)
	}
	// Cached for the TTL: no second query while the server is gone.
	s.close()
	if addrs, err := cache.resolve(ctx, p.NS, server, "backend.default.svc.cluster.local"); err != nil || len(addrs) != 1 {
		t.Errorf("cached answer: %v, %v", addrs, err)
	}
}

// The network plan: addresses, pod subnets, bridges and routes per node,
// and which node a pod IP belongs to.
func TestPlan(t *testing.T) {
	plan, err := Plan("node1", "node2")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range plan {
		got = append(got, fmt.Sprintf("%s ns=%s ip=%s pods=%s bridge=%s/%s mac=%s routes=%v",
			n.Name, n.NS, n.IP, n.PodCIDR, n.BridgeIP, n.BridgeSubnet, n.BridgeMAC, n.Routes(plan)))
	}
	got = append(got, fmt.Sprintf("host=%v", HostRoutes(plan)))
	want := []string{
		"node1 ns=kml-node ip=10.243.0.2 pods=10.244.0.0/16 bridge=10.244.255.1/10.244.255.0/24 mac=02:42:0a:f4:ff:01 routes=[10.245.0.0/16 via 10.243.0.3]",
		"node2 ns=kml-node2 ip=10.243.0.3 pods=10.245.0.0/16 bridge=10.245.255.1/10.245.255.0/24 mac=02:42:0a:f5:ff:01 routes=[10.244.0.0/16 via 10.243.0.2]",
		"host=[10.244.0.0/16 via 10.243.0.2 10.245.0.0/16 via 10.243.0.3]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// node1 keeps the addresses the lab's Node object, kwok --cidr and
	// the tests name.
	if n := plan[0]; n.NS != NodeNS || n.IP.String() != NodeIP || n.PodCIDR.String() != PodCIDR || !netip.MustParsePrefix(lanSubnet).Contains(n.IP) {
		t.Errorf("node1 is %+v, want %s at %s with %s on %s", n, NodeNS, NodeIP, PodCIDR, lanSubnet)
	}
	for _, tc := range []struct{ addr, ns string }{
		{"10.244.0.7", "kml-node"}, {"10.244.254.254", "kml-node"}, {"10.245.0.1", "kml-node2"},
		{"10.251.3.4", "kml-node8"}, {"10.252.0.1", ""}, {"10.243.0.2", ""}, {"10.0.0.10", ""},
	} {
		n, ok := NodeFor(netip.MustParseAddr(tc.addr))
		if n.NS != tc.ns || ok != (tc.ns != "") {
			t.Errorf("NodeFor(%s) = %q, %v; want %q", tc.addr, n.NS, ok, tc.ns)
		}
	}
	if n := podNetFor("default", "be", "uid", netip.MustParseAddr("10.245.0.3")); n.node.NS != "kml-node2" || n.NS != "kml-default.be" {
		t.Errorf("pod 10.245.0.3 is on %q in %q, want kml-node2 in kml-default.be", n.node.NS, n.NS)
	}
	for _, tc := range []struct {
		names []string
		err   string
	}{
		{nil, "the pod network has room for 1 to 8 nodes, not 0"},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, "the pod network has room for 1 to 8 nodes, not 9"},
		{[]string{"node1", "node1"}, `node names must be set and distinct: ["node1" "node1"]`},
		{[]string{""}, `node names must be set and distinct: [""]`},
	} {
		if _, err := Plan(tc.names...); err == nil || err.Error() != tc.err {
			t.Errorf("Plan(%q): %v, want %s", tc.names, err, tc.err)
		}
	}
}
