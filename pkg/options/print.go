package options

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"
)

// ReportPrintFlags are kubectl's -o flags (genericclioptions.PrintFlags)
// for a report that is not a Kubernetes object (status, version, restart).
// json and yaml print the report as it always was (two-space JSON);
// jsonpath and go-template run cli-runtime's printers over the same JSON;
// the human formats (the table, "wide") are the command's own.
type ReportPrintFlags struct {
	*genericclioptions.PrintFlags
	human []string
}

// NewReportPrintFlags returns the flags; human are the formats the command
// prints itself besides "" (e.g. "wide").
func NewReportPrintFlags(human ...string) *ReportPrintFlags {
	f := genericclioptions.NewPrintFlags("")
	f.NamePrintFlags = nil // a report has no name
	return &ReportPrintFlags{PrintFlags: f, human: append([]string{""}, human...)}
}

// AddFlags adds -o and the template flags. -o completes the human
// formats, json and yaml (the template formats need an argument).
func (f *ReportPrintFlags) AddFlags(cmd *cobra.Command) {
	f.PrintFlags.AddFlags(cmd)
	cmd.Flag("output").Usage = fmt.Sprintf("Output format. One of: (%s).", strings.Join(f.AllowedFormats(), ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(append(slices.Clone(f.human[1:]), "json", "yaml"), cobra.ShellCompDirectiveNoFileComp))
}

// AllowedFormats are the human formats and cli-runtime's, but kyaml,
// whose printer wants a Kubernetes object.
func (f *ReportPrintFlags) AllowedFormats() []string {
	return append(slices.Clone(f.human[1:]), slices.DeleteFunc(f.PrintFlags.AllowedFormats(), func(s string) bool { return s == "kyaml" })...)
}

// Format is the -o value.
func (f *ReportPrintFlags) Format() string { return *f.OutputFormat }

// Human says the command prints its own table (-o "" or a human format).
func (f *ReportPrintFlags) Human() bool { return slices.Contains(f.human, f.Format()) }

// Validate checks -o and any template without touching the cluster, with
// kubectl's error for an unknown format.
func (f *ReportPrintFlags) Validate() error {
	if f.Human() {
		return nil
	}
	_, err := f.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) || f.Format() == "kyaml" {
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: %s", f.Format(), strings.Join(f.AllowedFormats(), ","))
	}
	return err
}

// Print writes report in the -o format (not a human one).
func (f *ReportPrintFlags) Print(w io.Writer, report any) error {
	switch f.Format() {
	case "json":
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(report)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	p, err := f.ToPrinter()
	if err != nil {
		return err
	}
	b, err := json.Marshal(report)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &obj.Object); err != nil {
		return err
	}
	return p.PrintObj(obj, w)
}
