package sniff

// Verdict is what a capture shows about encryption.
type Verdict string

// Verdicts, as they appear in JSON.
const (
	VerdictPlaintext      Verdict = "plaintext"
	VerdictEncryptedIstio Verdict = "encrypted-istio"
	VerdictEncryptedTLS   Verdict = "encrypted-tls"
	// VerdictEncryptedUnproven is TLS whose handshake was not captured (a
	// pooled connection opened before the capture) and that nothing else
	// proves to be Istio's or not.
	VerdictEncryptedUnproven Verdict = "encrypted-unproven"
	VerdictMixed             Verdict = "mixed"
	VerdictNoTraffic         Verdict = "no-traffic"
	VerdictUnknown           Verdict = "unknown"
	// VerdictNoData is a flow that carried no payload (a refused or idle
	// connection); it does not count towards the capture's verdict.
	VerdictNoData Verdict = "no-data"
)

// String is the human form used in the summary.
func (v Verdict) String() string {
	switch v {
	case VerdictPlaintext:
		return "PLAINTEXT"
	case VerdictEncryptedIstio:
		return "ENCRYPTED (Istio mTLS)"
	case VerdictEncryptedTLS:
		return "ENCRYPTED (TLS, not Istio)"
	case VerdictEncryptedUnproven:
		return "ENCRYPTED (TLS, Istio not proven)"
	case VerdictMixed:
		return "MIXED"
	case VerdictNoTraffic:
		return "NO TRAFFIC"
	case VerdictNoData:
		return "NO DATA"
	}
	return "UNKNOWN"
}

// Label is the short per-flow form used in live lines and the flow table.
func (v Verdict) Label() string {
	switch v {
	case VerdictEncryptedIstio:
		return "ISTIO-MTLS"
	case VerdictEncryptedTLS:
		return "TLS"
	case VerdictEncryptedUnproven:
		return "TLS-NO-HANDSHAKE"
	}
	return v.String()
}

// flowLabel is the flow table's verdict column: HBONE is told apart.
func flowLabel(f FlowSummary) string {
	if f.Verdict == VerdictEncryptedIstio && f.Istio == "hbone" {
		return "ISTIO-HBONE"
	}
	return f.Verdict.Label()
}

// Encrypted reports whether v claims encryption for all traffic.
func (v Verdict) Encrypted() bool {
	return v == VerdictEncryptedIstio || v == VerdictEncryptedTLS || v == VerdictEncryptedUnproven
}
