package inject

import (
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/cli-runtime/pkg/printers"
)

// WriteRestartTable prints the restart summary, one row per workload; wide
// adds how long each took from its restart to the verdict on its pods.
func WriteRestartTable(out io.Writer, results []Result, wide bool) error {
	w := printers.GetNewTabWriter(out)
	head := "WORKLOAD\tPODS BEFORE\tPODS AFTER\tSIDECAR\tRESULT"
	if wide {
		head = "WORKLOAD\tPODS BEFORE\tPODS AFTER\tSIDECAR\tTOOK\tRESULT"
	}
	fmt.Fprintln(w, head)
	for _, r := range results {
		after, sidecar := "-", "-"
		if r.Rolled {
			after = fmt.Sprint(r.PodsAfter)
			sidecar = fmt.Sprintf("%d/%d", r.WithSidecar, r.PodsAfter)
		}
		if after != "-" && !r.WantSidecar {
			sidecar += " (none wanted)"
		}
		result := r.Outcome
		if r.Detail != "" {
			result += ": " + r.Detail
		}
		if wide {
			took := "-"
			if r.Rolled {
				took = r.Took.Round(time.Millisecond).String()
			}
			fmt.Fprintf(w, "%s/%s\t%d\t%s\t%s\t%s\t%s\n", r.Namespace, r.Ref, r.PodsBefore, after, sidecar, took, result)
			continue
		}
		fmt.Fprintf(w, "%s/%s\t%d\t%s\t%s\t%s\n", r.Namespace, r.Ref, r.PodsBefore, after, sidecar, result)
	}
	return w.Flush()
}

// WritePlanTable prints what would be restarted and why (client dry run).
func WritePlanTable(out io.Writer, targets []Target) error {
	w := printers.GetNewTabWriter(out)
	fmt.Fprintln(w, "WORKLOAD\tPODS\tSIDECAR\tREASON")
	for _, t := range targets {
		why := t.Assessment.Why
		if why == "" {
			why = "--all"
		}
		fmt.Fprintf(w, "%s/%s\t%d\t%d/%d\t%s\n", t.Workload.Namespace, t.Workload.Ref(), t.Assessment.Pods,
			t.Assessment.WithSidecar, t.Assessment.Pods, why)
	}
	return w.Flush()
}

// WriteStatus prints the control plane and per-namespace tables; wide adds
// the workloads needing a restart, conflicts and workload policies.
func WriteStatus(out io.Writer, rep *Report, wide bool) error {
	w := printers.GetNewTabWriter(out)
	switch {
	case len(rep.ControlPlanes) == 0 && len(rep.Unchecked) > 0:
		fmt.Fprintln(w, "Control plane: not readable with your permissions (see the notes)")
	case len(rep.ControlPlanes) == 0:
		fmt.Fprintln(w, "Control plane: none found (no sidecar injector, istiod or injector ConfigMap)")
	default:
		fmt.Fprintln(w, "REVISION\tTAGS\tVERSION\tINJECTOR\tISTIOD")
		for _, cp := range rep.ControlPlanes {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cp.Revision, dash(strings.Join(cp.Tags, ",")), dash(cp.Version),
				dash(cp.Injector), dash(cp.Istiod))
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	w = printers.GetNewTabWriter(out)
	head := "NAMESPACE\tINJECTION\tWORKLOADS WITH SIDECAR\tPODS NEEDING RESTART\tSIDECAR VERSIONS\tMTLS"
	if wide {
		head += "\tNEEDS RESTART\tCONFLICTS\tWORKLOAD POLICIES"
	}
	fmt.Fprintln(w, head)
	for _, ns := range rep.Namespaces {
		versions := dash(strings.Join(ns.SidecarVersions, ","))
		if ns.VersionSkew {
			versions += " (skew)"
		}
		mtls := ns.MTLS
		if !wide {
			// The short form keeps only the mode.
			if i := strings.Index(mtls, " ("); i > 0 {
				mtls = mtls[:i]
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d\t%s\t%s", ns.Name, ns.Injection, ns.WorkloadsWithSidecar, ns.Workloads,
			ns.PodsNeedingRestart, versions, mtls)
		if wide {
			fmt.Fprintf(w, "\t%s\t%s\t%d", dash(strings.Join(ns.NeedRestart, ",")), dash(strings.Join(ns.Conflicts, "; ")), ns.WorkloadPolicies)
		}
		fmt.Fprintln(w)
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
