package sniff

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Datagram frames are built with gopacket's serializer, an implementation
// independent of the decoder under test.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ipLayers(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice()), Id: 0x1234}
		return ip, ip
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
	return ip, ip
}

func ethFor(src netip.Addr) *layers.Ethernet {
	et := layers.EthernetTypeIPv4
	if src.Is6() {
		et = layers.EthernetTypeIPv6
	}
	return &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: et}
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// udpFrame is one Ethernet frame carrying a UDP datagram.
func udpFrame(t testing.TB, src, dst string, payload []byte) frame {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	ip, nl := ipLayers(s.Addr(), d.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(s.Port()), DstPort: layers.UDPPort(d.Port())}
	if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return frame{data: serialize(t, ethFor(s.Addr()), ip, udp, gopacket.Payload(payload)), ts: t0}
}

// fragmentFrames cuts a UDP datagram into IP fragments of at most mtu
// payload bytes (a multiple of 8), as a kernel does past the path MTU.
func fragmentFrames(t testing.TB, src, dst string, payload []byte, mtu int) []frame {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	whole := udpFrame(t, src, dst, payload).data
	hdr := 14 + 20
	if s.Addr().Is6() {
		hdr = 14 + 40
	}
	body := whole[hdr:] // UDP header and payload
	var out []frame
	for off := 0; off < len(body); off += mtu {
		end := min(off+mtu, len(body))
		more := end < len(body)
		var ip gopacket.SerializableLayer
		if s.Addr().Is4() {
			v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Id: 0x4242, FragOffset: uint16(off / 8),
				SrcIP: net.IP(s.Addr().AsSlice()), DstIP: net.IP(d.Addr().AsSlice())}
			if more {
				v4.Flags = layers.IPv4MoreFragments
			}
			ip = v4
			out = append(out, frame{data: serialize(t, ethFor(s.Addr()), ip, gopacket.Payload(body[off:end])), ts: t0})
			continue
		}
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment,
			SrcIP: net.IP(s.Addr().AsSlice()), DstIP: net.IP(d.Addr().AsSlice())}
		fh := []byte{byte(layers.IPProtocolUDP), 0, byte(off >> 8), byte(off & 0xf8), 0, 0, 0x42, 0x42}
		if more {
			fh[3] |= 1
		}
		out = append(out, frame{data: serialize(t, ethFor(s.Addr()), v6, gopacket.Payload(append(fh, body[off:end]...))), ts: t0})
	}
	return out
}

func dnsQuery(t testing.TB, name string, response bool) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: response, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// midstream is a pooled TLS connection caught after its handshake.
func midstream(client, server string) []frame {
	var records []byte
	for i := 0; i < 4; i++ {
		records = append(records, 0x17, 0x03, 0x03, 0x00, 0x40)
		records = append(records, bytes.Repeat([]byte{0x9c}, 0x40)...)
	}
	return newConv(LinkTypeEthernet, client, server).send(true, records, 1000).send(false, records, 1000).frames
}

func probe(client, server, path string) []frame {
	return newConv(LinkTypeEthernet, client, server).handshake().
		send(true, []byte("GET "+path+" HTTP/1.1\r\nHost: "+server+"\r\nUser-Agent: kube-probe/1.35\r\n\r\n"), 1000).
		send(false, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 1000).fin().frames
}

func hboneHello(t testing.TB) []chunk {
	return tlsHelloChunks(t, "", []string{"h2"})
}

// tlsHelloChunks is a Go TLS 1.3 mTLS exchange with the given SNI (none
// when empty) and ALPN offer.
func tlsHelloChunks(t testing.TB, sni string, alpn []string) []chunk {
	cert, pool := testCert(t, "backend")
	client := &tls.Config{ServerName: sni, InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}, NextProtos: alpn, MinVersion: tls.VersionTLS13}
	server := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: alpn}
	return tlsExchange(t, client, server, []byte("ping"), []byte("pong"))
}

// policyCase builds one capture, analyses it with cfg and returns the report.
func policyReport(t *testing.T, cfg Config, frames ...[]frame) *Report {
	t.Helper()
	rep, _ := analyzeBytes(t, pcapBytes(t, LinkTypeEthernet, frames...), cfg)
	return rep
}

