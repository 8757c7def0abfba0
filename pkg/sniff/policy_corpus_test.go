package sniff

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
