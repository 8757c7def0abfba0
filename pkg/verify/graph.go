package verify

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// Edge colours: green Istio mTLS, red plaintext (or mixed), grey
// unproven, orange other TLS.
const (
	colourMTLS      = "green"
	colourPlaintext = "red"
	colourUnproven  = "grey"
	colourTLS       = "orange"
)

func edgeColour(v string) string {
	switch v {
	case string(sniff.VerdictEncryptedIstio):
		return colourMTLS
	case string(sniff.VerdictPlaintext), string(sniff.VerdictMixed):
		return colourPlaintext
	case string(sniff.VerdictEncryptedTLS), string(sniff.VerdictEncryptedUnproven):
		return colourTLS
	}
	return colourUnproven
}

// graphNodes are the endpoints of the edges and the workloads of the
// scope, each once, sorted; with the workloads' mesh mode.
func graphNodes(res *Result) ([]string, map[string]string) {
	mode := map[string]string{}
	for _, w := range res.Workloads {
		mode[w.Name()] = w.Mesh
	}
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, w := range res.Workloads {
		add(w.Name())
	}
	for _, e := range res.Wire.Edges {
		add(e.Src)
		add(e.Dst)
	}
	sort.Strings(out)
	return out, mode
}

func edgeText(e Edge) string {
	s := fmt.Sprintf(":%d %s", e.Port, edgeLabel(e.Verdict))
	if e.Port == 0 {
		s = edgeLabel(e.Verdict)
	}
	if e.Packets > 0 {
		s += fmt.Sprintf(" (%d pkts)", e.Packets)
	}
	return s
}

// writeDot draws the edges for graphviz (dot -Tsvg).
func writeDot(w io.Writer, res *Result) error {
	nodes, mode := graphNodes(res)
	var b strings.Builder
	b.WriteString("digraph mesh {\n  rankdir=LR;\n  labelloc=t;\n")
	fmt.Fprintf(&b, "  label=%s;\n", dotQuote(graphTitle(res)))
	b.WriteString("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n")
	for _, n := range nodes {
		label := nodeLabel(n)
		if m := mode[n]; m != "" {
			label += "\n" + m
		}
		attrs := ""
		if mode[n] == MeshNone || mode[n] == MeshPartial {
			attrs = ", color=\"red\""
		}
		fmt.Fprintf(&b, "  %s [label=%s%s];\n", dotQuote(n), dotQuote(label), attrs)
	}
	for _, e := range res.Wire.Edges {
		style := ""
		if e.Verdict == EdgeUnproven {
			style = ", style=dashed"
		}
		fmt.Fprintf(&b, "  %s -> %s [label=%s, color=%q, fontcolor=%q%s];\n", dotQuote(e.Src), dotQuote(e.Dst), dotQuote(edgeText(e)), edgeColour(e.Verdict), edgeColour(e.Verdict), style)
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// writeMermaid draws the edges as a Mermaid flowchart for a Markdown page.
func writeMermaid(w io.Writer, res *Result) error {
	nodes, mode := graphNodes(res)
	id := map[string]string{}
	var b strings.Builder
	for _, line := range strings.Split(graphTitle(res), "\n") {
		fmt.Fprintf(&b, "%%%% %s\n", line)
	}
	b.WriteString("flowchart LR\n")
	for i, n := range nodes {
		id[n] = fmt.Sprintf("n%d", i)
		label := nodeLabel(n)
		if m := mode[n]; m != "" {
			label += "<br/>" + m
		}
		fmt.Fprintf(&b, "  %s[\"%s\"]\n", id[n], mermaidText(label))
	}
	for _, e := range res.Wire.Edges {
		arrow := "-->"
		if e.Verdict == EdgeUnproven {
			arrow = "-.->"
		}
		fmt.Fprintf(&b, "  %s %s|\"%s\"| %s\n", id[e.Src], arrow, mermaidText(edgeText(e)), id[e.Dst])
	}
	for i, e := range res.Wire.Edges {
		fmt.Fprintf(&b, "  linkStyle %d stroke:%s,color:%s\n", i, edgeColour(e.Verdict), edgeColour(e.Verdict))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mermaidText escapes a label for a quoted Mermaid string.
func mermaidText(s string) string {
	return strings.NewReplacer(`"`, "#quot;").Replace(s)
}

// graphTitle is the verdict and its reasons, one per line.
func graphTitle(res *Result) string {
	lines := []string{fmt.Sprintf("%s: %s (exit %d)", res.Scope, res.Verdict, res.ExitCode)}
	for _, f := range res.Failures {
		lines = append(lines, "failed: "+f)
	}
	for _, u := range res.Unproven {
		lines = append(lines, "unproven: "+strings.ReplaceAll(u, "\n", " "))
	}
	return strings.Join(lines, "\n")
}

// nodeLabel names the source of predicted edges "any client".
func nodeLabel(n string) string {
	if n == "*" {
		return "any client"
	}
	return n
}
