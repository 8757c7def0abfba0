package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// Formats Print accepts.
var Formats = []string{"table", "json", "yaml", "dot", "mermaid"}

// Print writes the result in format at time now (for time left).
func Print(w io.Writer, format string, res *Result, now time.Time) error {
	switch format {
	case "", "table":
		return printTable(w, res, now)
	case "json", "yaml":
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "dot":
		return writeDot(w, res)
	case "mermaid":
		return writeMermaid(w, res)
	}
	return fmt.Errorf("unknown output format %q: use %s", format, strings.Join(Formats, ", "))
}

func printTable(w io.Writer, res *Result, now time.Time) error {
	cp := res.ControlPlane
	if cp == "" {
		cp = "unknown"
	}
	fmt.Fprintf(w, "Verifying %s (control plane %s)\n\n", res.Scope, cp)
	fmt.Fprintln(w, "WORKLOADS")
	if len(res.Workloads) == 0 {
		fmt.Fprintln(w, "  (no workloads with running pods)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "WORKLOAD\tKIND\tPODS\tMESH\tSIDECAR\tSKEW\tMTLS")
		for _, r := range res.Workloads {
			mode := r.Mesh
			if r.Mesh == MeshNone && r.System {
				mode += " (system)"
			}
			skew := "no"
			if r.Skew {
				skew = "yes (want " + r.WantVersion + ")"
			}
			mtls := r.MTLS + " (" + r.MTLSFrom + ")"
			if len(r.PortMTLS) > 0 {
				mtls += ", ports " + strings.Join(r.PortMTLS, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Name(), r.Kind, r.Pods, mode, dash(strings.Join(r.Versions, ",")), skew, mtls)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	id := res.Identities
	fmt.Fprint(w, "IDENTITIES")
	if id.Root != "" {
		fmt.Fprintf(w, " (shared root %s, %s)", id.Root, id.RootSubject)
	}
	fmt.Fprintln(w)
	switch {
	case id.Skipped != "":
		fmt.Fprintf(w, "  not checked: %s\n", id.Skipped)
	case len(id.Rows) == 0:
		fmt.Fprintln(w, "  (no workload with a sidecar)")
	default:
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "WORKLOAD\tPOD\tSPIFFE ID\tROOT\tTIME LEFT\tRESULT")
		for _, r := range id.Rows {
			left := "-"
			if !r.NotAfter.IsZero() {
				left = duration.HumanDuration(r.NotAfter.Sub(now))
			}
			result := "ok"
			if r.Problem != "" {
				result = r.Problem
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Workload, dash(r.Pod), dash(r.SPIFFEID), dash(r.Root), left, result)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if err := printWire(w, res.Wire); err != nil {
		return err
	}
	fmt.Fprintln(w)
	printStrict(w, res.Strict)
	fmt.Fprintln(w)
	for _, n := range res.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	for _, f := range res.Failures {
		fmt.Fprintf(w, "Failed: %s\n", f)
	}
	for _, u := range res.Unproven {
		fmt.Fprintf(w, "Unproven: %s\n", u)
	}
	_, err := fmt.Fprintf(w, "Verdict: %s (exit %d)\n", res.Verdict, res.ExitCode)
	return err
}

func printWire(w io.Writer, sec WireSection) error {
	fmt.Fprint(w, "WIRE")
	var nodes []string
	for _, n := range sec.Nodes {
		s := fmt.Sprintf("%s: %d %s, %d packets", n.Node, n.Pods, plural(n.Pods, "pod", "pods"), n.Packets)
		if n.Error != "" {
			s = n.Node + ": not captured"
		}
		nodes = append(nodes, s)
	}
	if len(nodes) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(nodes, "; "))
	}
	fmt.Fprintln(w)
	if sec.Skipped != "" {
		fmt.Fprintf(w, "  not captured: %s\n", sec.Skipped)
		return nil
	}
	for _, n := range sec.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "  node %s: %s\n", n.Node, strings.ReplaceAll(n.Error, "\n", "\n    "))
		}
	}
	if len(sec.Edges) == 0 {
		fmt.Fprintln(w, "  (no application traffic captured)")
	} else if err := writeEdges(w, sec.Edges, false); err != nil {
		return err
	}
	if len(sec.Infra) > 0 {
		fmt.Fprintln(w, "Mesh infrastructure, not judged:")
		return writeEdges(w, sec.Infra, true)
	}
	return nil
}

func writeEdges(w io.Writer, edges []Edge, infra bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := "SOURCE\tDESTINATION\tPROTOCOL\tVERDICT\tPACKETS\tBYTES\tEVIDENCE"
	if infra {
		head = "SOURCE\tDESTINATION\tPROTOCOL\tPACKETS\tWHAT"
	}
	fmt.Fprintln(tw, head)
	for _, e := range edges {
		proto := e.Protocol
		if e.Transport != "" && e.Transport != "tcp" && e.Transport != "icmp" {
			proto = strings.ToUpper(e.Transport) + " " + proto
		}
		if infra {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", e.Src, e.DstName(), proto, e.Packets, e.Infra)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Src, e.DstName(), proto, edgeLabel(e.Verdict), e.Packets, e.Bytes, e.Evidence)
	}
	return tw.Flush()
}

// edgeLabel is sniff's short label of a verdict, or UNPROVEN.
func edgeLabel(v string) string {
	if v == EdgeUnproven {
		return "UNPROVEN"
	}
	return sniff.Verdict(v).Label()
}

func printStrict(w io.Writer, ws []StrictWorkload) {
	fmt.Fprintln(w, "STRICT READINESS")
	if len(ws) == 0 {
		fmt.Fprintln(w, "  (no meshed workload accepts plaintext)")
		return
	}
	for _, s := range ws {
		switch {
		case s.Unchecked != "":
			fmt.Fprintf(w, "  %s (%s): not known, %s\n", s.Workload, s.Mode, s.Unchecked)
		case s.Ready:
			fmt.Fprintf(w, "  %s (%s): ready, no plaintext client seen (--strict-yaml prints the PeerAuthentication)\n", s.Workload, s.Mode)
		default:
			fmt.Fprintf(w, "  %s (%s): STRICT would cut off %d %s:\n", s.Workload, s.Mode, len(s.Clients), plural(len(s.Clients), "client", "clients"))
			for _, c := range s.Clients {
				fmt.Fprintf(w, "    %s\n", c.String(s.Workload))
			}
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
