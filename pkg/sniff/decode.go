package sniff

import (
	"encoding/binary"
	"net/netip"
)

// Link types this package decodes (pcap LINKTYPE_* values).
const (
	LinkTypeEthernet = 1
	LinkTypeRaw      = 101
	LinkTypeLinuxSLL = 113
	LinkTypeIPv4     = 228
	LinkTypeIPv6     = 229
	// LinkTypeLinuxSLL2 is what `tcpdump -i any` writes on current Linux.
	LinkTypeLinuxSLL2 = 276
)

// SupportedLinkType reports whether Analyze can decode captures of link type lt.
func SupportedLinkType(lt uint32) bool {
	switch lt {
	case LinkTypeEthernet, LinkTypeRaw, LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeIPv4, LinkTypeIPv6:
		return true
	}
	return false
}

// What decodePacket found. Only notSkipped (TCP) takes the fast path; the
// others are IP traffic too and are analysed as datagrams or reassembled.
type skipReason uint8

const (
	notSkipped    skipReason = iota // TCP: ports, sequence numbers and payload filled in
	skipMalformed                   // not decodable
	skipNotIP                       // ARP, LLDP…: not traffic of a pod
	skipNotTCP                      // UDP (ports filled in) or another IP protocol (Proto, Payload)
	skipFragment                    // an IP fragment: Frag* fields and Payload filled in
)

// tcpPacket is the part of a packet the analysis needs. Payload aliases the
// capture buffer: it is valid only until the next packet is read.
type tcpPacket struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Payload          []byte
	// Missing is how many payload bytes the IP header announced but the
	// capture does not hold (snap length): they become a hole.
	Missing int
	// Proto is the IP protocol (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
	Proto uint8
	// Fragment fields: the datagram's identification, this fragment's
	// offset in bytes and whether more fragments follow.
	FragID    uint32
	FragOff   int
	MoreFrags bool
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
	etherType9100 = 0x9100
)

