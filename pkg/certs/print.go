package certs

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// Output formats of -o.
var Outputs = []string{"table", "wide", "json", "yaml", "pem"}

// Result is everything one run prints.
type Result struct {
	Reports    []*Report   `json:"items"`
	Comparison *Comparison `json:"comparison,omitempty"`
}

// Value is what -o json, yaml and templates print: one workload as one
// object, as kubectl get does, else the whole result.
func Value(res Result) any {
	if len(res.Reports) == 1 && res.Comparison == nil {
		return res.Reports[0]
	}
	return res
}

// Print writes res to w in format (one of Outputs; "" is table).
func Print(w io.Writer, format string, res Result) error {
	switch format {
	case "", "table", "wide":
		return printTable(w, format == "wide", res)
	case "json", "yaml":
		b, err := json.MarshalIndent(Value(res), "", "  ")
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
	case "pem":
		for i, r := range res.Reports {
			// Text between PEM blocks is ignored by openssl and Go alike.
			b := r.Bundle()
			if len(b.Chain) == 0 {
				continue // pending: nothing to print
			}
			if len(res.Reports) > 1 {
				if i > 0 {
					fmt.Fprintln(w)
				}
				fmt.Fprintf(w, "# %s\n", r.Name())
			}
			if _, err := w.Write(EncodePEM(append(b.Chain[:len(b.Chain):len(b.Chain)], b.Roots...))); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(Outputs, ", "))
}

func printTable(w io.Writer, wide bool, res Result) error {
	for i, r := range res.Reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := printReport(w, wide, r); err != nil {
			return err
		}
	}
	if c := res.Comparison; c != nil {
		fmt.Fprintln(w)
		verdict := "SHARED ROOT"
		if !c.OK {
			verdict = "FAILED"
		} else if !c.SharedRoot {
			verdict = "OK"
		}
		fmt.Fprintf(w, "Compare:  %s\n  %s\n", verdict, c.Message)
	}
	return nil
}

func printReport(w io.Writer, wide bool, r *Report) error {
	tw := printers.GetNewTabWriter(w)
	if r.Workload != nil {
		fmt.Fprintf(tw, "Pod:\t%s/%s (service account %s)\n", r.Workload.Namespace, r.Workload.Pod, r.Workload.ServiceAccount)
	}
	fmt.Fprintf(tw, "Source:\t%s\n", r.Origin)
	if r.Identity != "" {
		fmt.Fprintf(tw, "Identity:\t%s\n", r.Identity)
	}
	if r.State != "" {
		fmt.Fprintf(tw, "State:\t%s\n", r.State)
	}
	if len(r.Secrets) > 0 {
		parts := make([]string, len(r.Secrets))
		for i, s := range r.Secrets {
			parts[i] = s.Name + " " + s.State
		}
		fmt.Fprintf(tw, "Secrets:\t%s\n", strings.Join(parts, ", "))
	}
	if m := r.MTLS; m != nil {
		if m.Mode == ModeUnknown {
			fmt.Fprintf(tw, "mTLS:\t%s: %s\n", m.Mode, m.From)
		} else {
			fmt.Fprintf(tw, "mTLS:\t%s, from %s\n", m.Mode, m.From)
		}
		for _, p := range m.Ports {
			fmt.Fprintf(tw, "\tport %d: %s, from %s\n", p.Port, p.Mode, p.From)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(r.Certificates) > 0 {
		if err := printCertificates(w, wide, r.Certificates); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}

	verdict := "OK"
	switch {
	case r.Verdict.Pending:
		verdict = "PENDING"
	case !r.Verdict.OK:
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "Verdict:  %s\n", verdict)
	for _, c := range r.Verdict.Checks {
		mark := "ok  "
		switch {
		case c.Skipped:
			mark = "skip"
		case r.Verdict.Pending && c.Name == CheckState:
			mark = "wait"
		case !c.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  %s: %s\n", mark, c.Name, c.Message)
	}
	return nil
}

// printCertificates is the table of certificates; with several roots (one
// per trust domain in a federation) it says which trust domain each stands
// for.
func printCertificates(w io.Writer, wide bool, certs []Certificate) error {
	roots := 0
	for _, c := range certs {
		if c.Role == RoleRoot {
			roots++
		}
	}
	tw := printers.GetNewTabWriter(w)
	cols := []string{"ROLE", "SUBJECT", "SPIFFE ID", "ISSUER"}
	if wide {
		cols = append(cols, "SERIAL", "KEY", "SIGNATURE", "NOT BEFORE")
	}
	cols = append(cols, "NOT AFTER", "TIME LEFT", "STATUS")
	if roots > 1 {
		cols = append(cols, "TRUST DOMAIN")
	}
	if wide {
		cols = append(cols, "SHA-256 FINGERPRINT")
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, c := range certs {
		row := []string{c.Role, orDash(c.Subject), orDash(c.SPIFFEID), orDash(c.Issuer)}
		if wide {
			row = append(row, c.Serial, c.KeyType, c.SignatureAlgorithm, c.NotBefore.Format(time.RFC3339))
		}
		row = append(row, c.NotAfter.Format(time.RFC3339), TimeLeft(c.TimeLeft), c.Status)
		if roots > 1 {
			row = append(row, trustDomainCell(c))
		}
		if wide {
			row = append(row, c.SHA256)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func trustDomainCell(c Certificate) string {
	switch {
	case c.Role != RoleRoot || c.TrustDomain == "":
		return "-"
	case c.TrustDomainFrom == TrustDomainFromSubject:
		return c.TrustDomain + " (from subject)"
	}
	return c.TrustDomain
}

// TimeLeft is a duration as kubectl writes ages; negative (expired) with a
// minus sign.
func TimeLeft(d time.Duration) string {
	if d < 0 {
		return "-" + duration.HumanDuration(-d)
	}
	return duration.HumanDuration(d)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