// TestFlowRules drives every row of flowRules with a capture that should
// land on it, and fails when a row has no case.
func TestFlowRules(t *testing.T) {
	mtls := mtlsChunks(t)
	pod := &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}, Sidecar: true}
	amb := ambientPod()
	tests := []struct {
		rule    string
		cfg     Config
		frames  func() []frame
		verdict Verdict
		istio   string
	}{
		{"mesh-bypass", Config{Pod: amb}, func() []frame { return plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 100).frames }, VerdictPlaintext, ""},
		{"cleartext", Config{}, func() []frame { return plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 100).frames }, VerdictPlaintext, ""},
		{"cleartext", Config{}, func() []frame {
			return []frame{udpFrame(t, "10.1.0.5:5000", "10.1.0.9:8125", []byte("checkout.requests:1|c|#env:prod"))}
		}, VerdictPlaintext, ""},
		{"cleartext", Config{}, func() []frame {
			return []frame{udpFrame(t, "10.1.0.5:5000", "10.1.0.9:5353", dnsQuery(t, "backend.local.", false))}
		}, VerdictPlaintext, ""},
		{"grep-in-clear", Config{Grep: "TGN"}, func() []frame {
			return []frame{udpFrame(t, "10.1.0.5:5000", "10.1.0.9:9999", []byte{0, 1, 2, 'T', 'G', 'N', 0xff})}
		}, VerdictPlaintext, ""},
		{"istio-hello", Config{}, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:80").handshake().play(mtls, 1000).fin().frames
		}, VerdictEncryptedIstio, "sidecar"},
		{"hbone-hello", Config{}, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:15008").handshake().play(hboneHello(t), 1000).fin().frames
		}, VerdictEncryptedIstio, "hbone"},
		{"other-hello", Config{}, func() []frame {
			// h2 to 15008 with an SNI is not ztunnel's hello.
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:15008").handshake().play(tlsHelloChunks(t, "backend", []string{"h2"}), 1000).fin().frames
		}, VerdictEncryptedTLS, ""},
		{"other-cipher", Config{}, func() []frame {
			quic := append([]byte{0xc3, 0, 0, 0, 1, 8}, bytes.Repeat([]byte{0xaa}, 40)...)
			return []frame{udpFrame(t, "10.1.0.5:5000", "10.1.0.9:443", quic)}
		}, VerdictEncryptedTLS, ""},
		{"hbone-pooled", Config{}, func() []frame { return midstream("10.1.0.5:40000", "10.1.0.7:15008") }, VerdictEncryptedIstio, "hbone"},
		{"associated", Config{}, func() []frame {
			proven := newConv(LinkTypeEthernet, "10.1.0.5:40001", "10.1.0.7:80").handshake().play(mtls, 1000).fin().frames
			return append(midstream("10.1.0.5:40000", "10.1.0.7:80"), proven...)
		}, VerdictEncryptedIstio, "sidecar"},
		{"pod-context", Config{Pod: pod}, func() []frame { return midstream("10.1.0.5:40000", "10.1.0.7:80") }, VerdictEncryptedIstio, "sidecar"},
		{"no-handshake", Config{}, func() []frame { return midstream("10.1.0.5:40000", "10.1.0.7:80") }, VerdictEncryptedUnproven, ""},
		{"too-little", Config{}, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:9000").handshake().send(true, []byte{0x16, 0x03}, 10).frames
		}, VerdictUnknown, ""},
		{"unrecognised", Config{}, func() []frame {
			return []frame{udpFrame(t, "10.1.0.5:5000", "10.1.0.9:9999", bytes.Repeat([]byte{0x00, 0xfe}, 30))}
		}, VerdictUnknown, ""},
		{"no-payload", Config{}, func() []frame {
			c := newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80")
			c.add(true, 1, tcpSYN, nil)
			c.add(false, 0, tcpRST|tcpACK, nil)
			return c.frames
		}, VerdictNoData, ""},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			rep := policyReport(t, tt.cfg, tt.frames())
			if len(rep.Flows) == 0 {
				t.Fatalf("no application flow:\n%s", summary(t, rep))
			}
			f := rep.Flows[0]
			if f.Rule != tt.rule || f.Verdict != tt.verdict || f.Istio != tt.istio {
				t.Errorf("rule %s verdict %s istio %q; want %s %s %q\n%s", f.Rule, f.Verdict, f.Istio, tt.rule, tt.verdict, tt.istio, summary(t, rep))
			}
			covered[tt.rule] = true
		})
	}
	for _, r := range flowRules {
		if !covered[r.Name] {
			t.Errorf("flow rule %s has no test case", r.Name)
		}
	}
}

