package sniff

// Verdict is what a capture shows about encryption.
type Verdict string

// Verdicts, as they appear in JSON.
const (
	VerdictPlaintext      Verdict = "plaintext"
	VerdictEncryptedIstio Verdict = "encrypted-istio"
	VerdictEncryptedTLS   Verdict = "encrypted-tls"
	VerdictMixed          Verdict = "mixed"
	VerdictNoTraffic      Verdict = "no-traffic"
	VerdictUnknown        Verdict = "unknown"
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
	}
	return v.String()
}

// Encrypted reports whether v claims encryption for all traffic.
func (v Verdict) Encrypted() bool {
	return v == VerdictEncryptedIstio || v == VerdictEncryptedTLS
}

// overallVerdict combines per-flow verdict counts: one kind of traffic gives
// that kind; plaintext, encrypted and unrecognised traffic together give
// MIXED. Encryption is only claimed when every flow with data showed TLS.
func overallVerdict(counts map[Verdict]int) Verdict {
	plain, istio, tls, unknown := counts[VerdictPlaintext], counts[VerdictEncryptedIstio], counts[VerdictEncryptedTLS], counts[VerdictUnknown]
	kinds := 0
	for _, n := range []int{plain, istio + tls, unknown} {
		if n > 0 {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		return VerdictNoTraffic
	case kinds > 1:
		return VerdictMixed
	case plain > 0:
		return VerdictPlaintext
	case unknown > 0:
		return VerdictUnknown
	case tls > 0:
		return VerdictEncryptedTLS
	}
	return VerdictEncryptedIstio
}
