package sniff

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"
)

// The corpus in testdata/corpus was made by hack/make-corpus.sh with OpenSSL,
// curl, Python, dnsmasq, dig, socat and the kernel, captured by tcpdump (see
// its README). Each file is read twice: by tshark, whose reading must be the
// one below (so the file is what the README says), and by Analyze, which
// must find the same TCP flows, each with tshark's client → server
// direction, protocol, TLS version, SNI and ALPN offer; its HTTP flows must
// be plaintext and its TLS flows not. Analyze's UDP flows are not compared
// here yet: tshark's reading of the datagrams pins down what the files hold.
//
// Ephemeral ports (32768 and up, Linux's range) are shown as "*" so that a
// regenerated corpus keeps these tables. A flow whose start is not in the
// capture (no SYN, no ClientHello) has no known direction: "A ↔ B".
var corpusTests = []struct {
	file string
	// tlsPorts are the ports tshark must be told carry TLS
	// (`-d tcp.port==P,tls`): it decodes 80 and 8080 as HTTP and leaves
	// 15008 alone.
	tlsPorts []int
	// tcp is tshark's reading of the TCP flows.
	tcp []string
	// udp is tshark's reading of the UDP datagrams, after IP reassembly;
	// TGN@N gives the offsets of the marker in the payload.
	udp []string
	// split: no frame holds the marker whole, as the fragments cut it.
	split bool
}{
	{
		file:     "istio-mtls-tls13.pcap",
		tlsPorts: []int{80},
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.3 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.3 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
		},
	},
	{
		file:     "istio-mtls-tls12.pcap",
		tlsPorts: []int{80},
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.2 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.2 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
		},
	},
	{
		file: "tls-plain-h2.pcap",
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:443 TLS TLS1.3 sni=example.internal alpn=h2,http/1.1",
		},
	},
	{
		file:     "hbone-15008.pcap",
		tlsPorts: []int{15008},
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:15008 TLS TLS1.3 alpn=h2",
			"10.250.0.10:* → 10.250.0.20:15008 TLS TLS1.3 alpn=h2",
		},
	},
	{
		file: "curl-https.pcap",
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:443 TLS TLS1.3 sni=example.internal alpn=h2,http/1.1",
			"10.250.0.10:* → 10.250.0.20:443 TLS TLS1.2 sni=example.internal alpn=http/1.1",
		},
	},
	{
		file: "curl-http.pcap",
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:80 HTTP/1.1",
			"10.250.0.10:* → 10.250.0.20:80 HTTP/1.1",
		},
	},
	{
		file:     "pooled-midstream.pcap",
		tlsPorts: []int{8080, 15008},
		tcp: []string{
			"10.250.0.10:* ↔ 10.250.0.20:8080 TLS",
			"10.250.0.10:* ↔ 10.250.0.20:15008 TLS",
		},
	},
	{
		file: "udp-marker.pcap",
		udp: []string{
			"10.250.0.10:* → 10.250.0.20:8125 UDP len=34 TGN@19",
			"10.250.0.10:* → 10.250.0.20:8125 UDP len=42 TGN@31",
			"10.250.0.10:* → 10.250.0.20:514 UDP len=67 TGN@49",
		},
	},
	{
		file: "dns.pcap",
		udp: []string{
			"10.250.0.10:* → 10.250.0.20:53 DNS query backend.default.svc.cluster.local type=1",
			"10.250.0.20:53 → 10.250.0.10:* DNS response backend.default.svc.cluster.local type=1 a=10.250.0.20",
			"10.250.0.10:* → 10.250.0.20:53 DNS query greetings.default.svc.cluster.local type=16",
			"10.250.0.20:53 → 10.250.0.10:* DNS response greetings.default.svc.cluster.local type=16 txt=\"Hi TGN meetup\"",
		},
	},
	{
		file: "udp-frag-ipv4.pcap",
		udp: []string{
			"10.250.0.10:* → 10.250.0.20:9999 UDP len=3008 fragments=3 TGN@1471,2950",
		},
		split: true,
	},
	{
		file: "udp-frag-ipv6.pcap",
		udp: []string{
			"[fd00:250::10]:* → [fd00:250::20]:9999 UDP len=3008 fragments=3 TGN@1439,2886",
		},
		split: true,
	},
	{
		file:     "mixed-mtls-udp.pcap",
		tlsPorts: []int{80},
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.3 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.3 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
		},
		udp: []string{
			"10.250.0.10:* → 10.250.0.20:8125 UDP len=34 TGN@19",
		},
	},
	{
		file:     "any-sll2.pcap",
		tlsPorts: []int{80},
		tcp: []string{
			"10.250.0.10:* → 10.250.0.20:80 TLS TLS1.3 sni=outbound_.80_._.backend.default.svc.cluster.local alpn=istio-peer-exchange,istio",
			"10.250.0.10:* → 10.250.0.20:8080 HTTP/1.1",
		},
	},
}

