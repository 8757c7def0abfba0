// Package cmd holds the cobra commands of kubectl mesh: one file per
// subcommand, each turning flags into an engine's config and calling it.
package cmd

import (
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/klog/v2"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

const rootLong = `kubectl mesh makes the everyday operations of an Istio service mesh safe,
verifiable one-liners: each command changes the cluster and then proves the
result (sidecars present, certificate chain valid, traffic really encrypted).`

// NewCmdMesh returns the root command bound to o.
func NewCmdMesh(o *options.Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubectl-mesh",
		Short: "Safe, verifiable one-liners for an Istio service mesh",
		Long:  rootLong,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl mesh",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return ValidateColor(o.Color)
		},
	}
	cmd.SetIn(o.In)
	cmd.SetOut(o.Out)
	cmd.SetErr(o.ErrOut)

	flags := cmd.PersistentFlags()
	o.ConfigFlags.AddFlags(flags)
	flags.StringVar(&o.Color, "color", o.Color, "Colorize output: auto (only on a terminal), always or never")
	addLogFlags(flags)

	registerFlagCompletions(cmd, o)

	cmd.AddCommand(NewCmdVersion(o))
	cmd.AddCommand(NewCmdCerts(o))
	cmd.AddCommand(NewCmdCompletion(o))
	cmd.AddCommand(NewCmdSplit(o))
	cmd.AddCommand(NewCmdExpose(o))
	cmd.AddCommand(NewCmdEnableInjection(o))
	cmd.AddCommand(NewCmdDisableInjection(o))
	cmd.AddCommand(NewCmdRestart(o))
	cmd.AddCommand(NewCmdStatus(o))
	cmd.AddCommand(NewCmdSniff(o))
	cmd.AddCommand(NewCmdVerify(o))
	registerCommandCompletions(cmd, o)
	return cmd
}

// Main runs the plugin with args and returns the process exit code.
func Main(streams genericiooptions.IOStreams, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := options.New(streams)
	cmd := NewCmdMesh(o)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(streams.ErrOut, "error: %v\n", err)
		var ec exitCoder
		if errors.As(err, &ec) {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

// exitCoder is an error that carries its own exit code (sniff's --expect,
// certs' verdict).
type exitCoder interface {
	error
	ExitCode() int
}

// addLogFlags adds kubectl's -v and --vmodule: client-go logs each request
// from -v=6 on, which is how one sees what a command asked the API server.
func addLogFlags(flags *pflag.FlagSet) {
	gofs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(gofs)
	for _, name := range []string{"v", "vmodule"} {
		f := pflag.PFlagFromGoFlag(gofs.Lookup(name))
		if name == "v" {
			f.Shorthand = "v"
		}
		flags.AddFlag(f)
	}
}