func TestInfraRules(t *testing.T) {
	mtls := mtlsChunks(t)
	node := netip.MustParseAddr("10.243.0.2")
	pod := &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}, NodeIP: node, ProbeRequests: map[uint16][]string{8080: {"GET /ready"}}, Sidecar: true}
	app := newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:80").handshake().play(mtls, 1000).fin().frames
	tests := []struct {
		rule   string
		frames []frame
	}{
		{"istio-health", probe("10.243.0.2:50000", "10.1.0.7:15021", "/healthz/ready")},
		{"istio-agent", probe("10.243.0.2:50001", "10.1.0.7:15020", "/app-health/app/readyz")},
		{"envoy-metrics", probe("10.1.0.99:50002", "10.1.0.7:15090", "/stats/prometheus")},
		{"istiod", midstream("10.1.0.7:50003", "10.1.0.2:15012")},
		{"istio-local", probe("10.1.0.9:50004", "10.1.0.7:15000", "/config_dump")},
		{"kubelet-probe", probe("10.243.0.2:50005", "10.1.0.7:8080", "/ready")},
		{"cluster-dns", []frame{udpFrame(t, "10.1.0.7:40000", "10.0.0.10:53", dnsQuery(t, "backend.default.svc.cluster.local.", false)),
			udpFrame(t, "10.0.0.10:53", "10.1.0.7:40000", dnsQuery(t, "backend.default.svc.cluster.local.", true))}},
		{"icmp", []frame{{data: serialize(t, ethFor(node), &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
			SrcIP: net.IP{10, 1, 0, 7}, DstIP: net.IP{10, 1, 0, 5}}, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}, gopacket.Payload("0123456789abcdefghijklmnopqrstuv")), ts: t0}}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			rep := policyReport(t, Config{Pod: pod}, app, tt.frames)
			if rep.Verdict != VerdictEncryptedIstio || len(rep.Infra) != 1 || rep.Infra[0].Infra != tt.rule {
				t.Fatalf("verdict %s, infra %v; want ENCRYPTED (Istio mTLS) and one %s flow apart\n%s", rep.Verdict, rep.Infra, tt.rule, summary(t, rep))
			}
			covered[tt.rule] = true
			with := policyReport(t, Config{Pod: pod, IncludeInfra: true}, app, tt.frames)
			if len(with.Infra) != 0 || len(with.Flows) != 2 {
				t.Errorf("--include-infra: %d flows, %d apart; want 2 and 0", len(with.Flows), len(with.Infra))
			}
		})
	}
	for _, r := range infraRules {
		if !covered[r.Name] {
			t.Errorf("infra rule %s has no test case", r.Name)
		}
	}

	// An ambient pod: istio-cni rewrites the kubelet's probes to come from
	// 169.254.7.127 (fd16:9254:7127:1337:ffff:ffff:ffff:ffff), so that is
	// where they are seen; from that address to a pod not in ambient mode,
	// or to a port nothing probes, it is no probe.
	amb := ambientPod()
	amb.ProbeRequests = map[uint16][]string{8080: {"GET /ready"}, 9000: {ProbeTCP}}
	hbone := midstream("10.1.0.5:40000", "10.1.0.7:15008")
	if rep := policyReport(t, Config{Pod: amb}, hbone, probe("169.254.7.127:50006", "10.1.0.7:8080", "/ready")); rep.Verdict != VerdictEncryptedIstio ||
		len(rep.Infra) != 1 || rep.Infra[0].Infra != "kubelet-probe" {
		t.Errorf("ambient probe: verdict %s, infra %v; want ENCRYPTED (Istio HBONE) and the probe apart\n%s", rep.Verdict, rep.Infra, summary(t, rep))
	}
	amb6 := &PodContext{IPs: []netip.Addr{netip.MustParseAddr("fd00::7")}, Ambient: true, ProbeRequests: map[uint16][]string{8080: {"GET /ready"}}}
	if rep := policyReport(t, Config{Pod: amb6}, probe("[fd16:9254:7127:1337:ffff:ffff:ffff:ffff]:50006", "[fd00::7]:8080", "/ready")); len(rep.Infra) != 1 {
		t.Errorf("ambient probe over IPv6: infra %v; want the probe apart\n%s", rep.Infra, summary(t, rep))
	}
	tcpProbe := newConv(LinkTypeEthernet, "169.254.7.127:50007", "10.1.0.7:9000").handshake().fin().frames
	if rep := policyReport(t, Config{Pod: amb}, hbone, tcpProbe); len(rep.Infra) != 1 || rep.Infra[0].Infra != "kubelet-probe" {
		t.Errorf("ambient TCP probe: infra %v; want it apart\n%s", rep.Infra, summary(t, rep))
	}
	// istio-cni rewrites every connection from the node, not only the
	// kubelet's: what is not the probe itself stays application traffic.
	order := newConv(LinkTypeEthernet, "169.254.7.127:50008", "10.1.0.7:8080").handshake().
		send(true, []byte("POST /orders HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\n\r\n{}"), 1000).
		send(false, []byte("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"), 1000).fin().frames
	for name, frames := range map[string][]frame{
		"to a sidecar pod":              probe("169.254.7.127:50006", "10.1.0.7:8080", "/ready"),
		"to an unprobed port":           probe("169.254.7.127:50006", "10.1.0.7:9090", "/ready"),
		"to another path":               probe("169.254.7.127:50006", "10.1.0.7:8080", "/admin"),
		"a POST to the probed port":     order,
		"with data to a TCP probe port": newConv(LinkTypeEthernet, "169.254.7.127:50009", "10.1.0.7:9000").handshake().send(true, []byte("PUT /cache HTTP/1.1\r\nHost: shop\r\n\r\n"), 100).fin().frames,
	} {
		cfg := Config{Pod: amb}
		if name == "to a sidecar pod" {
			cfg.Pod = pod
		}
		if rep := policyReport(t, cfg, frames); len(rep.Infra) != 0 || rep.Verdict != VerdictPlaintext {
			t.Errorf("from 169.254.7.127 %s: verdict %s, infra %v; want plaintext, not a probe\n%s", name, rep.Verdict, rep.Infra, summary(t, rep))
		}
	}
}

