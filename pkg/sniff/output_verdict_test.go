package sniff

import (
	"bytes"
	"strings"
	"testing"
)

// The summary's verdict says which Istio transport the application flows
// proved; infrastructure flows do not count.
func TestVerdictText(t *testing.T) {
	tests := []struct {
		name string
		rep  Report
		want string
	}{
		{"sidecar", Report{Verdict: VerdictEncryptedIstio, Flows: []FlowSummary{{Verdict: VerdictEncryptedIstio, Istio: "sidecar"}}}, "Verdict: ENCRYPTED (Istio mTLS)"},
		{"hbone", Report{Verdict: VerdictEncryptedIstio, Flows: []FlowSummary{{Verdict: VerdictEncryptedIstio, Istio: "hbone"}},
			Infra: []FlowSummary{{Verdict: VerdictPlaintext}}}, "Verdict: ENCRYPTED (Istio HBONE)"},
		{"both", Report{Verdict: VerdictEncryptedIstio, Flows: []FlowSummary{{Verdict: VerdictEncryptedIstio, Istio: "hbone"}, {Verdict: VerdictEncryptedIstio, Istio: "sidecar"}}},
			"Verdict: ENCRYPTED (Istio mTLS and HBONE)"},
		{"flows not listed", Report{Verdict: VerdictEncryptedIstio}, "Verdict: ENCRYPTED (Istio mTLS)"},
		{"mixed with hbone", Report{Verdict: VerdictMixed, Flows: []FlowSummary{{Verdict: VerdictEncryptedIstio, Istio: "hbone"}, {Verdict: VerdictPlaintext}}}, "Verdict: MIXED"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := WriteSummary(&b, &tt.rep); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if got := lines[len(lines)-1]; got != tt.want {
			t.Errorf("%s: %q, want %q\n%s", tt.name, got, tt.want, b.String())
		}
	}
}
