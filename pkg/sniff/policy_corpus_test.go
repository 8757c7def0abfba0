package sniff

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorpusVerdicts runs the policy on captures that other TLS stacks,
// curl, dig, dnsmasq and the kernel made (testdata/corpus/README.md says
// how), with --grep TGN: what each flow and the capture are called.
func TestCorpusVerdicts(t *testing.T) {
	tests := []struct {
		file    string
		verdict Verdict
		hits    int
		flows   []string // transport protocol rule [istio] [infra:rule]
	}{
		{"any-sll2.pcap", VerdictMixed, 1, []string{"tcp TLS istio-hello sidecar", "tcp HTTP/1.1 cleartext"}},
		{"curl-http.pcap", VerdictPlaintext, 2, []string{"tcp HTTP/1.1 cleartext", "tcp HTTP/1.1 cleartext"}},
		{"curl-https.pcap", VerdictEncryptedTLS, 0, []string{"tcp TLS other-hello", "tcp TLS other-hello"}},
		// The TXT answer carries the marker: DNS is infrastructure, but a
		// marker in clear counts wherever it is.
		{"dns.pcap", VerdictPlaintext, 1, []string{"udp DNS cleartext infra:cluster-dns", "udp DNS cleartext infra:cluster-dns"}},
		{"hbone-15008.pcap", VerdictEncryptedIstio, 0, []string{"tcp TLS hbone-hello hbone", "tcp TLS hbone-hello hbone"}},
		{"istio-mtls-tls12.pcap", VerdictEncryptedIstio, 0, []string{"tcp TLS istio-hello sidecar", "tcp TLS istio-hello sidecar"}},
		{"istio-mtls-tls13.pcap", VerdictEncryptedIstio, 0, []string{"tcp TLS istio-hello sidecar", "tcp TLS istio-hello sidecar"}},
		{"mixed-mtls-udp.pcap", VerdictMixed, 1, []string{"tcp TLS istio-hello sidecar", "udp text cleartext", "tcp TLS istio-hello sidecar"}},
		// From a file, nothing proves the pooled :8080 flow is Istio's.
		{"pooled-midstream.pcap", VerdictEncryptedUnproven, 0, []string{"tcp TLS hbone-pooled hbone", "tcp TLS no-handshake"}},
		{"tls-plain-h2.pcap", VerdictEncryptedTLS, 0, []string{"tcp TLS other-hello"}},
		{"udp-frag-ipv4.pcap", VerdictPlaintext, 2, []string{"udp text cleartext"}},
		{"udp-frag-ipv6.pcap", VerdictPlaintext, 2, []string{"udp text cleartext", "icmp ICMPv6 cleartext infra:icmp", "icmp ICMPv6 cleartext infra:icmp", "icmp ICMPv6 cleartext infra:icmp"}},
		{"udp-marker.pcap", VerdictPlaintext, 3, []string{"udp text cleartext", "udp text cleartext", "udp text cleartext"}},
	}
	// What the summary says of captures made by OpenSSL: HBONE is named
	// only when its handshakes were seen; a pooled :15008 flow next to an
	// unproven one does not make the capture Istio's.
	says := map[string]string{
		"hbone-15008.pcap":      "ENCRYPTED (Istio HBONE)",
		"istio-mtls-tls13.pcap": "ENCRYPTED (Istio mTLS)",
		"istio-mtls-tls12.pcap": "ENCRYPTED (Istio mTLS)",
		"pooled-midstream.pcap": "ENCRYPTED (TLS, Istio not proven)",
		"curl-https.pcap":       "ENCRYPTED (TLS, not Istio)",
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "corpus", "*.pcap"))
	if len(files) != len(tests) {
		t.Errorf("%d corpus files, %d rows: give every capture a row", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "corpus", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			rep, err := Analyze(context.Background(), f, Config{Grep: "TGN"})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range [][]FlowSummary{rep.Flows, rep.Infra} {
				for _, fs := range l {
					s := fmt.Sprintf("%s %s %s", fs.Transport, fs.Protocol, fs.Rule)
					if fs.Istio != "" {
						s += " " + fs.Istio
					}
					if fs.Infra != "" {
						s += " infra:" + fs.Infra
					}
					got = append(got, s)
				}
			}
			if rep.Verdict != tt.verdict || rep.GrepHits != tt.hits || fmt.Sprint(got) != fmt.Sprint(tt.flows) {
				t.Errorf("%s, %d hits, flows %q; want %s, %d, %q", rep.Verdict, rep.GrepHits, got, tt.verdict, tt.hits, tt.flows)
			}
			if want, ok := says[tt.file]; ok && verdictText(rep) != want {
				t.Errorf("the summary says %s, want %s", verdictText(rep), want)
			}
		})
	}
}

