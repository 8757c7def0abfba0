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

// WriteSummary prints the flow table, the grep count and the verdict.
func WriteSummary(w io.Writer, r *Report) error {
	if len(r.Flows) > 0 {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tDESTINATION\tPROTOCOL\tDETAIL\tPACKETS\tBYTES\tVERDICT")
		for _, f := range r.Flows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", f.Src, f.Dst, f.Protocol, flowDetail(f), f.Packets, f.Bytes, f.Verdict.Label())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r.FlowsOmitted > 0 {
		fmt.Fprintf(w, "(%d more flows counted but not listed)\n", r.FlowsOmitted)
	}
	n := len(r.Flows) + r.FlowsOmitted
	fmt.Fprintf(w, "Packets: %d (%d TCP %s", r.Packets, n, plural(n, "flow", "flows"))
	if r.OtherPackets > 0 {
		fmt.Fprintf(w, ", %d not TCP", r.OtherPackets)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(w, ", %d duplicates", r.Duplicates)
	}
	if r.UntrackedPackets > 0 {
		fmt.Fprintf(w, ", %d untracked", r.UntrackedPackets)
	}
	fmt.Fprintln(w, ")")
	if r.Grep != "" {
		fmt.Fprintf(w, "Grep %q: %d %s\n", r.Grep, r.GrepHits, plural(r.GrepHits, "hit", "hits"))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", warn)
	}
	_, err := fmt.Fprintf(w, "Verdict: %s\n", r.Verdict)
	return err
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
