package options

import (
	"fmt"

	"github.com/spf13/cobra"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// AddDryRunFlag adds kubectl's --dry-run flag (cmdutil.AddDryRunFlag):
// none, client or server, a bare --dry-run meaning client. usage replaces
// kubectl's text when not empty.
func AddDryRunFlag(cmd *cobra.Command, usage string) {
	cmdutil.AddDryRunFlag(cmd)
	if usage != "" {
		cmd.Flags().Lookup("dry-run").Usage = usage
	}
}

// DryRun reads --dry-run as kubectl does (cmdutil.GetDryRunStrategy), with
// the same values and errors. A bare --dry-run is client without kubectl's
// deprecation warning: for a read-mostly plugin it is the natural spelling.
// As in kubectl, the value needs '=': a bare --dry-run followed by an
// argument that is a strategy name is refused with that advice, rather than
// the argument being taken for the command's own.
func DryRun(cmd *cobra.Command, args []string) (cmdutil.DryRunStrategy, error) {
	if f := cmd.Flags().Lookup("dry-run"); f != nil && f.Changed && f.Value.String() == f.NoOptDefVal {
		for _, a := range args {
			switch a {
			case "none", "client", "server":
				return cmdutil.DryRunNone, fmt.Errorf("--dry-run takes its value with '=': use --dry-run=%s", a)
			}
		}
		return cmdutil.DryRunClient, nil
	}
	return cmdutil.GetDryRunStrategy(cmd)
}

// DryRunName is a strategy as the engines spell it: none, client or server.
func DryRunName(s cmdutil.DryRunStrategy) string {
	switch s {
	case cmdutil.DryRunClient:
		return "client"
	case cmdutil.DryRunServer:
		return "server"
	}
	return "none"
}