// TestCorpusShortFlows judges OpenSSL's and curl's own bytes under the
// rules for short flows, cut out of corpus captures by tshark (which
// selects whole frames and writes no byte of its own):
//   - one pooled HBONE record each way (frames 1 and 2 of
//     pooled-midstream.pcap, a line and its answer, tshark reads both as
//     TLS application data) is Istio HBONE;
//   - the request alone, its answer never seen, is still TLS (the other
//     direction is silent);
//   - curl's GET /greetings from the "node" is a kubelet probe only when the
//     pod's spec probes that path.
func TestCorpusShortFlows(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tshark is not installed; hack/install-deps.sh installs it (Debian package tshark)")
		}
		t.Skip("tshark is not installed (Debian package tshark; hack/install-deps.sh installs it)")
	}
	cut := func(file, filter string) []byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), "cut.pcap")
		cmd := exec.Command(tshark, "-r", filepath.Join("testdata", "corpus", file), "-Y", filter, "-F", "pcap", "-w", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tshark: %v\n%s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	analyze := func(b []byte, cfg Config) *Report {
		t.Helper()
		rep, err := Analyze(context.Background(), bytes.NewReader(b), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	// tshark's own reading of the two frames first.
	out, err := exec.Command(tshark, "-r", filepath.Join("testdata", "corpus", "pooled-midstream.pcap"), "-d", "tcp.port==15008,tls",
		"-Y", "frame.number<=2", "-T", "fields", "-e", "tcp.dstport", "-e", "tls.record.content_type", "-e", "tls.record.length").Output()
	// The request to 15008, then the answer from it: one application-data
	// record (type 23) of 58 bytes each.
	if err != nil || !strings.HasPrefix(string(out), "15008\t23\t58\n") || strings.Count(string(out), "\t23\t58\n") != 2 {
		t.Fatalf("tshark reads frames 1-2 as %q, %v", out, err)
	}
	if rep := analyze(cut("pooled-midstream.pcap", "frame.number<=2"), Config{}); rep.Verdict != VerdictEncryptedIstio || len(rep.Flows) != 1 || rep.Flows[0].Rule != "hbone-pooled" {
		t.Errorf("one record each way on 15008: %s %v; want ENCRYPTED (Istio HBONE) by hbone-pooled", rep.Verdict, rep.Flows)
	}
	if rep := analyze(cut("pooled-midstream.pcap", "frame.number==1"), Config{}); rep.Verdict != VerdictEncryptedIstio {
		t.Errorf("one record, no answer: %s %v; want ENCRYPTED (Istio HBONE)", rep.Verdict, rep.Flows)
	}

	// curl's two GET /greetings from 10.250.0.10 to 10.250.0.20:80.
	probe := func(path string) *PodContext {
		return &PodContext{IPs: []netip.Addr{netip.MustParseAddr("10.250.0.20")}, NodeIP: netip.MustParseAddr("10.250.0.10"),
			ProbeRequests: map[uint16][]string{80: {"GET " + path}}}
	}
	curl := cut("curl-http.pcap", "tcp")
	if rep := analyze(curl, Config{Pod: probe("/greetings")}); len(rep.Infra) != 2 || len(rep.Flows) != 0 {
		t.Errorf("curl's GET /greetings with a probe of /greetings: %d flows, %d apart; want both apart as probes", len(rep.Flows), len(rep.Infra))
	}
	if rep := analyze(curl, Config{Pod: probe("/healthz")}); len(rep.Infra) != 0 || rep.Verdict != VerdictPlaintext {
		t.Errorf("curl's GET /greetings with a probe of /healthz: %s, %d apart; want PLAINTEXT, none apart", rep.Verdict, len(rep.Infra))
	}
}
