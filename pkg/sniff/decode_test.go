package sniff

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// oracle decodes a frame with gopacket, the reference the fast path must agree with.
func oracle(link uint32, data []byte) (tcpPacket, bool) {
	pkt := gopacket.NewPacket(data, layers.LinkType(link), gopacket.DecodeOptions{NoCopy: true, Lazy: false})
	var p tcpPacket
	tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || pkt.ErrorLayer() != nil {
		return p, false
	}
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
			return p, false
		}
		p.Src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		p.Dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		p.Src, _ = netip.AddrFromSlice(ip.SrcIP)
		p.Dst, _ = netip.AddrFromSlice(ip.DstIP)
		if pkt.Layer(layers.LayerTypeIPv6Fragment) != nil {
			return p, false
		}
	default:
		return p, false
	}
	p.SrcPort, p.DstPort, p.Seq, p.Ack = uint16(tl.SrcPort), uint16(tl.DstPort), tl.Seq, tl.Ack
	p.Payload = tl.Payload
	return p, true
}

func samePacket(a, b tcpPacket) bool {
	return a.Src == b.Src && a.Dst == b.Dst && a.SrcPort == b.SrcPort && a.DstPort == b.DstPort &&
		a.Seq == b.Seq && a.Ack == b.Ack && bytes.Equal(a.Payload, b.Payload)
}

func TestDecodeAgreesWithGopacket(t *testing.T) {
	for _, link := range []uint32{LinkTypeEthernet, LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeRaw} {
		for _, addrs := range [][2]string{{"10.1.0.5:52314", "10.1.0.7:80"}, {"[fd00::5]:52314", "[fd00::7]:80"}} {
			c := plainConv(link, addrs[0], addrs[1], 20)
			if link == LinkTypeEthernet {
				c.vlan = true
				c.handshake().send(true, greetingRequest, 1000)
			}
			for i, f := range c.frames {
				want, ok := oracle(link, f.data)
				if !ok {
					t.Fatalf("link %d frame %d: gopacket did not decode TCP", link, i)
				}
				var got tcpPacket
				if r := decodePacket(link, f.data, &got); r != notSkipped {
					t.Fatalf("link %d frame %d: skipped (%d)", link, i, r)
				}
				if !samePacket(got, want) {
					t.Errorf("link %d frame %d: got %+v, gopacket %+v", link, i, got, want)
				}
			}
		}
	}
}

// FuzzDecode checks the fast decoder never panics and agrees with gopacket
// whenever gopacket decodes a whole TCP packet.
func FuzzDecode(f *testing.F) {
	for _, link := range []uint32{LinkTypeEthernet, LinkTypeLinuxSLL2, LinkTypeRaw} {
		c := plainConv(link, "10.1.0.5:1", "10.1.0.7:80", 30)
		f.Add(link, c.frames[3].data)
		c6 := plainConv(link, "[fd00::5]:1", "[fd00::7]:80", 30)
		f.Add(link, c6.frames[3].data)
	}
	f.Fuzz(func(t *testing.T, link uint32, data []byte) {
		link = []uint32{LinkTypeEthernet, LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeRaw}[link%4]
		var got tcpPacket
		r := decodePacket(link, data, &got)
		want, ok := oracle(link, data)
		if !ok || r != notSkipped {
			return
		}
		// gopacket keeps IPv4 options and extension headers it does not
		// know the same way; compare only what both saw as TCP.
		if !samePacket(got, want) && got.Missing == 0 {
			t.Errorf("decode %+v, gopacket %+v", got, want)
		}
	})
}

// FuzzAnalyze feeds arbitrary captures to the whole analysis.
func FuzzAnalyze(f *testing.F) {
	f.Add(pcapBytes(f, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 16).frames))
	f.Add(pcapBytes(f, LinkTypeLinuxSLL2, newConv(LinkTypeLinuxSLL2, "10.1.0.5:1", "10.1.0.7:80").handshake().play(mtlsChunks(f), 300).frames))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, _ := Analyze(context.Background(), bytes.NewReader(data), Config{Grep: "TGN", MaxFlows: 8, ClassifyBytes: 512, MaxPendingBytes: 1024})
		if rep == nil {
			t.Fatal("nil report")
		}
	})
}

// FuzzStream feeds arbitrary stream starts to the protocol recognisers.
func FuzzStream(f *testing.F) {
	for _, ch := range mtlsChunks(f)[:2] {
		f.Add(ch.data)
	}
	f.Add(greetingRequest)
	f.Add(greetingResponse)
	f.Add([]byte(h2Preface))
	f.Fuzz(func(t *testing.T, b []byte) {
		var info tlsInfo
		scanHello(b, &info)
		scanHTTP(b)
		var w recordWalker
		w.feed(b)
		m := newMatcher([]byte("TGN"))
		m.emit = func(string) {}
		half := len(b) / 2
		n := m.feed(b[:half]) + m.feed(b[half:])
		m.flush()
		if want := bytes.Count(b, []byte("TGN")); n != want {
			t.Errorf("matcher counted %d across a split, want %d", n, want)
		}
	})
}
