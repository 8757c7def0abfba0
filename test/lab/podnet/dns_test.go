package podnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

func testLookup(name string) ([]netip.Addr, bool) {
	switch name {
	case "backend.default.svc.cluster.local.":
		return []netip.Addr{netip.MustParseAddr("10.0.0.42")}, true
	case "db.default.svc.cluster.local.":
		return []netip.Addr{netip.MustParseAddr("10.244.0.7"), netip.MustParseAddr("10.244.0.8")}, true
	case "empty.default.svc.cluster.local.":
		return nil, true
	}
	return nil, false
}

// describe prints a response as one line: rcode, flags, answers, authority.
func describe(t *testing.T, b []byte) string {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	var parts []string
	parts = append(parts, m.RCode.String())
	if m.Authoritative {
		parts = append(parts, "aa")
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			parts = append(parts, fmt.Sprintf("A=%s/%d", netip.AddrFrom4(r.A), a.Header.TTL))
		}
	}
	for _, a := range m.Authorities {
		if r, ok := a.Body.(*dnsmessage.SOAResource); ok {
			parts = append(parts, fmt.Sprintf("SOA=%s/%d", r.NS, r.MinTTL))
		}
	}
	return strings.Join(parts, " ")
}

func query(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnswer(t *testing.T) {
	tests := []struct {
		name string
		typ  dnsmessage.Type
		want string
	}{
		{"backend.default.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess aa A=10.0.0.42/5"},
		{"Backend.Default.SVC.cluster.local.", dnsmessage.TypeA, "RCodeSuccess aa A=10.0.0.42/5"},
		{"db.default.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess aa A=10.244.0.7/5 A=10.244.0.8/5"},
		{"backend.default.svc.cluster.local.", dnsmessage.TypeAAAA, "RCodeSuccess aa SOA=ns.dns.cluster.local./5"},
		{"empty.default.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess aa SOA=ns.dns.cluster.local./5"},
		{"nosuch.default.svc.cluster.local.", dnsmessage.TypeA, "RCodeNameError aa SOA=ns.dns.cluster.local./5"},
		{"backend.default.svc.cluster.local.default.svc.cluster.local.", dnsmessage.TypeA, "RCodeNameError aa SOA=ns.dns.cluster.local./5"},
		{"example.com.", dnsmessage.TypeA, "RCodeRefused"},
		{"notcluster.local.", dnsmessage.TypeA, "RCodeRefused"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.typ.String(), func(t *testing.T) {
			out, err := Answer(query(t, tt.name, tt.typ), testLookup)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(t, out); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Answer([]byte{1, 2, 3}, testLookup); err == nil {
		t.Error("a 3-byte query was answered")
	}
}

// The resolver answers a libc-like client over real UDP sockets.
func TestResolveOverUDP(t *testing.T) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{conn: conn, lookup: testLookup, done: make(chan struct{})}
	go s.serve()
	defer s.close()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp4", conn.LocalAddr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		want    string
		wantErr string
	}{
		{name: "backend.default.svc.cluster.local", want: "[10.0.0.42] 5s"},
		{name: "db.default.svc.cluster.local.", want: "[10.244.0.7 10.244.0.8] 5s"},
		{name: "nosuch.default.svc.cluster.local", wantErr: "lookup nosuch.default.svc.cluster.local: no such host"},
		{name: "empty.default.svc.cluster.local", wantErr: "lookup empty.default.svc.cluster.local: no IPv4 address"},
		{name: "example.com", wantErr: "lookup example.com: refused"},
	}
	for _, tt := range tests {
		addrs, ttl, err := Resolve(ctx, dial, tt.name)
		got := fmt.Sprintf("%v %v", addrs, ttl)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: %s, %v; want error %q", tt.name, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}
}

// lookupService reads names from the Services (and a headless Service's
// EndpointSlices) the daemon watches.
func TestLookupService(t *testing.T) {
	svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	sliceIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	podIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, s := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "default"}, Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.42"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "data"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}},
	} {
		if err := svcIdx.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	ready := true
	if err := sliceIdx.Add(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "db-x", Namespace: "data", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "db-0"}}},
	}); err != nil {
		t.Fatal(err)
	}
	d := &daemon{services: corelisters.NewServiceLister(svcIdx), slices: discoverylisters.NewEndpointSliceLister(sliceIdx), pods: corelisters.NewPodLister(podIdx)}
	for name, want := range map[string]string{
		"backend.default.svc.cluster.local.":  "[10.0.0.42] true",
		"BACKEND.default.svc.cluster.local":   "[10.0.0.42] true",
		"db.data.svc.cluster.local.":          "[10.244.0.9] true",
		"backend.other.svc.cluster.local.":    "[] false",
		"default.svc.cluster.local.":          "[] false",
		"x.backend.default.svc.cluster.local": "[] false",
	} {
		addrs, ok := d.lookupService(name)
		if got := fmt.Sprintf("%v %v", addrs, ok); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}