func TestCaptureRules(t *testing.T) {
	tests := []struct {
		rule string
		t    tally
	}{
		{"no-traffic", tally{}},
		{"mixed", tally{plain: 1, istio: 14}},
		{"mixed", tally{unknown: 1, istio: 14}},
		{"plaintext", tally{plain: 3}},
		{"unknown", tally{unknown: 2}},
		{"not-istio", tally{tls: 1, istio: 3, unproven: 1}},
		{"unproven", tally{istio: 14, unproven: 1}},
		{"istio", tally{istio: 14}},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		want := captureRules[slices.IndexFunc(captureRules, func(r captureRule) bool { return r.Name == tt.rule })].Verdict
		if got := decideCapture(tt.t); got != want {
			t.Errorf("%+v: %s, want %s (%s)", tt.t, got, want, tt.rule)
		}
		covered[tt.rule] = true
	}
	for _, r := range captureRules {
		if !covered[r.Name] {
			t.Errorf("capture rule %s has no test case", r.Name)
		}
	}
}

// The failures a real mesh showed, each as a capture.
func TestRealMeshFailures(t *testing.T) {
	mtls := mtlsChunks(t)
	istio := func(port int) []frame {
		return newConv(LinkTypeEthernet, "10.1.0.5:"+strconv.Itoa(port), "10.1.0.7:80").handshake().play(mtls, 1000).fin().frames
	}
	t.Run("a cleartext UDP marker beside Istio mTLS is not encrypted", func(t *testing.T) {
		rep := policyReport(t, Config{Grep: "TGN"}, istio(40000), []frame{udpFrame(t, "10.1.0.7:41000", "10.1.0.9:514", []byte("<14>backend: greeting Hi TGN meetup sent"))})
		if rep.Verdict != VerdictMixed || rep.GrepHits != 1 {
			t.Errorf("verdict %s, %d hits; want MIXED, 1\n%s", rep.Verdict, rep.GrepHits, summary(t, rep))
		}
		if len(rep.Why) != 1 || !strings.Contains(rep.Why[0], "10.1.0.7:41000 → 10.1.0.9:514") {
			t.Errorf("why %q does not name the UDP flow", rep.Why)
		}
	})
	t.Run("an idle pooled HBONE connection is one record each way", func(t *testing.T) {
		// As the lab's frontend kept its connections to the backends once a
		// waypoint took its calls: an HTTP/2 PING and its ack, each a TLS
		// 1.3 record of 34 bytes (9 of frame, 8 of data, 1 of type, 16 of
		// tag). tshark reads them as TLS.
		ping := func(fill byte) []byte {
			return append([]byte{0x17, 0x03, 0x03, 0x00, 0x22}, bytes.Repeat([]byte{fill}, 0x22)...)
		}
		idle := newConv(LinkTypeEthernet, "10.1.0.5:40988", "10.1.0.7:15008").send(true, ping(0x5a), 1000).send(false, ping(0x04), 1000).frames
		rep := policyReport(t, Config{}, idle)
		if rep.Verdict != VerdictEncryptedIstio || len(rep.Flows) != 1 || rep.Flows[0].Rule != "hbone-pooled" {
			t.Errorf("verdict %s; want ENCRYPTED (Istio) by hbone-pooled\n%s", rep.Verdict, summary(t, rep))
		}
		// A record cut short by the end of the capture proves nothing.
		short := newConv(LinkTypeEthernet, "10.1.0.5:40988", "10.1.0.7:15008").send(true, ping(0x5a)[:20], 1000).frames
		if rep := policyReport(t, Config{}, short); rep.Verdict != VerdictUnknown {
			t.Errorf("a partial record: verdict %s; want UNKNOWN\n%s", rep.Verdict, summary(t, rep))
		}
		// Elsewhere than 15008, whole records each way are TLS, Istio unproven.
		other := newConv(LinkTypeEthernet, "10.1.0.5:40988", "10.1.0.7:9000").send(true, ping(0x5a), 1000).send(false, ping(0x04), 1000).frames
		if rep := policyReport(t, Config{}, other); rep.Verdict != VerdictEncryptedUnproven {
			t.Errorf("whole records to :9000: verdict %s; want ENCRYPTED (TLS, Istio not proven)\n%s", rep.Verdict, summary(t, rep))
		}
		// One record-shaped reply to binary bytes proves nothing: between
		// enrolled pods it is still a bypass, into a sidecar still unknown.
		binary := bytes.Repeat([]byte{0x00, 0xfe, 0x13}, 16)
		reply := append([]byte{0x17, 0x03, 0x03, 0x00, 0x20}, bytes.Repeat([]byte{0x42}, 0x20)...)
		oneWay := newConv(LinkTypeEthernet, "10.1.0.5:41000", "10.1.0.7:9000").handshake().send(true, binary, 1000).send(false, reply, 1000).fin().frames
		if rep := policyReport(t, Config{Pod: ambientPod()}, oneWay); rep.Verdict != VerdictPlaintext || len(rep.Flows) != 1 || rep.Flows[0].Rule != "mesh-bypass" {
			t.Errorf("a record-shaped reply between enrolled pods: verdict %s; want PLAINTEXT by mesh-bypass\n%s", rep.Verdict, summary(t, rep))
		}
		sidecar := &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}, Sidecar: true}
		if rep := policyReport(t, Config{Pod: sidecar}, oneWay); rep.Verdict != VerdictUnknown {
			t.Errorf("a record-shaped reply into a sidecar: verdict %s; want UNKNOWN\n%s", rep.Verdict, summary(t, rep))
		}
		// Each record must have room for an AEAD tag: bodies of 1 and 16
		// bytes are no TLS 1.3 records.
		tiny := append(append([]byte{0x17, 0x03, 0x03, 0x00, 0x01, 0x00}, 0x17, 0x03, 0x03, 0x00, 0x10), bytes.Repeat([]byte{0x42}, 0x10)...)
		if rep := policyReport(t, Config{}, newConv(LinkTypeEthernet, "10.1.0.5:40988", "10.1.0.7:15008").send(true, tiny, 1000).frames); rep.Verdict == VerdictEncryptedIstio {
			t.Errorf("records of 1 and 16 bytes: verdict %s; want no proof\n%s", rep.Verdict, summary(t, rep))
		}
		// Nor do a few bytes that happen to start like a record header.
		chance := newConv(LinkTypeEthernet, "10.1.0.5:40988", "10.1.0.7:9000").send(true, []byte{0x17, 0x03, 0x03, 0x00, 0x01, 0x41}, 1000).frames
		if rep := policyReport(t, Config{}, chance); rep.Verdict != VerdictUnknown {
			t.Errorf("six chance bytes: verdict %s; want UNKNOWN\n%s", rep.Verdict, summary(t, rep))
		}
	})
	t.Run("kubelet probes and scrapes leave an injected pod encrypted", func(t *testing.T) {
		rep := policyReport(t, Config{}, istio(40000), probe("10.243.0.2:50000", "10.1.0.7:15021", "/healthz/ready"),
			probe("10.243.0.2:50001", "10.1.0.7:15020", "/app-health/app/readyz"), probe("10.1.0.99:50002", "10.1.0.7:15090", "/stats/prometheus"))
		if rep.Verdict != VerdictEncryptedIstio || len(rep.Infra) != 3 {
			t.Errorf("verdict %s, %d infra flows; want ENCRYPTED (Istio mTLS), 3\n%s", rep.Verdict, len(rep.Infra), summary(t, rep))
		}
	})
	t.Run("Istio's ports of a live pod without a sidecar are its own traffic", func(t *testing.T) {
		plain := &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}}
		rep := policyReport(t, Config{Pod: plain}, istio(40000), probe("10.1.0.9:50001", "10.1.0.7:15020", "/orders"))
		if rep.Verdict != VerdictMixed || len(rep.Infra) != 0 {
			t.Errorf("verdict %s, %d infra flows; want MIXED and none apart\n%s", rep.Verdict, len(rep.Infra), summary(t, rep))
		}
	})
	t.Run("a marker in infrastructure traffic still counts", func(t *testing.T) {
		rep := policyReport(t, Config{Grep: "TGN"}, istio(40000), probe("10.243.0.2:50000", "10.1.0.7:15020", "/app-health/TGN/readyz"))
		if rep.Verdict != VerdictMixed {
			t.Errorf("verdict %s, want MIXED\n%s", rep.Verdict, summary(t, rep))
		}
	})
	t.Run("one pooled flow among fourteen proven ones is Istio", func(t *testing.T) {
		var frames [][]frame
		for i := 0; i < 14; i++ {
			frames = append(frames, istio(40000+i))
		}
		frames = append(frames, midstream("10.1.0.5:39999", "10.1.0.7:80"))
		rep := policyReport(t, Config{}, frames...)
		if rep.Verdict != VerdictEncryptedIstio {
			t.Errorf("verdict %s, want ENCRYPTED (Istio mTLS)\n%s", rep.Verdict, summary(t, rep))
		}
	})
	t.Run("only pooled flows are encrypted, Istio not proven", func(t *testing.T) {
		rep := policyReport(t, Config{}, midstream("10.1.0.5:39999", "10.1.0.7:80"))
		if rep.Verdict != VerdictEncryptedUnproven {
			t.Errorf("verdict %s, want %s", rep.Verdict, VerdictEncryptedUnproven)
		}
	})
	t.Run("flows past the flow limit still count", func(t *testing.T) {
		rep := policyReport(t, Config{MaxFlows: 1}, midstream("10.1.0.5:39999", "10.1.0.7:80"), plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 100).frames)
		if rep.Verdict != VerdictMixed || rep.UntrackedPackets == 0 {
			t.Errorf("verdict %s, %d untracked; want MIXED and some\n%s", rep.Verdict, rep.UntrackedPackets, summary(t, rep))
		}
	})
}

