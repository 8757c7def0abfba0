package sniff

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// FormatEvent renders one live line:
//
//	10.1.0.5:52314 → 10.1.0.7:80  HTTP/1.1 POST /greetings  PLAINTEXT
func FormatEvent(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s → %s  ", ev.Src, ev.Dst)
	switch ev.Kind {
	case EventGrep:
		fmt.Fprintf(&b, "%s  %s", ev.Verdict.Label(), ev.Snippet)
	default:
		b.WriteString(ev.Protocol)
		if ev.Detail != "" {
			b.WriteString(" " + ev.Detail)
		}
		b.WriteString("  " + ev.Verdict.Label())
	}
	return b.String()
}

// WriteSummary prints the application flows, the mesh infrastructure
// apart, the counts, the grep hits, what kept the verdict from being
// encrypted, and the verdict.
func WriteSummary(w io.Writer, r *Report) error {
	if err := writeFlows(w, r.Flows, false); err != nil {
		return err
	}
	if len(r.Infra) > 0 {
		fmt.Fprintln(w, "Mesh infrastructure, not in the verdict (--include-infra counts it):")
		if err := writeFlows(w, r.Infra, true); err != nil {
			return err
		}
	}
	if r.FlowsOmitted > 0 {
		fmt.Fprintf(w, "(%d more flows counted but not listed)\n", r.FlowsOmitted)
	}
	fmt.Fprintf(w, "Packets: %d (%s", r.Packets, countFlows(r))
	for _, c := range []struct {
		n    int
		what string
	}{
		{r.OtherPackets, "not IP"}, {r.Duplicates, "duplicates"}, {r.UntrackedPackets, "judged alone past the flow limit"},
		{r.Fragments, "fragments"}, {r.Reassembled, "datagrams reassembled"}, {r.FragmentsLost, "fragments not reassembled"},
	} {
		if c.n > 0 {
			fmt.Fprintf(w, ", %d %s", c.n, c.what)
		}
	}
	fmt.Fprintln(w, ")")
	if r.Grep != "" {
		fmt.Fprintf(w, "Grep %q: %d %s", r.Grep, r.GrepHits, plural(r.GrepHits, "hit", "hits"))
		if r.GrepHitsInTLS > 0 {
			fmt.Fprintf(w, " (%d inside TLS streams, where a short pattern matches ciphertext by chance)", r.GrepHitsInTLS)
		}
		fmt.Fprintln(w)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", warn)
	}
	if r.Verdict == VerdictMixed {
		for _, why := range r.Why {
			fmt.Fprintf(w, "Not encrypted: %s\n", why)
		}
	}
	_, err := fmt.Fprintf(w, "Verdict: %s\n", verdictText(r))
	return err
}

// verdictText is the summary's verdict, saying which Istio transport the
// listed application flows proved: sidecar mTLS, ambient's HBONE, or both.
func verdictText(r *Report) string {
	if r.Verdict != VerdictEncryptedIstio {
		return r.Verdict.String()
	}
	hbone, sidecar := 0, 0
	for _, f := range r.Flows {
		switch f.Istio {
		case "hbone":
			hbone++
		case "sidecar":
			sidecar++
		}
	}
	switch {
	case hbone > 0 && sidecar == 0:
		return "ENCRYPTED (Istio HBONE)"
	case hbone > 0:
		return "ENCRYPTED (Istio mTLS and HBONE)"
	}
	return r.Verdict.String()
}

func writeFlows(w io.Writer, flows []FlowSummary, infra bool) error {
	if len(flows) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "SOURCE\tDESTINATION\tPROTOCOL\tDETAIL\tPACKETS\tBYTES\tVERDICT"
	if infra {
		head += "\tWHAT"
	}
	fmt.Fprintln(tw, head)
	for _, f := range flows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s", f.Src, f.Dst, protocolColumn(f), flowDetail(f), f.Packets, f.Bytes, flowLabel(f))
		if infra {
			fmt.Fprintf(tw, "\t%s", f.Infra)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// protocolColumn names the transport too when it is not TCP.
func protocolColumn(f FlowSummary) string {
	switch f.Transport {
	case "", "tcp", "icmp":
		return f.Protocol
	}
	return strings.ToUpper(f.Transport) + " " + f.Protocol
}

func countFlows(r *Report) string {
	var tcp, other int
	for _, l := range [][]FlowSummary{r.Flows, r.Infra} {
		for _, f := range l {
			if f.Transport == "tcp" {
				tcp++
			} else {
				other++
			}
		}
	}
	s := fmt.Sprintf("%d TCP %s", tcp, plural(tcp, "flow", "flows"))
	if other > 0 {
		s += fmt.Sprintf(", %d UDP/ICMP/IP %s", other, plural(other, "flow", "flows"))
	}
	if n := len(r.Infra); n > 0 {
		s += fmt.Sprintf(", %d of them infrastructure", n)
	}
	return s
}

func flowDetail(f FlowSummary) string {
	var parts []string
	if f.Request != "" {
		parts = append(parts, f.Request)
	}
	if f.TLSVersion != "" {
		parts = append(parts, f.TLSVersion)
	}
	if f.SNI != "" {
		parts = append(parts, "SNI="+f.SNI)
	}
	if len(f.ALPN) > 0 {
		parts = append(parts, "ALPN="+strings.Join(f.ALPN, ","))
	}
	if f.GrepHits > 0 {
		parts = append(parts, fmt.Sprintf("grep=%d", f.GrepHits))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// WriteJSON prints the report as one indented JSON object.
func WriteJSON(w io.Writer, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
