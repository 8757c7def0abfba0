package options

import (
	"testing"

	"github.com/spf13/cobra"
)

func TestDryRun(t *testing.T) {
	tests := []struct {
		args []string
		want string
		err  string
	}{
		{args: nil, want: "none"},
		{args: []string{"--dry-run"}, want: "client"},
		{args: []string{"--dry-run=client"}, want: "client"},
		{args: []string{"--dry-run=server"}, want: "server"},
		{args: []string{"--dry-run=none"}, want: "none"},
		{args: []string{"--dry-run", "server"}, err: "--dry-run takes its value with '=': use --dry-run=server"}, // as kubectl, the value needs "="; said, not taken for an argument
		{args: []string{"--dry-run", "backend"}, want: "client"},
		{args: []string{"--dry-run=true"}, want: "client"},
		{args: []string{"--dry-run=false"}, want: "none"},
		{args: []string{"--dry-run=maybe"}, err: `Invalid dry-run value (maybe). Must be "none", "server", or "client".`},
	}
	for _, tt := range tests {
		cmd := &cobra.Command{Use: "x", Run: func(*cobra.Command, []string) {}}
		AddDryRunFlag(cmd, "")
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		s, err := DryRun(cmd, cmd.Flags().Args())
		got := DryRunName(s)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%v: err %v, want %s", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: %s, %v; want %s", tt.args, got, err, tt.want)
		}
	}
}
