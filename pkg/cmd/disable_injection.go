package cmd

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/kubectl/pkg/scheme"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// NewCmdDisableInjection returns the disable-injection command, the mirror
// of enable-injection (same options, opposite plan).
func NewCmdDisableInjection(root *options.Options) *cobra.Command {
	o := &InjectionLabelOptions{Options: root, PrintFlags: genericclioptions.NewPrintFlags("labeled").WithTypeSetter(scheme.Scheme)}
	cmd := &cobra.Command{
		Use:   "disable-injection [NAMESPACE...]",
		Short: "Remove namespaces from the mesh so new pods get no sidecar",
		Long: `Remove the labels that enrol namespaces in the mesh (istio-injection=enabled,
istio.io/rev, istio.io/dataplane-mode=ambient, istio.io/use-waypoint). When
the injector also injects unlabelled namespaces, sets istio-injection=disabled
instead. The waypoint Gateway the namespace used is deleted only when
enable-injection --waypoint created it; any other is kept, with a note.
Then lists the workloads whose pods still run a sidecar and need a restart.
Without a NAMESPACE, the current namespace (-n or the context's) is used.`,
		Example: `  # Stop injecting sidecars in namespace default
  kubectl mesh disable-injection default

  # Review first
  kubectl mesh disable-injection default --dry-run=server -o yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.PrintFlags.AddFlags(cmd)
	options.AddDryRunFlag(cmd, "")
	return cmd
}
