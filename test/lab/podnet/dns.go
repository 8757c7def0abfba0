package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// The cluster's DNS, as kubeadm and most installers set it up: a Service
// kube-system/kube-dns at the tenth address of the Service range (the
// kubelet's clusterDNS), answering for the cluster.local zone with CoreDNS's
// default TTL.
const (
	DNSNamespace = "kube-system"
	DNSService   = "kube-dns"
	// ClusterDNS is the address kube-dns gets when podnet creates it.
	ClusterDNS = "10.0.0.10"
	// ClusterDomain is the zone the resolver answers for.
	ClusterDomain = "cluster.local"
	dnsTTL        = 5
)

// Lookup finds the addresses of a name in the cluster zone: ok is false
// when the name does not exist (NXDOMAIN), an empty list is a name without
// addresses.
type Lookup func(name string) (addrs []netip.Addr, ok bool)

// dnsServer answers UDP queries on the cluster DNS address inside the node
// namespace, where kube-proxy would send them to CoreDNS.
type dnsServer struct {
	addr   netip.AddrPort
	conn   net.PacketConn
	lookup Lookup
	done   chan struct{}
}

// startDNS makes sure the kube-dns Service exists, puts its ClusterIP on the
// node's loopback (pods route everything through the node) and answers
// queries there from the Services the API holds.
func (d *daemon) startDNS(ctx context.Context) (*dnsServer, error) {
	svcIP, err := ensureKubeDNS(ctx, d)
	if err != nil {
		return nil, err
	}
	ns := d.node.net.NS
	if err := ip("-n", ns, "addr", "replace", svcIP.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	var conn net.PacketConn
	addr := netip.AddrPortFrom(svcIP, 53)
	if err := netlab.InNetNS(ns, func() (err error) {
		conn, err = net.ListenPacket("udp4", addr.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("listening for DNS on %s in %s: %w", addr, ns, err)
	}
	s := &dnsServer{addr: addr, conn: conn, lookup: d.lookupService, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// ensureKubeDNS returns the ClusterIP of kube-system/kube-dns, creating the
// Service as a real cluster has it when it is missing.
func ensureKubeDNS(ctx context.Context, d *daemon) (netip.Addr, error) {
	svcs := d.kube.CoreV1().Services(DNSNamespace)
	svc, err := svcs.Get(ctx, DNSService, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		want := kubeDNSService()
		svc, err = svcs.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsInvalid(err) {
			// The tenth address is taken: any address will do, pods read it
			// from the Service.
			want.Spec.ClusterIP = ""
			svc, err = svcs.Create(ctx, want, metav1.CreateOptions{})
		}
		if err == nil {
			d.cfg.logf("created Service %s/%s at %s", DNSNamespace, DNSService, svc.Spec.ClusterIP)
		}
		if apierrors.IsAlreadyExists(err) {
			// Another node's daemon made it first (its address taken, the
			// first create was refused as invalid).
			svc, err = svcs.Get(ctx, DNSService, metav1.GetOptions{})
		}
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("finding or creating Service %s/%s: %w", DNSNamespace, DNSService, err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("service %s/%s has ClusterIP %q; podnet needs an IPv4 address there", DNSNamespace, DNSService, svc.Spec.ClusterIP)
	}
	return ip, nil
}

func kubeDNSService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: DNSService, Namespace: DNSNamespace, Labels: map[string]string{
			"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "app.kubernetes.io/managed-by": "podnet",
		}},
		Spec: corev1.ServiceSpec{
			ClusterIP: ClusterDNS,
			Selector:  map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// lookupService answers <service>.<namespace>.svc.cluster.local with the
// Service's ClusterIP, or for a headless Service its ready endpoints.
func (d *daemon) lookupService(name string) ([]netip.Addr, bool) {
	parts := strings.Split(strings.TrimSuffix(strings.ToLower(name), "."), ".")
	if len(parts) != 5 || parts[2] != "svc" || parts[3]+"."+parts[4] != ClusterDomain {
		return nil, false
	}
	svc, err := d.services.Services(parts[1]).Get(parts[0])
	if err != nil {
		return nil, false
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		var out []netip.Addr
		for _, e := range d.endpoints(parts[0] + "." + parts[1] + ".svc." + ClusterDomain) {
			out = append(out, e.IP)
		}
		return out, true
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !ip.Is4() {
		return nil, true
	}
	return []netip.Addr{ip}, true
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if out, err := Answer(buf[:n], s.lookup); err == nil {
			_, _ = s.conn.WriteTo(out, from)
		}
	}
}

func (s *dnsServer) close() {
	_ = s.conn.Close()
	<-s.done
}

// Answer builds the response to one query: A records for names in the
// cluster zone, an empty answer (NODATA) for other types of existing
// names, NXDOMAIN for unknown names in the zone and REFUSED outside it
// (the lab has no upstream resolver). Negative answers carry the zone's
// SOA, as CoreDNS sends it.
func Answer(query []byte, lookup Lookup) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	if h.Response {
		return nil, errors.New("not a query")
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, OpCode: h.OpCode}
	q, err := p.Question()
	if err != nil || h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeFormatError
		if h.OpCode != 0 {
			resp.RCode = dnsmessage.RCodeNotImplemented
		}
		b := dnsmessage.NewBuilder(nil, resp)
		return b.Finish()
	}
	name := strings.ToLower(q.Name.String())
	inZone := name == ClusterDomain+"." || strings.HasSuffix(name, "."+ClusterDomain+".")
	var addrs []netip.Addr
	found := false
	switch {
	case !inZone:
		resp.Authoritative = false
		resp.RCode = dnsmessage.RCodeRefused
	default:
		addrs, found = lookup(name)
		if !found {
			resp.RCode = dnsmessage.RCodeNameError
		}
	}
	b := dnsmessage.NewBuilder(nil, resp)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	answered := false
	if found && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		for _, a := range addrs {
			if !a.Is4() {
				continue
			}
			rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
			if err := b.AResource(rh, dnsmessage.AResource{A: a.As4()}); err != nil {
				return nil, err
			}
			answered = true
		}
	}
	if err := b.StartAuthorities(); err != nil {
		return nil, err
	}
	if inZone && !answered {
		zone := dnsmessage.MustNewName(ClusterDomain + ".")
		rh := dnsmessage.ResourceHeader{Name: zone, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		soa := dnsmessage.SOAResource{
			NS: dnsmessage.MustNewName("ns.dns." + ClusterDomain + "."), MBox: dnsmessage.MustNewName("hostmaster." + ClusterDomain + "."),
			Serial: 1, Refresh: 7200, Retry: 1800, Expire: 86400, MinTTL: dnsTTL,
		}
		if err := b.SOAResource(rh, soa); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// Resolve asks the server at addr for the A records of name as a libc
// resolver does: an A and an AAAA query on one UDP socket, both answers
// awaited. dial opens the socket (inside the pod's namespace). It returns
// the addresses and the smallest TTL.
func Resolve(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), name string) ([]netip.Addr, time.Duration, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, 0, err
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	idA, idAAAA := uint16(time.Now().UnixNano()), uint16(time.Now().UnixNano()>>16)|1
	for _, q := range []struct {
		id uint16
		t  dnsmessage.Type
	}{{idA, dnsmessage.TypeA}, {idAAAA, dnsmessage.TypeAAAA}} {
		msg := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: q.id, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: qname, Type: q.t, Class: dnsmessage.ClassINET}},
		}
		b, err := msg.Pack()
		if err != nil {
			return nil, 0, err
		}
		if _, err := conn.Write(b); err != nil {
			return nil, 0, fmt.Errorf("sending the DNS query for %s: %w", name, err)
		}
	}
	var addrs []netip.Addr
	ttl := time.Duration(0)
	gotA, gotAAAA := false, false
	buf := make([]byte, 1500)
	for !gotA || !gotAAAA {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, 0, fmt.Errorf("waiting for the DNS answer for %s: %w", name, err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil || !m.Response {
			continue
		}
		switch m.ID {
		case idA:
			if gotA {
				continue
			}
			gotA = true
			if m.RCode != dnsmessage.RCodeSuccess {
				return nil, 0, fmt.Errorf("lookup %s: %s", strings.TrimSuffix(name, "."), rcodeText(m.RCode))
			}
			for _, a := range m.Answers {
				if r, ok := a.Body.(*dnsmessage.AResource); ok {
					addrs = append(addrs, netip.AddrFrom4(r.A))
					if t := time.Duration(a.Header.TTL) * time.Second; ttl == 0 || t < ttl {
						ttl = t
					}
				}
			}
		case idAAAA:
			gotAAAA = true
		}
	}
	if len(addrs) == 0 {
		return nil, 0, fmt.Errorf("lookup %s: no IPv4 address", strings.TrimSuffix(name, "."))
	}
	return addrs, ttl, nil
}

func rcodeText(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeNameError:
		return "no such host"
	case dnsmessage.RCodeServerFailure:
		return "server misbehaving"
	case dnsmessage.RCodeRefused:
		return "refused"
	}
	return c.String()
}

// dnsCache is an app's view of DNS: the last answer until its TTL runs out.
type dnsCache struct {
	mu      sync.Mutex
	addrs   []netip.Addr
	expires time.Time
}

// resolve returns name's addresses, asking the cluster DNS from inside the
// pod's namespace once the cached answer expired.
func (c *dnsCache) resolve(ctx context.Context, ns string, server netip.AddrPort, name string) ([]netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.expires) {
		return c.addrs, nil
	}
	dial := func(ctx context.Context) (conn net.Conn, err error) {
		err = netlab.InNetNS(ns, func() (err error) {
			var d net.Dialer
			conn, err = d.DialContext(ctx, "udp4", server.String())
			return err
		})
		return conn, err
	}
	addrs, ttl, err := Resolve(ctx, dial, name)
	if err != nil {
		return nil, err
	}
	if ttl < time.Second {
		ttl = time.Second
	}
	c.addrs, c.expires = addrs, time.Now().Add(ttl)
	return addrs, nil
}
