package options

import (
	"bytes"
	"testing"

	"github.com/spf13/cobra"
)

func TestReportPrintFlags(t *testing.T) {
	report := struct {
		Name  string   `json:"name"`
		Items []string `json:"items"`
	}{Name: "shop", Items: []string{"a", "b"}}
	tests := []struct {
		args  []string
		human bool
		out   string
		err   string
	}{
		{args: nil, human: true},
		{args: []string{"-o", "wide"}, human: true},
		{args: []string{"-o", "json"}, out: "{\n  \"name\": \"shop\",\n  \"items\": [\n    \"a\",\n    \"b\"\n  ]\n}\n"},
		{args: []string{"-o", "yaml"}, out: "items:\n- a\n- b\nname: shop\n"},
		{args: []string{"-o", "jsonpath={.items[1]}"}, out: "b"},
		{args: []string{"-o", "go-template={{.name}}"}, out: "shop"},
		{args: []string{"-o", "name"}, err: `unable to match a printer suitable for the output format "name", allowed formats are: wide,json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`},
		{args: []string{"-o", "jsonpath={.items["}, err: `error parsing jsonpath {.items[, unterminated array`},
	}
	for _, tt := range tests {
		f := NewReportPrintFlags("wide")
		cmd := &cobra.Command{Use: "x"}
		f.AddFlags(cmd)
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		err := f.Validate()
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%v: err %v, want %s", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || f.Human() != tt.human {
			t.Errorf("%v: err %v, human %v", tt.args, err, f.Human())
			continue
		}
		if tt.human {
			continue
		}
		var out bytes.Buffer
		if err := f.Print(&out, report); err != nil || out.String() != tt.out {
			t.Errorf("%v: %q, %v; want %q", tt.args, out.String(), err, tt.out)
		}
	}
}