func TestFragments(t *testing.T) {
	msg := append(bytes.Repeat([]byte{0x01}, 1476), []byte("Hi TGN meetup")...) // the marker straddles the first cut
	msg = append(msg, bytes.Repeat([]byte{0x02}, 1500)...)
	for _, addrs := range [][2]string{{"10.1.0.5:5000", "10.1.0.9:9999"}, {"[fd00::5]:5000", "[fd00::9]:9999"}} {
		t.Run(addrs[0], func(t *testing.T) {
			frames := fragmentFrames(t, addrs[0], addrs[1], msg, 1480)
			if len(frames) != 3 {
				t.Fatalf("%d fragments, want 3", len(frames))
			}
			frames[1], frames[2] = frames[2], frames[1] // out of order
			rep := policyReport(t, Config{Grep: "TGN"}, frames)
			if rep.GrepHits != 1 || rep.Reassembled != 1 || rep.Fragments != 3 || rep.Verdict != VerdictPlaintext {
				t.Errorf("%d hits, %d reassembled of %d fragments, %s; want 1, 1 of 3, PLAINTEXT\n%s", rep.GrepHits, rep.Reassembled, rep.Fragments, rep.Verdict, summary(t, rep))
			}
			lost := policyReport(t, Config{}, frames[:2])
			if lost.FragmentsLost != 2 || lost.Verdict != VerdictUnknown {
				t.Errorf("incomplete datagram: %d lost, %s; want 2, UNKNOWN", lost.FragmentsLost, lost.Verdict)
			}
		})
	}
}