// decodePacket decodes one captured frame into p without allocating. It is a
// hand-written fast path; decode_test.go checks it against gopacket.
func decodePacket(linkType uint32, data []byte, p *tcpPacket) skipReason {
	var etherType uint16
	switch linkType {
	case LinkTypeEthernet:
		if len(data) < 14 {
			return skipMalformed
		}
		etherType = binary.BigEndian.Uint16(data[12:14])
		data = data[14:]
	case LinkTypeLinuxSLL:
		if len(data) < 16 {
			return skipMalformed
		}
		etherType = binary.BigEndian.Uint16(data[14:16])
		data = data[16:]
	case LinkTypeLinuxSLL2:
		if len(data) < 20 {
			return skipMalformed
		}
		etherType = binary.BigEndian.Uint16(data[0:2])
		data = data[20:]
	case LinkTypeRaw:
		if len(data) < 1 {
			return skipMalformed
		}
		switch data[0] >> 4 {
		case 4:
			etherType = etherTypeIPv4
		case 6:
			etherType = etherTypeIPv6
		default:
			return skipNotIP
		}
	case LinkTypeIPv4:
		etherType = etherTypeIPv4
	case LinkTypeIPv6:
		etherType = etherTypeIPv6
	default:
		return skipNotIP
	}
	// 802.1Q / 802.1ad tags, possibly stacked.
	for etherType == etherTypeVLAN || etherType == etherTypeQinQ || etherType == etherType9100 {
		if len(data) < 4 {
			return skipMalformed
		}
		etherType = binary.BigEndian.Uint16(data[2:4])
		data = data[4:]
	}
	var seg []byte
	switch etherType {
	case etherTypeIPv4:
		if len(data) < 20 || data[0]>>4 != 4 {
			return skipMalformed
		}
		ihl := int(data[0]&0x0f) * 4
		if ihl < 20 || len(data) < ihl {
			return skipMalformed
		}
		total := int(binary.BigEndian.Uint16(data[2:4]))
		p.Src = netip.AddrFrom4([4]byte(data[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(data[16:20]))
		p.Missing = 0
		p.Proto = data[9]
		switch {
		case total == 0:
			// Segmentation offload captured before the NIC fills the length in.
			seg = data[ihl:]
		case total < ihl:
			return skipMalformed
		case total <= len(data):
			seg = data[ihl:total] // drops Ethernet padding
		default:
			seg = data[ihl:]
			p.Missing = total - len(data)
		}
		if frag := binary.BigEndian.Uint16(data[6:8]); frag&0x3fff != 0 {
			// More-fragments set or a non-zero offset: the caller reassembles.
			p.FragID = uint32(binary.BigEndian.Uint16(data[4:6]))
			p.FragOff = int(frag&0x1fff) * 8
			p.MoreFrags = frag&0x2000 != 0
			p.Payload = seg
			return skipFragment
		}
		if p.Proto != 6 {
			return decodeDatagram(p, seg)
		}
	case etherTypeIPv6:
		if len(data) < 40 || data[0]>>4 != 6 {
			return skipMalformed
		}
		plen := int(binary.BigEndian.Uint16(data[4:6]))
		next := data[6]
		p.Src = netip.AddrFrom16([16]byte(data[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(data[24:40]))
		p.Missing = 0
		rest := data[40:]
		if plen != 0 {
			if plen <= len(rest) {
				rest = rest[:plen]
			} else {
				p.Missing = plen - len(rest)
			}
		}
		r, s := ipv6Upper(p, next, rest)
		if r != notSkipped {
			return r
		}
		seg = s
	default:
		return skipNotIP
	}
	return decodeTCP(p, seg)
}

// ipv6Upper walks IPv6 extension headers from next to the upper-layer
// protocol: TCP returns its segment; a fragment or another protocol is
// decoded into p and reported.
func ipv6Upper(p *tcpPacket, next uint8, rest []byte) (skipReason, []byte) {
	for next != 6 {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 8 {
				return skipMalformed, nil
			}
			n := (int(rest[1]) + 1) * 8
			if len(rest) < n {
				return skipMalformed, nil
			}
			next, rest = rest[0], rest[n:]
		case 44: // fragment
			if len(rest) < 8 {
				return skipMalformed, nil
			}
			if frag := binary.BigEndian.Uint16(rest[2:4]); frag&0xfff9 != 0 {
				p.Proto = rest[0]
				p.FragID = binary.BigEndian.Uint32(rest[4:8])
				p.FragOff = int(frag>>3) * 8
				p.MoreFrags = frag&1 != 0
				p.Payload = rest[8:]
				return skipFragment, nil
			}
			next, rest = rest[0], rest[8:]
		default:
			p.Proto = next
			return decodeDatagram(p, rest), nil
		}
	}
	p.Proto = 6
	return notSkipped, rest
}

// decodeUpper decodes a reassembled datagram of protocol proto.
func decodeUpper(p *tcpPacket, proto uint8, b []byte) skipReason {
	p.Proto, p.Missing = proto, 0
	if p.Src.Is6() && !p.Src.Is4In6() {
		r, seg := ipv6Upper(p, proto, b)
		if r != notSkipped {
			return r
		}
		return decodeTCP(p, seg)
	}
	if proto == 6 {
		return decodeTCP(p, b)
	}
	return decodeDatagram(p, b)
}

// decodeDatagram fills p for an IP payload that is not TCP: UDP gets its
// ports and payload, any other protocol keeps its whole payload.
func decodeDatagram(p *tcpPacket, b []byte) skipReason {
	p.SrcPort, p.DstPort = 0, 0
	if p.Proto == 17 {
		if len(b) < 8 {
			return skipMalformed
		}
		p.SrcPort = binary.BigEndian.Uint16(b[0:2])
		p.DstPort = binary.BigEndian.Uint16(b[2:4])
		n := int(binary.BigEndian.Uint16(b[4:6]))
		switch {
		case n >= 8 && n <= len(b):
			b = b[8:n]
		case n > len(b):
			p.Missing = n - len(b)
			b = b[8:]
		default:
			b = b[8:] // jumbogram or offloaded checksum: take what is there
		}
	}
	p.Payload = b
	return skipNotTCP
}

// decodeTCP fills p from a TCP segment.
func decodeTCP(p *tcpPacket, seg []byte) skipReason {
	if len(seg) < 20 {
		return skipMalformed
	}
	off := int(seg[12]>>4) * 4
	if off < 20 || len(seg) < off {
		return skipMalformed
	}
	p.SrcPort = binary.BigEndian.Uint16(seg[0:2])
	p.DstPort = binary.BigEndian.Uint16(seg[2:4])
	p.Seq = binary.BigEndian.Uint32(seg[4:8])
	p.Ack = binary.BigEndian.Uint32(seg[8:12])
	p.Flags = seg[13]
	p.Payload = seg[off:]
	return notSkipped
}
