package sniff

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// This file builds captures for the tests: TCP conversations framed for any
// supported link type, and the bytes of real Go TLS handshakes.

type frame struct {
	data []byte
	ts   time.Time
}

// conv is one TCP connection being written into a capture.
type conv struct {
	link           uint32
	client, server netip.AddrPort
	cseq, sseq     uint32
	vlan           bool
	frames         []frame
	t0             time.Time
}

func newConv(link uint32, client, server string) *conv {
	return &conv{
		link:   link,
		client: netip.MustParseAddrPort(client),
		server: netip.MustParseAddrPort(server),
		cseq:   1000, sseq: 5000,
		t0: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// handshake writes SYN, SYN-ACK, ACK.
func (c *conv) handshake() *conv {
	c.add(true, c.cseq, tcpSYN, nil)
	c.cseq++
	c.add(false, c.sseq, tcpSYN|tcpACK, nil)
	c.sseq++
	c.add(true, c.cseq, tcpACK, nil)
	return c
}

// send writes data from one side in segments of at most seg bytes.
func (c *conv) send(fromClient bool, data []byte, seg int) *conv {
	for len(data) > 0 {
		n := min(seg, len(data))
		c.segment(fromClient, data[:n])
		data = data[n:]
	}
	return c
}

func (c *conv) segment(fromClient bool, data []byte) {
	if fromClient {
		c.add(true, c.cseq, tcpACK|0x08, data)
		c.cseq += uint32(len(data))
	} else {
		c.add(false, c.sseq, tcpACK|0x08, data)
		c.sseq += uint32(len(data))
	}
}

func (c *conv) fin() *conv {
	c.add(true, c.cseq, tcpFIN|tcpACK, nil)
	c.cseq++
	c.add(false, c.sseq, tcpFIN|tcpACK, nil)
	c.sseq++
	c.add(true, c.cseq, tcpACK, nil)
	return c
}

func (c *conv) add(fromClient bool, seq uint32, flags uint8, payload []byte) {
	src, dst, ack := c.client, c.server, c.sseq
	if !fromClient {
		src, dst, ack = c.server, c.client, c.cseq
	}
	c.frames = append(c.frames, frame{
		data: buildFrame(c.link, c.vlan, src, dst, seq, ack, flags, payload),
		ts:   c.t0.Add(time.Duration(len(c.frames)) * time.Millisecond),
	})
}

func buildFrame(link uint32, vlan bool, src, dst netip.AddrPort, seq, ack uint32, flags uint8, payload []byte) []byte {
	tcp := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	tcp = append(tcp, payload...)
	var ip []byte
	var etherType uint16
	if src.Addr().Is4() {
		etherType = etherTypeIPv4
		ip = make([]byte, 20, 20+len(tcp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[6] = 0x40 // don't fragment
		ip[8] = 64
		ip[9] = 6
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		setTCPChecksum(tcp, s[:], d[:])
	} else {
		etherType = etherTypeIPv6
		ip = make([]byte, 40, 40+len(tcp))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6] = 6
		ip[7] = 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		setTCPChecksum(tcp, s[:], d[:])
	}
	ip = append(ip, tcp...)
	switch link {
	case LinkTypeEthernet:
		eth := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}
		if vlan {
			eth = binary.BigEndian.AppendUint16(eth, etherTypeVLAN)
			eth = binary.BigEndian.AppendUint16(eth, 42)
		}
		eth = binary.BigEndian.AppendUint16(eth, etherType)
		out := append(eth, ip...)
		for len(out) < 60 { // Ethernet padding, as on the wire
			out = append(out, 0)
		}
		return out
	case LinkTypeLinuxSLL:
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
		binary.BigEndian.PutUint16(h[4:], 6)
		binary.BigEndian.PutUint16(h[14:], etherType)
		return append(h, ip...)
	case LinkTypeLinuxSLL2:
		h := make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], etherType)
		binary.BigEndian.PutUint32(h[4:], 7) // interface index
		binary.BigEndian.PutUint16(h[8:], 1) // ARPHRD_ETHER
		h[11] = 6
		return append(h, ip...)
	}
	return ip // raw IP
}