// ambientPod is a live capture of 10.1.0.7, enrolled in ambient mode, with
// enrolled peer 10.1.0.5 in its namespace.
func ambientPod() *PodContext {
	return &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.1.0.7")}, Ambient: true,
		AmbientPeers: map[netip.Addr]string{netip.MustParseAddr("10.1.0.5"): "shop/frontend-app-1"}}
}

// TestMeshBypass: in a live capture of an ambient pod, HBONE on 15008 is
// Istio's, and application-port traffic to or from another enrolled pod
// is a bypass that is named and never counts as encrypted; traffic with a
// pod that is not enrolled is ordinary plaintext, and app TLS caught
// mid-stream is not Istio's by pod context.
func TestMeshBypass(t *testing.T) {
	amb := ambientPod()
	hbone := midstream("10.1.0.5:40000", "10.1.0.7:15008")
	tests := []struct {
		name    string
		frames  [][]frame
		verdict Verdict
		flows   string
	}{
		{"HBONE only", [][]frame{hbone}, VerdictEncryptedIstio,
			"10.1.0.5:40000 10.1.0.7:15008 hbone-pooled encrypted-istio"},
		{"HBONE and an inbound bypass", [][]frame{hbone, plainConv(LinkTypeEthernet, "10.1.0.5:41000", "10.1.0.7:80", 100).frames}, VerdictMixed,
			"10.1.0.5:40000 10.1.0.7:15008 hbone-pooled encrypted-istio\n" +
				"10.1.0.5:41000 10.1.0.7:80 mesh-bypass plaintext cleartext HTTP/1.1; mesh bypass: from enrolled pod shop/frontend-app-1 (10.1.0.5) to the captured pod on port 80, not through ztunnel's HBONE (15008)"},
		{"an outbound bypass", [][]frame{plainConv(LinkTypeEthernet, "10.1.0.7:41000", "10.1.0.5:8080", 100).frames}, VerdictPlaintext,
			"10.1.0.7:41000 10.1.0.5:8080 mesh-bypass plaintext cleartext HTTP/1.1; mesh bypass: from the captured pod to enrolled pod shop/frontend-app-1 (10.1.0.5) on port 8080, not through ztunnel's HBONE (15008)"},
		{"a client outside the mesh", [][]frame{plainConv(LinkTypeEthernet, "10.1.0.9:41000", "10.1.0.7:80", 100).frames}, VerdictPlaintext,
			"10.1.0.9:41000 10.1.0.7:80 cleartext plaintext cleartext HTTP/1.1"},
		{"app TLS mid-stream between enrolled pods", [][]frame{midstream("10.1.0.5:40000", "10.1.0.7:443")}, VerdictEncryptedUnproven,
			"10.1.0.5:40000 10.1.0.7:443 no-handshake encrypted-unproven"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := policyReport(t, Config{Pod: amb}, tt.frames...)
			var got []string
			for _, f := range rep.Flows {
				line := fmt.Sprintf("%s %s %s %s", f.Src, f.Dst, f.Rule, string(f.Verdict))
				if f.Rule == "mesh-bypass" || f.Rule == "cleartext" {
					line += " " + f.Evidence
				}
				got = append(got, line)
			}
			sort.Strings(got)
			if rep.Verdict != tt.verdict || strings.Join(got, "\n") != tt.flows {
				t.Errorf("verdict %s, flows\n%s\nwant %s, flows\n%s", rep.Verdict, strings.Join(got, "\n"), tt.verdict, tt.flows)
			}
			// The summary's "Not encrypted:" line names the enrolled peer
			// by pod, not only by address.
			if tt.verdict == VerdictMixed && (len(rep.Why) != 1 || rep.Why[0] != "plaintext: 10.1.0.5:41000 → 10.1.0.7:80 (HTTP/1.1 POST /greetings, mesh bypass: from enrolled pod shop/frontend-app-1 (10.1.0.5) to the captured pod on port 80, not through ztunnel's HBONE (15008))") {
				t.Errorf("why %q does not name the bypassing flow and its pod", rep.Why)
			}
		})
	}
}

