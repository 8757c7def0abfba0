package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// RestartOptions is `kubectl mesh restart`.
type RestartOptions struct {
	*options.Options
	AllNamespaces  bool
	Selector       string
	All            bool
	Concurrency    int
	Timeout        time.Duration
	DeleteBarePods bool
	Namespaces     []string
	PrintFlags     *options.ReportPrintFlags

	dryRun inject.DryRun
	sel    labels.Selector
	kube   kubernetes.Interface
}

// NewCmdRestart returns the restart command.
func NewCmdRestart(root *options.Options) *cobra.Command {
	o := &RestartOptions{Options: root, Concurrency: 10, Timeout: 5 * time.Minute, PrintFlags: options.NewReportPrintFlags("wide")}
	cmd := &cobra.Command{
		Use:   "restart [NAMESPACE...] [-A] [-l SELECTOR]",
		Short: "Restart the workloads whose pods lack the sidecar Istio would now inject",
		Long: `Restart Deployments, StatefulSets and DaemonSets whose pods differ from what
Istio's injector would do now: no sidecar where one is wanted, a sidecar from
another revision or version, or a sidecar where none is wanted. Restarts work
like kubectl rollout restart, run in parallel, are awaited, and every new pod
is checked for istio-proxy and readiness. Bare pods are only reported unless
--delete-bare-pods; paused Deployments are skipped.
Without a NAMESPACE or -A, the current namespace (-n or the context's) is used.
A namespace admin can run it in their namespace, as kubectl rollout restart:
what their rights keep from being checked is noted on stderr.`,
		Example: `  # Restart what needs it in namespace default, and prove the result
  kubectl mesh restart default

  # Everything that needs it, cluster-wide, 20 at a time
  kubectl mesh restart -A --concurrency 20

  # What would be restarted, and why
  kubectl mesh restart default --dry-run

  # Also show how long each rollout took, from restart to verified pods
  kubectl mesh restart default -o wide`,
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
	f := cmd.Flags()
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Restart in all namespaces")
	f.StringVarP(&o.Selector, "selector", "l", "", "Only workloads whose labels match this selector (e.g. app=frontend)")
	f.BoolVar(&o.All, "all", false, "Restart every selected workload, not only those that need it")
	f.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "How many workloads to restart at the same time")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "How long to wait for each workload's rollout")
	o.PrintFlags.AddFlags(cmd)
	cmd.Flag("output").Usage = `Output format: "" or "wide" (adds how long each rollout took, from the restart to verified pods), or json, yaml, jsonpath or go-template over {"results": [...]}`
	f.BoolVar(&o.DeleteBarePods, "delete-bare-pods", false, "Delete pods that have no controller (nothing recreates them)")
	options.AddDryRunFlag(cmd, `Must be "none", "server", or "client". Client: list what would be restarted and why. Server: send the changes as a server-side dry run.`)
	return cmd
}

// Complete resolves namespaces, the dry-run strategy and the client.
func (o *RestartOptions) Complete(cmd *cobra.Command, args []string) error {
	dry, err := options.DryRun(cmd, args)
	if err != nil {
		return err
	}
	o.dryRun = inject.DryRun(options.DryRunName(dry))
	o.Namespaces = args
	if len(args) == 0 && !o.AllNamespaces {
		ns, _, err := o.Namespace()
		if err != nil {
			return err
		}
		o.Namespaces = []string{ns}
	}
	o.kube, err = bulkKubeClient(o.Options)
	return err
}

// Validate checks flags without touching the cluster.
func (o *RestartOptions) Validate() error {
	if o.AllNamespaces && len(o.Namespaces) > 0 {
		return fmt.Errorf("give either NAMESPACE arguments or -A, not both")
	}
	if o.Concurrency < 1 {
		return fmt.Errorf("--concurrency must be at least 1, got %d", o.Concurrency)
	}
	if err := o.PrintFlags.Validate(); err != nil {
		return err
	}
	if !o.PrintFlags.Human() && o.dryRun == inject.DryRunClient {
		return fmt.Errorf("--output %s shows restart results; --dry-run=client prints the plan as a table: drop one of them", o.PrintFlags.Format())
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %s", o.Timeout)
	}
	sel, err := labels.Parse(o.Selector)
	if err != nil {
		return fmt.Errorf("invalid --selector %q: %w", o.Selector, err)
	}
	o.sel = sel
	return nil
}

// Run selects, restarts, waits and reports. Any failed workload makes the
// command fail after the summary is printed.
func (o *RestartOptions) Run(ctx context.Context) error {
	inv, err := controlplane.Discover(ctx, o.kube)
	if err != nil {
		return err
	}
	writeUnchecked(o.ErrOut, inv.Unchecked)
	if !inv.HasInjector() && !inv.WebhooksUnknown {
		fmt.Fprintln(o.ErrOut, "note: no Istio sidecar injector found; restarted pods will get no sidecar")
	}
	rules := inject.NewRules(inv)
	snap, err := inject.Collect(ctx, o.kube, inject.Scope{AllNamespaces: o.AllNamespaces, Namespaces: o.Namespaces})
	if err != nil {
		return err
	}
	cfg := inject.RestartConfig{Selector: o.sel, All: o.All, Concurrency: o.Concurrency, Timeout: o.Timeout,
		DryRun: o.dryRun, DeleteBarePods: o.DeleteBarePods, AllNamespaces: o.AllNamespaces}
	targets := rules.Select(snap, cfg)
	if len(targets) == 0 {
		fmt.Fprintln(o.ErrOut, "nothing to restart: every pod already matches what Istio injects now (use --all to restart anyway)")
		return nil
	}
	if o.dryRun == inject.DryRunClient {
		return inject.WritePlanTable(o.Out, targets)
	}
	progress := inject.NewProgress(o.ErrOut, terminalSize(o.ErrOut))
	results := inject.Restart(ctx, o.kube, targets, cfg, progress)
	if !o.PrintFlags.Human() {
		if err := o.PrintFlags.Print(o.Out, struct {
			Results []inject.Result `json:"results"`
		}{results}); err != nil {
			return err
		}
	} else if err := inject.WriteRestartTable(o.Out, results, o.PrintFlags.Format() == "wide"); err != nil {
		return err
	}
	return inject.Failures(results)
}

// bulkKubeClient is the Kubernetes client for commands that issue many
// requests at once (parallel restarts, cluster-wide status): client-go's
// default 5 QPS would serialise them, and protobuf decodes large lists
// several times faster than JSON. Test fakes have no REST config and are
// used as they are.
func bulkKubeClient(o *options.Options) (kubernetes.Interface, error) {
	kube, err := o.KubeClient()
	if err != nil {
		return nil, err
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return kube, nil
	}
	cfg.QPS, cfg.Burst = 200, 400
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return kubernetes.NewForConfig(cfg)
}