// tsharkFields is what the test asks tshark for, one line per TCP or UDP
// frame. The names are tshark's (`tshark -G fields`).
var tsharkFields = []string{
	"ip.src", "ipv6.src", "tcp.srcport", "udp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport", "udp.dstport",
	"tcp.flags.syn", "tcp.flags.ack",
	"tls.handshake.type", "tls.handshake.extensions_server_name", "tls.handshake.extensions_alpn_str",
	"tls.handshake.version", "tls.handshake.extensions.supported_version", "tls.record.content_type",
	"http.request.version", "http.response.version",
	"udp.length", "udp.payload", "ip.fragment.count", "ipv6.fragment.count",
	"dns.flags.response", "dns.qry.name", "dns.qry.type", "dns.a", "dns.txt",
}

func TestCorpus(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tshark is not installed; hack/install-deps.sh installs it (Debian package tshark)")
		}
		t.Skip("tshark is not installed (Debian package tshark; hack/install-deps.sh installs it)")
	}
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, tt := range corpusTests {
		tested[tt.file] = true
	}
	for _, f := range files {
		if !tested[filepath.Base(f)] {
			t.Errorf("%s has no row in corpusTests: add what tshark reads in it", f)
		}
	}
	for _, tt := range corpusTests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel() // tshark takes a second or more to start
			path := filepath.Join("testdata", "corpus", tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) >= 200<<10 {
				t.Errorf("%s is %d bytes; keep corpus files under 200 KB", tt.file, len(data))
			}
			ts := readWithTshark(t, tshark, path, tt.tlsPorts)
			wantLines(t, "tshark's TCP flows", ts.tcpLines(), tt.tcp)
			wantLines(t, "tshark's UDP datagrams", ts.udp, tt.udp)
			if whole := framesWithMarker(t, data, "TGN"); tt.split && whole != 0 {
				t.Errorf("%d frames hold the whole marker; the fragments should cut it", whole)
			}

			rep, err := Analyze(context.Background(), bytes.NewReader(data), Config{})
			if err != nil {
				t.Fatalf("Analyze: %v", err)
			}
			var ours []string
			for _, fs := range rep.Flows {
				if fs.Transport != "tcp" {
					continue // policy_corpus_test.go checks the others
				}
				line, err := ts.describeOurs(fs)
				if err != nil {
					t.Errorf("Analyze: %v", err)
					continue
				}
				ours = append(ours, line)
				switch {
				case strings.HasPrefix(fs.Protocol, "HTTP") && fs.Verdict != VerdictPlaintext:
					t.Errorf("Analyze: %s → %s is %s with verdict %q, want %q", fs.Src, fs.Dst, fs.Protocol, fs.Verdict, VerdictPlaintext)
				case fs.Protocol == "TLS" && fs.Verdict == VerdictPlaintext:
					t.Errorf("Analyze: %s → %s is TLS with verdict %q", fs.Src, fs.Dst, fs.Verdict)
				}
			}
			wantLines(t, "Analyze's flows (tshark's reading is the want)", ours, ts.tcpLines())
		})
	}
}

// wantLines compares two lists of lines, order aside.
func wantLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	got, want = sorted(got), sorted(want)
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return
	}
	t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
}

func sorted(l []string) []string {
	l = append([]string{}, l...)
	sort.Strings(l)
	return l
}