// TestNewPodContextAmbient: enrolment comes from the namespace's label or
// the pod's, and the peers are the namespace's other captured pods (not
// opted-out ones, not those with a sidecar).
func TestNewPodContextAmbient(t *testing.T) {
	pod := func(name, ip string, labels map[string]string, sidecar bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: labels},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status: corev1.PodStatus{PodIP: ip, HostIP: "10.243.0.2"}}
		if sidecar {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
			p.Annotations = map[string]string{"sidecar.istio.io/status": "{}"}
		}
		return p
	}
	backend := pod("backend-app-1", "10.1.0.7", nil, false)
	others := []*corev1.Pod{
		pod("frontend-app-1", "10.1.0.5", nil, false),
		pod("batch-1", "10.1.0.8", map[string]string{"istio.io/dataplane-mode": "none"}, false),
		pod("legacy-1", "10.1.0.9", nil, true),
	}
	peers := func(pc *PodContext) string {
		var out []string
		for a, n := range pc.AmbientPeers {
			out = append(out, a.String()+"="+n)
		}
		sort.Strings(out)
		return fmt.Sprintf("ambient=%t sidecar=%t peers=%v", pc.Ambient, pc.Sidecar, out)
	}
	objs := func(nsLabels map[string]string) []runtime.Object {
		out := []runtime.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: nsLabels}}, backend}
		for _, p := range others {
			out = append(out, p)
		}
		return out
	}
	kube := fake.NewClientset(objs(map[string]string{"istio.io/dataplane-mode": "ambient"})...)
	if got, want := peers(NewPodContext(context.Background(), kube, []*corev1.Pod{backend})), "ambient=true sidecar=false peers=[10.1.0.5=shop/frontend-app-1]"; got != want {
		t.Errorf("ambient namespace: %s, want %s", got, want)
	}
	kube = fake.NewClientset(objs(nil)...)
	if got, want := peers(NewPodContext(context.Background(), kube, []*corev1.Pod{backend})), "ambient=false sidecar=false peers=[]"; got != want {
		t.Errorf("namespace not enrolled: %s, want %s", got, want)
	}

	// Enrolled pods of other namespaces are looked up by address, once.
	other := func(ns, name, ip string) *corev1.Pod { p := pod(name, ip, nil, false); p.Namespace = ns; return p }
	all := append(objs(map[string]string{"istio.io/dataplane-mode": "ambient"}),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pay", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
		other("pay", "checkout-1", "10.2.0.4"), other("plain", "cron-1", "10.2.0.5"))
	kube = fake.NewClientset(all...)
	pc := NewPodContext(context.Background(), kube, []*corev1.Pod{backend})
	lists := func() int {
		n := 0
		for _, a := range kube.Actions() {
			if a.GetVerb() == "list" && a.GetNamespace() == "" && a.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	before := lists()
	for _, tt := range []struct{ ip, want string }{
		{"10.2.0.4", "pay/checkout-1"}, {"10.2.0.4", "pay/checkout-1"}, // the second from memory
		{"10.2.0.5", ""},  // its namespace is not enrolled
		{"10.1.0.9", ""},  // in the captured pod's namespace, with a sidecar
		{"192.0.2.1", ""}, // no pod
		{"10.1.0.5", "shop/frontend-app-1"},
	} {
		if got := pc.ambientPeer(netip.MustParseAddr(tt.ip), true); got != tt.want {
			t.Errorf("ambientPeer(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
	if n := lists() - before; n != 4 {
		t.Errorf("%d pod LISTs for 4 new addresses, want 4", n)
	}
	// No lookup while packets are read, nor for addresses no pod has.
	before = lists()
	for _, a := range []string{"10.2.0.6", "169.254.7.127", "10.243.0.2", "127.0.0.1"} {
		lookup := a != "10.2.0.6"
		if got := pc.ambientPeer(netip.MustParseAddr(a), lookup); got != "" {
			t.Errorf("ambientPeer(%s, %t) = %q, want none", a, lookup, got)
		}
	}
	if n := lists() - before; n != 0 {
		t.Errorf("%d pod LISTs, want none", n)
	}
	// A refused list stops the lookups.
	kube = fake.NewClientset(all...)
	kube.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "" {
			return true, nil, apierrors.NewForbidden(a.GetResource().GroupResource(), "", errors.New("no"))
		}
		return false, nil, nil
	})
	pc = NewPodContext(context.Background(), kube, []*corev1.Pod{backend})
	before = lists()
	for _, a := range []string{"10.2.0.4", "10.2.0.5"} {
		_ = pc.ambientPeer(netip.MustParseAddr(a), true)
	}
	if n := lists() - before; n != 1 {
		t.Errorf("%d pod LISTs after a refusal, want 1", n)
	}
}