func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func setTCPChecksum(tcp, src, dst []byte) {
	pseudo := append(append([]byte{}, src...), dst...)
	if len(src) == 4 {
		pseudo = append(pseudo, 0, 6)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(tcp)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(tcp)))
		pseudo = append(pseudo, 0, 0, 0, 6)
	}
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[16:], ipChecksum(append(pseudo, tcp...)))
}

// writePcap writes frames as a classic pcap stream.
func writePcap(t testing.TB, w io.Writer, link uint32, frames []frame) {
	t.Helper()
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(262144, layers.LinkType(link)); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: f.ts, CaptureLength: len(f.data), Length: len(f.data)}
		if err := pw.WritePacket(ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
}

func pcapBytes(t testing.TB, link uint32, frames ...[]frame) []byte {
	var all []frame
	for _, f := range frames {
		all = append(all, f...)
	}
	var buf bytes.Buffer
	writePcap(t, &buf, link, all)
	return buf.Bytes()
}

// chunk is one write of a recorded conversation.
type chunk struct {
	fromClient bool
	data       []byte
}

// recorder logs what both ends of a net.Pipe write, in order.
type recorder struct {
	mu     sync.Mutex
	chunks []chunk
}

type recConn struct {
	net.Conn
	r      *recorder
	client bool
}

func (c recConn) Write(b []byte) (int, error) {
	c.r.mu.Lock()
	c.r.chunks = append(c.r.chunks, chunk{c.client, append([]byte(nil), b...)})
	c.r.mu.Unlock()
	return c.Conn.Write(b)
}

// tlsExchange runs a real crypto/tls handshake plus one request and
// response, and returns the bytes each side wrote.
func tlsExchange(t testing.TB, clientCfg, serverCfg *tls.Config, request, response []byte) []chunk {
	t.Helper()
	cp, sp := net.Pipe()
	rec := &recorder{}
	cc := tls.Client(recConn{cp, rec, true}, clientCfg)
	sc := tls.Server(recConn{sp, rec, false}, serverCfg)
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, len(request))
		if _, err := io.ReadFull(sc, buf); err != nil {
			done <- err
			return
		}
		_, err := sc.Write(response)
		done <- err
	}()
	if _, err := cc.Write(request); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(response))
	if _, err := io.ReadFull(cc, buf); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cp.Close()
	sp.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.chunks
}

// testCert returns a self-signed certificate for names.
func testCert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// Istio's sidecar-to-sidecar handshake, as the workshop's backend sees it.
const (
	istioSNI = "outbound_.80_._.backend.default.svc.cluster.local"
)

var (
	greetingRequest  = []byte("POST /greetings HTTP/1.1\r\nHost: backend\r\nContent-Length: 0\r\n\r\n")
	greetingResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n{\"greetings\":\"Hi TGN meetup\"}")
)

func mtlsChunks(t testing.TB) []chunk {
	cert, pool := testCert(t, istioSNI)
	client := &tls.Config{ServerName: istioSNI, RootCAs: pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"istio-peer-exchange", "istio"}}
	server := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{"istio-peer-exchange", "istio"}}
	return tlsExchange(t, client, server, greetingRequest, greetingResponse)
}

func httpsChunks(t testing.TB) []chunk {
	cert, pool := testCert(t, "backend.example")
	client := &tls.Config{ServerName: "backend.example", RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}
	server := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	return tlsExchange(t, client, server, greetingRequest, greetingResponse)
}

// play writes recorded chunks into the conversation, seg bytes per segment.
func (c *conv) play(chunks []chunk, seg int) *conv {
	for _, ch := range chunks {
		c.send(ch.fromClient, ch.data, seg)
	}
	return c
}
