package podnet

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
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