// tsharkFlow is one TCP connection as tshark reads it.
type tsharkFlow struct {
	a, b      netip.AddrPort // first packet's source and destination
	client    netip.AddrPort // from the SYN or the ClientHello; zero if unknown
	sni, alpn string
	version   string
	tls       bool
	http      string
}

type tsharkReading struct {
	flows map[string]*tsharkFlow // by pairKey
	order []string
	udp   []string
	// udpPairs are the ends of the UDP datagrams, by pairKey.
	udpPairs map[string]bool
}

// readWithTshark runs tshark once over path and gathers its reading.
func readWithTshark(t *testing.T, tshark, path string, tlsPorts []int) *tsharkReading {
	t.Helper()
	args := []string{"-r", path}
	for _, p := range tlsPorts {
		args = append(args, "-d", fmt.Sprintf("tcp.port==%d,tls", p))
	}
	args = append(args, "-Y", "tcp || udp", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,")
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	r := &tsharkReading{flows: map[string]*tsharkFlow{}, udpPairs: map[string]bool{}}
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		v := strings.Split(line, "\t")
		if len(v) != len(tsharkFields) {
			t.Fatalf("tshark gave %d fields, want %d: %q", len(v), len(tsharkFields), line)
		}
		field := map[string]string{}
		for i, name := range tsharkFields {
			field[name] = v[i]
		}
		if err := r.add(field); err != nil {
			t.Fatalf("reading tshark's line %q: %v", line, err)
		}
	}
	return r
}

func (r *tsharkReading) add(f map[string]string) error {
	srcIP, dstIP := f["ip.src"]+f["ipv6.src"], f["ip.dst"]+f["ipv6.dst"]
	if f["tcp.srcport"] == "" {
		src, err := addrPort(srcIP, f["udp.srcport"])
		if err != nil {
			return err
		}
		dst, err := addrPort(dstIP, f["udp.dstport"])
		if err != nil {
			return err
		}
		r.udp = append(r.udp, describeDatagram(src, dst, f))
		r.udpPairs[pairKey(src.String(), dst.String())] = true
		return nil
	}
	src, err := addrPort(srcIP, f["tcp.srcport"])
	if err != nil {
		return err
	}
	dst, err := addrPort(dstIP, f["tcp.dstport"])
	if err != nil {
		return err
	}
	key := pairKey(src.String(), dst.String())
	fl := r.flows[key]
	if fl == nil {
		fl = &tsharkFlow{a: src, b: dst}
		r.flows[key] = fl
		r.order = append(r.order, key)
	}
	if f["tcp.flags.syn"] == "1" && f["tcp.flags.ack"] == "0" {
		fl.client = src
	}
	if f["tls.record.content_type"] != "" {
		fl.tls = true
	}
	// The client's version names the flow (python's http.server answers
	// HTTP/1.0 to curl's HTTP/1.1).
	if h := f["http.request.version"]; h != "" {
		fl.http = strings.Split(h, ",")[0]
	} else if h := f["http.response.version"]; h != "" && fl.http == "" {
		fl.http = strings.Split(h, ",")[0]
	}
	for _, typ := range strings.Split(f["tls.handshake.type"], ",") {
		switch typ {
		case "1": // ClientHello
			fl.client = src
			fl.sni = f["tls.handshake.extensions_server_name"]
			fl.alpn = f["tls.handshake.extensions_alpn_str"]
		case "2": // ServerHello
			fl.version = tlsVersionOf(f["tls.handshake.extensions.supported_version"], f["tls.handshake.version"])
		}
	}
	return nil
}

// tlsVersionOf names the version a ServerHello chose: supported_versions
// when present (TLS 1.3), else the legacy version field.
func tlsVersionOf(supported, legacy string) string {
	v := supported
	if v == "" {
		v = legacy
	}
	switch strings.Split(v, ",")[0] {
	case "0x0303":
		return "TLS1.2"
	case "0x0304":
		return "TLS1.3"
	}
	return "version " + v
}

