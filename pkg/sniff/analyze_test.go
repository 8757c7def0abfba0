package sniff

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func analyzeBytes(t *testing.T, pcap []byte, cfg Config) (*Report, []string) {
	t.Helper()
	var events []string
	cfg.OnEvent = func(ev Event) { events = append(events, FormatEvent(ev)) }
	rep, err := Analyze(context.Background(), bytes.NewReader(pcap), cfg)
	if err != nil {
		t.Fatalf("Analyze: %v", err)
	}
	return rep, events
}

func summary(t *testing.T, rep *Report) string {
	t.Helper()
	var b strings.Builder
	if err := WriteSummary(&b, rep); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func plainConv(link uint32, client, server string, seg int) *conv {
	return newConv(link, client, server).handshake().
		send(true, greetingRequest, seg).send(false, greetingResponse, seg).fin()
}

func TestAnalyzeWorkshop(t *testing.T) {
	mtls, https := mtlsChunks(t), httpsChunks(t)
	tests := []struct {
		name    string
		pcap    func() []byte
		grep    string
		events  string
		summary string
	}{
		{
			name: "plaintext HTTP, marker split across segments",
			pcap: func() []byte {
				// 7-byte segments cut "Hi TGN meetup" inside "TGN".
				return pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.1.0.5:52314", "10.1.0.7:80", 7).frames)
			},
			grep: "TGN",
			events: `10.1.0.5:52314 → 10.1.0.7:80  HTTP/1.1 POST /greetings  PLAINTEXT
10.1.0.7:80 → 10.1.0.5:52314  HTTP/1.1 200  PLAINTEXT
10.1.0.7:80 → 10.1.0.5:52314  PLAINTEXT  …{"greetings":"Hi TGN meetup"}…
`,
			summary: `SOURCE          DESTINATION  PROTOCOL  DETAIL                  PACKETS  BYTES  VERDICT
10.1.0.5:52314  10.1.0.7:80  HTTP/1.1  POST /greetings grep=1  30       1822   PLAINTEXT
Packets: 30 (1 TCP flow)
Grep "TGN": 1 hit
Verdict: PLAINTEXT
`,
		},
		{
			name: "Istio mTLS, hello split over segments",
			pcap: func() []byte {
				return pcapBytes(t, LinkTypeEthernet, newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:80").handshake().play(mtls, 100).fin().frames)
			},
			grep: "TGN",
			events: `10.1.0.5:40000 → 10.1.0.7:80  TLS1.3 SNI=outbound_.80_._.backend.default.svc.cluster.local ALPN=istio-peer-exchange,istio  ISTIO-MTLS
10.1.0.7:80 → 10.1.0.5:40000  TLS1.3 ServerHello  ISTIO-MTLS
`,
		},
		{
			name: "plain HTTPS",
			pcap: func() []byte {
				return pcapBytes(t, LinkTypeEthernet, newConv(LinkTypeEthernet, "10.1.0.5:40001", "10.1.0.7:443").handshake().play(https, 1448).fin().frames)
			},
			grep: "TGN",
			events: `10.1.0.5:40001 → 10.1.0.7:443  TLS1.3 SNI=backend.example ALPN=h2,http/1.1  TLS
10.1.0.7:443 → 10.1.0.5:40001  TLS1.3 ServerHello  TLS
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, events := analyzeBytes(t, tt.pcap(), Config{Grep: tt.grep})
			if got := strings.Join(events, "\n") + "\n"; got != tt.events {
				t.Errorf("events:\n%s\nwant:\n%s", got, tt.events)
			}
			if tt.summary != "" {
				if got := summary(t, rep); got != tt.summary {
					t.Errorf("summary:\n%s\nwant:\n%s", got, tt.summary)
				}
			}
		})
	}
}

func TestAnalyzeVerdicts(t *testing.T) {
	mtls, https := mtlsChunks(t), httpsChunks(t)
	random := make([]byte, 3000)
	rand.Read(random)
	random[0] = 0x00 // not a TLS content type
	// Application data records of a connection whose handshake was missed.
	var records []byte
	for i := 0; i < 4; i++ {
		records = append(records, 0x17, 0x03, 0x03, 0x00, 0x40)
		records = append(records, random[:0x40]...)
	}
	h2 := append([]byte(h2Preface), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	tests := []struct {
		name    string
		link    uint32
		frames  func() []frame
		verdict Verdict
		hits    int
		flows   []string // protocol/verdict per flow
	}{
		{"no packets", LinkTypeEthernet, func() []frame { return nil }, VerdictNoTraffic, 0, nil},
		{"refused connection", LinkTypeEthernet, func() []frame {
			c := newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80")
			c.add(true, 1, tcpSYN, nil)
			c.add(false, 0, tcpRST|tcpACK, nil)
			return c.frames
		}, VerdictNoTraffic, 0, []string{"- no-data"}},
		{"plaintext over Linux SLL2 (-i any)", LinkTypeLinuxSLL2, func() []frame {
			return duplicateAll(plainConv(LinkTypeLinuxSLL2, "10.1.0.5:52314", "10.1.0.7:80", 100).frames)
		}, VerdictPlaintext, 1, []string{"HTTP/1.1 plaintext"}},
		{"plaintext over Linux SLL", LinkTypeLinuxSLL, func() []frame {
			return plainConv(LinkTypeLinuxSLL, "10.1.0.5:52314", "10.1.0.7:80", 100).frames
		}, VerdictPlaintext, 1, []string{"HTTP/1.1 plaintext"}},
		{"plaintext over raw IPv6", LinkTypeRaw, func() []frame {
			return plainConv(LinkTypeRaw, "[fd00::5]:52314", "[fd00::7]:80", 100).frames
		}, VerdictPlaintext, 1, []string{"HTTP/1.1 plaintext"}},
		{"plaintext over VLAN", LinkTypeEthernet, func() []frame {
			c := newConv(LinkTypeEthernet, "10.1.0.5:52314", "10.1.0.7:80")
			c.vlan = true
			return c.handshake().send(true, greetingRequest, 50).send(false, greetingResponse, 50).frames
		}, VerdictPlaintext, 1, []string{"HTTP/1.1 plaintext"}},
		{"out of order and retransmitted segments", LinkTypeEthernet, func() []frame {
			f := plainConv(LinkTypeEthernet, "10.1.0.5:52314", "10.1.0.7:80", 5).frames
			// Swap two response segments and repeat one.
			f[20], f[21] = f[21], f[20]
			return append(f[:25:25], append([]frame{f[22]}, f[25:]...)...)
		}, VerdictPlaintext, 1, []string{"HTTP/1.1 plaintext"}},
		{"h2c", LinkTypeEthernet, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:1234", "10.1.0.7:8080").handshake().send(true, h2, 10).frames
		}, VerdictPlaintext, 0, []string{"HTTP/2 (h2c) plaintext"}},
		{"Istio mTLS over IPv6", LinkTypeEthernet, func() []frame {
			return newConv(LinkTypeEthernet, "[fd00::5]:40000", "[fd00::7]:80").handshake().play(mtls, 1000).fin().frames
		}, VerdictEncryptedIstio, 0, []string{"TLS encrypted-istio"}},
		{"TLS records without handshake", LinkTypeEthernet, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:443").send(true, records, 100).frames
		}, VerdictEncryptedUnproven, 0, []string{"TLS encrypted-unproven"}},
		{"random bytes", LinkTypeEthernet, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:9000").handshake().send(true, random, 1000).frames
		}, VerdictUnknown, 0, []string{"unrecognised unknown"}},
		{"plaintext and mTLS", LinkTypeEthernet, func() []frame {
			a := plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 100).frames
			b := newConv(LinkTypeEthernet, "10.1.0.5:2", "10.1.0.7:80").handshake().play(mtls, 1448).fin().frames
			return append(a, b...)
		}, VerdictMixed, 1, []string{"HTTP/1.1 plaintext", "TLS encrypted-istio"}},
		{"HTTPS and mTLS", LinkTypeEthernet, func() []frame {
			a := newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:443").handshake().play(https, 1448).fin().frames
			b := newConv(LinkTypeEthernet, "10.1.0.5:2", "10.1.0.7:80").handshake().play(mtls, 1448).fin().frames
			return append(a, b...)
		}, VerdictEncryptedTLS, 0, []string{"TLS encrypted-tls", "TLS encrypted-istio"}},
		{"marker in unrecognised plaintext", LinkTypeEthernet, func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:6379").handshake().send(true, []byte("*2\r\n$3\r\nGET\r\n$3\r\nTGN\r\n"), 100).frames
		}, VerdictPlaintext, 1, []string{"text plaintext"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, _ := analyzeBytes(t, pcapBytes(t, tt.link, tt.frames()), Config{Grep: "TGN"})
			if rep.Verdict != tt.verdict || rep.GrepHits != tt.hits {
				t.Errorf("verdict %s, %d hits; want %s, %d\n%s", rep.Verdict, rep.GrepHits, tt.verdict, tt.hits, summary(t, rep))
			}
			var flows []string
			for _, f := range rep.Flows {
				flows = append(flows, f.Protocol+" "+string(f.Verdict))
			}
			if strings.Join(flows, "|") != strings.Join(tt.flows, "|") {
				t.Errorf("flows %q, want %q", flows, tt.flows)
			}
		})
	}
}

// duplicateAll repeats every frame, as `tcpdump -i any` shows a packet
// crossing two veths.
func duplicateAll(in []frame) []frame {
	out := make([]frame, 0, 2*len(in))
	for _, f := range in {
		out = append(out, f, f)
	}
	return out
}

func TestAnalyzeDuplicatesCounted(t *testing.T) {
	frames := plainConv(LinkTypeLinuxSLL2, "10.1.0.5:52314", "10.1.0.7:80", 100).frames
	rep, _ := analyzeBytes(t, pcapBytes(t, LinkTypeLinuxSLL2, duplicateAll(frames)), Config{Grep: "TGN"})
	if rep.Duplicates != len(frames) || rep.Flows[0].Packets != len(frames) {
		t.Errorf("duplicates %d, flow packets %d; want %d each", rep.Duplicates, rep.Flows[0].Packets, len(frames))
	}
}

func TestAnalyzeHoleStopsJoin(t *testing.T) {
	c := newConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80").handshake()
	c.send(true, []byte("GET / HTTP/1.1\r\n\r\nxxT"), 100)
	c.cseq += 10 // ten bytes never captured
	c.send(true, []byte("GNyy"), 100)
	rep, _ := analyzeBytes(t, pcapBytes(t, LinkTypeEthernet, c.frames), Config{Grep: "TGN", MaxPendingBytes: 1})
	if rep.GrepHits != 0 || rep.Flows[0].Holes != 1 {
		t.Errorf("hits %d, holes %d; want 0, 1", rep.GrepHits, rep.Flows[0].Holes)
	}
}

func TestAnalyzeLimits(t *testing.T) {
	var frames []frame
	for i := 0; i < 5; i++ {
		c := newConv(LinkTypeEthernet, "10.1.0.5:1000", "10.1.0.7:80")
		c.client = netip.AddrPortFrom(c.client.Addr(), uint16(1000+i))
		frames = append(frames, c.handshake().send(true, greetingRequest, 100).frames...)
	}
	rep, _ := analyzeBytes(t, pcapBytes(t, LinkTypeEthernet, frames), Config{MaxFlows: 3, MaxFlowSummaries: 2})
	if len(rep.Flows) != 2 || rep.FlowsOmitted != 1 || rep.UntrackedPackets == 0 || rep.Verdict != VerdictPlaintext {
		t.Errorf("flows %d omitted %d untracked %d verdict %s", len(rep.Flows), rep.FlowsOmitted, rep.UntrackedPackets, rep.Verdict)
	}
	rep, err := Analyze(context.Background(), bytes.NewReader(pcapBytes(t, LinkTypeEthernet, frames)), Config{MaxPackets: 4})
	if err != ErrPacketLimit || rep.Packets != 4 {
		t.Errorf("MaxPackets: err %v, packets %d", err, rep.Packets)
	}
}

func TestAnalyzeBadInput(t *testing.T) {
	good := pcapBytes(t, LinkTypeEthernet, plainConv(LinkTypeEthernet, "10.1.0.5:1", "10.1.0.7:80", 100).frames)
	tests := []struct {
		name, wantErr string
		in            []byte
		incomplete    bool
	}{
		{name: "empty", in: nil, incomplete: true},
		{name: "not a capture", in: []byte("hello, this is text and not a capture\n"), wantErr: "not a pcap or pcapng capture: Unknown magic 6c6c6568"},
		{name: "cut mid-packet", in: good[:len(good)-10], incomplete: true},
		{name: "unsupported link type", in: append(append([]byte{}, good[:20]...), 0xe4, 0, 0, 0), wantErr: "unsupported link type 228: capture on an Ethernet interface or `any`"},
	}
	tests[3].in = pcapBytes(t, 147, nil)
	tests[3].wantErr = "unsupported link type 147: capture on an Ethernet interface or `any`"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Analyze(context.Background(), bytes.NewReader(tt.in), Config{})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Incomplete != tt.incomplete {
				t.Errorf("incomplete %v, want %v (%v)", rep.Incomplete, tt.incomplete, rep.Warnings)
			}
		})
	}
}

var update = flag.Bool("update", false, "rewrite testdata captures")

// The captures in testdata are used by the command's tests; -update
// regenerates them.
func TestTestdataCaptures(t *testing.T) {
	captures := map[string]struct {
		frames  func() []frame
		verdict Verdict
	}{
		"plaintext.pcap": {func() []frame {
			return plainConv(LinkTypeEthernet, "10.1.0.5:52314", "10.1.0.7:80", 40).frames
		}, VerdictPlaintext},
		"mtls.pcap": {func() []frame {
			return newConv(LinkTypeEthernet, "10.1.0.5:40000", "10.1.0.7:80").handshake().play(mtlsChunks(t), 1448).fin().frames
		}, VerdictEncryptedIstio},
		"https.pcap": {func() []frame {
			return newConv(LinkTypeLinuxSLL2, "10.1.0.5:40001", "10.1.0.7:443").handshake().play(httpsChunks(t), 1448).fin().frames
		}, VerdictEncryptedTLS},
	}
	for name, c := range captures {
		path := filepath.Join("testdata", name)
		if *update {
			link := uint32(LinkTypeEthernet)
			if name == "https.pcap" {
				link = LinkTypeLinuxSLL2
			}
			if err := os.WriteFile(path, pcapBytes(t, link, c.frames()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := analyzeBytes(t, b, Config{Grep: "TGN"})
		if rep.Verdict != c.verdict {
			t.Errorf("%s: verdict %s, want %s", name, rep.Verdict, c.verdict)
		}
	}
}