func (r *tsharkReading) tcpLines() []string {
	var lines []string
	for _, key := range r.order {
		fl := r.flows[key]
		proto := "-"
		switch {
		case fl.http != "":
			proto = fl.http
		case fl.tls:
			proto = "TLS"
		}
		lines = append(lines, describeFlow(fl, fl.a.String(), fl.b.String(), proto, fl.version, fl.sni, fl.alpn))
	}
	return lines
}

// describeOurs gives Analyze's flow in the form of tshark's, oriented as
// tshark oriented it.
func (r *tsharkReading) describeOurs(fs FlowSummary) (string, error) {
	fl := r.flows[pairKey(fs.Src, fs.Dst)]
	if fl == nil {
		fl = &tsharkFlow{}
	}
	if fl.client.IsValid() && fl.client.String() != fs.Src {
		return "", fmt.Errorf("%s → %s is the wrong way round: tshark saw %s open it", fs.Src, fs.Dst, fl.client)
	}
	if !fl.client.IsValid() && fl.a.IsValid() {
		// Undirected in tshark's reading: compare as a pair.
		return describeFlow(fl, fs.Src, fs.Dst, fs.Protocol, fs.TLSVersion, fs.SNI, strings.Join(fs.ALPN, ",")), nil
	}
	return describeFlow(&tsharkFlow{client: netip.MustParseAddrPort(fs.Src)}, fs.Src, fs.Dst,
		fs.Protocol, fs.TLSVersion, fs.SNI, strings.Join(fs.ALPN, ",")), nil
}

// describeFlow is the line both readings are compared on.
func describeFlow(fl *tsharkFlow, a, b, proto, version, sni, alpn string) string {
	arrow := " → "
	if !fl.client.IsValid() {
		arrow = " ↔ "
		if a > b {
			a, b = b, a
		}
	} else if fl.client.String() != a {
		a, b = b, a
	}
	s := maskPort(a) + arrow + maskPort(b) + " " + proto
	if version != "" {
		s += " " + version
	}
	if sni != "" {
		s += " sni=" + sni
	}
	if alpn != "" {
		s += " alpn=" + alpn
	}
	return s
}

func describeDatagram(src, dst netip.AddrPort, f map[string]string) string {
	s := maskPort(src.String()) + " → " + maskPort(dst.String())
	if f["dns.qry.name"] != "" {
		kind := "query"
		if f["dns.flags.response"] == "1" {
			kind = "response"
		}
		s += fmt.Sprintf(" DNS %s %s type=%s", kind, f["dns.qry.name"], f["dns.qry.type"])
		if f["dns.a"] != "" {
			s += " a=" + f["dns.a"]
		}
		if f["dns.txt"] != "" {
			s += fmt.Sprintf(" txt=%q", f["dns.txt"])
		}
		return s
	}
	s += " UDP len=" + f["udp.length"]
	if n := f["ip.fragment.count"] + f["ipv6.fragment.count"]; n != "" {
		s += " fragments=" + n
	}
	payload, err := hex.DecodeString(strings.ReplaceAll(f["udp.payload"], ":", ""))
	if err != nil {
		return s + " payload=" + f["udp.payload"]
	}
	var at []string
	for off := 0; ; off++ {
		i := bytes.Index(payload[off:], []byte("TGN"))
		if i < 0 {
			break
		}
		off += i
		at = append(at, strconv.Itoa(off))
	}
	if len(at) > 0 {
		s += " TGN@" + strings.Join(at, ",")
	}
	return s
}

func addrPort(ip, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// pairKey names a connection whichever way round its ends are given.
func pairKey(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + " " + b
}

// maskPort hides an ephemeral port (32768 and up).
func maskPort(ap string) string {
	p, err := netip.ParseAddrPort(ap)
	if err != nil || p.Port() < 32768 {
		return ap
	}
	if p.Addr().Is6() {
		return "[" + p.Addr().String() + "]:*"
	}
	return p.Addr().String() + ":*"
}

// framesWithMarker counts the frames whose own bytes hold marker.
func framesWithMarker(t *testing.T, pcap []byte, marker string) int {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(pcap))
	if err != nil {
		t.Fatalf("reading the pcap: %v", err)
	}
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("reading the pcap: %v", err)
		}
		if bytes.Contains(data, []byte(marker)) {
			n++
		}
	}
}
