package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/kubectl/pkg/scheme"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// InjectionLabelOptions is `kubectl mesh enable-injection` and
// `disable-injection`: they differ only in the label change they plan.
type InjectionLabelOptions struct {
	*options.Options
	Enable     bool
	Request    inject.EnableRequest
	DryRun     cmdutil.DryRunStrategy
	PrintFlags *genericclioptions.PrintFlags
	Namespaces []string
	// Timeout bounds the wait for a waypoint's Deployment.
	Timeout time.Duration

	kube      kubernetes.Interface
	dyn       dynamic.Interface
	discovery discovery.DiscoveryInterface
	printed   int
}

// NewCmdEnableInjection returns the enable-injection command.
func NewCmdEnableInjection(root *options.Options) *cobra.Command {
	o := &InjectionLabelOptions{Options: root, Enable: true, Timeout: 60 * time.Second, PrintFlags: genericclioptions.NewPrintFlags("labeled").WithTypeSetter(scheme.Scheme)}
	cmd := &cobra.Command{
		Use:   "enable-injection [NAMESPACE...]",
		Short: "Label namespaces so new pods get an Istio sidecar (or join ambient)",
		Long: `Label namespaces for the installed Istio control plane: istio-injection=enabled
for the default revision, istio.io/rev=REV for a revision or tag, or
istio.io/dataplane-mode=ambient. Labels that would override the choice are
removed, with a note. Then lists the workloads whose pods need a restart.
Without a NAMESPACE, the current namespace (-n or the context's) is used.
Labelling needs "patch" on the Namespace object, which is cluster-scoped: the
admin role bound in a namespace does not give it. Every namespace is checked
with a server-side dry run first, so a refusal changes nothing.

With --ambient, --waypoint[=NAME] also gives the namespaces a waypoint for
L7 routing: a Gateway API Gateway NAME (default "waypoint") of class
istio-waypoint with one HBONE listener on 15008, labelled
istio.io/waypoint-for=service and annotated as created by kubectl mesh, and
the namespace label istio.io/use-waypoint=NAME. An existing istio-waypoint
Gateway of that name is used as it is. The Gateway is created before the
label, and deleted again if labelling fails. Then waits up to --timeout for
the Deployment istiod deploys for it to be available, or says what is
missing. Creating the Gateway needs "create" on
gateways.gateway.networking.k8s.io in the namespace.`,
		Example: `  # Sidecars from the default revision in namespace default
  kubectl mesh enable-injection default

  # Sidecars from revision (or tag) canary, reviewing the change first
  kubectl mesh enable-injection shop --revision canary --dry-run=server -o yaml

  # Ambient mode, no sidecars
  kubectl mesh enable-injection shop --ambient

  # Ambient mode with a waypoint named "waypoint", reviewing it first
  kubectl mesh enable-injection shop --ambient --waypoint --dry-run=client -o yaml
  kubectl mesh enable-injection shop --ambient --waypoint=shop-waypoint`,
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
	cmd.Flags().StringVar(&o.Request.Revision, "revision", "", "Istio revision or revision tag to inject (default: the default revision)")
	cmd.Flags().BoolVar(&o.Request.Ambient, "ambient", false, "Enrol the namespaces in ambient mode (istio.io/dataplane-mode=ambient) instead of sidecars")
	cmd.Flags().StringVar(&o.Request.Waypoint, "waypoint", "", "With --ambient: create a waypoint Gateway NAME and label the namespaces istio.io/use-waypoint=NAME (--waypoint alone: \""+inject.DefaultWaypointName+"\")")
	cmd.Flags().Lookup("waypoint").NoOptDefVal = inject.DefaultWaypointName
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "With --waypoint: how long to wait for the waypoint's Deployment to be available")
	o.PrintFlags.AddFlags(cmd)
	options.AddDryRunFlag(cmd, "")
	return cmd
}

// Complete reads the dry-run flag, the namespaces and builds the client.
func (o *InjectionLabelOptions) Complete(cmd *cobra.Command, args []string) error {
	var err error
	if o.DryRun, err = options.DryRun(cmd, args); err != nil {
		return err
	}
	o.Namespaces = args
	if len(o.Namespaces) == 0 {
		ns, _, err := o.Namespace()
		if err != nil {
			return err
		}
		o.Namespaces = []string{ns}
	}
	if o.kube, err = o.KubeClient(); err != nil {
		return err
	}
	if o.Enable && o.Request.Waypoint == "" {
		return nil
	}
	// Waypoints are Gateway API objects.
	if o.dyn, err = o.DynamicClient(); err != nil {
		return err
	}
	o.discovery, err = o.DiscoveryClient()
	return err
}

// Validate checks flags without touching the cluster.
func (o *InjectionLabelOptions) Validate() error {
	if o.Request.Ambient && o.Request.Revision != "" {
		return fmt.Errorf("--ambient and --revision cannot be combined: ambient namespaces are not injected")
	}
	if o.Request.Waypoint != "" {
		if !o.Request.Ambient {
			return inject.ErrWaypointNeedsAmbient
		}
		if err := inject.ValidateWaypointName(o.Request.Waypoint); err != nil {
			return err
		}
		if o.Timeout <= 0 {
			return fmt.Errorf("--timeout must be positive, got %s", o.Timeout)
		}
	}
	seen := map[string]bool{}
	for _, ns := range o.Namespaces {
		if seen[ns] {
			return fmt.Errorf("namespace %q given twice", ns)
		}
		seen[ns] = true
	}
	return nil
}

type plannedLabels struct {
	ns     *corev1.Namespace
	change inject.LabelChange
	// waypoint is enable-injection's waypoint (nil without --waypoint);
	// removal is what disable-injection does with the namespace's one.
	waypoint *inject.WaypointPlan
	removal  inject.WaypointRemoval
}

// Run plans every namespace before changing any, so a bad namespace,
// revision, waypoint or missing permission leaves the cluster untouched.
func (o *InjectionLabelOptions) Run(ctx context.Context) error {
	inv, err := controlplane.Discover(ctx, o.kube)
	if err != nil {
		return err
	}
	writeUnchecked(o.ErrOut, inv.Unchecked)
	rules := inject.NewRules(inv)
	snap, err := inject.Collect(ctx, o.kube, inject.Scope{Namespaces: o.Namespaces})
	if err != nil {
		return err
	}
	var plans []plannedLabels
	for _, name := range o.Namespaces {
		ns := snap.Namespace(name)
		var c inject.LabelChange
		if o.Enable {
			if c, err = rules.PlanEnable(name, ns.Labels, o.Request); err != nil {
				return err
			}
		} else {
			c = rules.PlanDisable(name, ns.Labels)
		}
		plans = append(plans, plannedLabels{ns: ns, change: c})
	}
	if err := o.planWaypoints(ctx, plans); err != nil {
		return o.withUser(ctx, err)
	}
	if o.DryRun == cmdutil.DryRunNone {
		// A server-side dry run of every change first: RBAC or admission
		// refusals then stop us before the first real change.
		for _, p := range plans {
			if p.waypoint != nil && p.waypoint.Create {
				if _, err := inject.CreateWaypoint(ctx, o.dyn, *p.waypoint, true); err != nil {
					return o.withUser(ctx, err)
				}
			}
			if _, err := o.patch(ctx, p, true); err != nil {
				return err
			}
			if d := p.removal.Delete; d != nil {
				if err := inject.DeleteWaypoint(ctx, o.dyn, d.GetNamespace(), d.GetName(), true); err != nil {
					return o.withUser(ctx, err)
				}
			}
		}
	}
	unchanged, op := "already enabled", "labeled"
	if !o.Enable {
		unchanged = "already disabled"
	}
	suffix := ""
	switch o.DryRun {
	case cmdutil.DryRunClient:
		suffix = " (dry run)"
	case cmdutil.DryRunServer:
		suffix = " (server dry run)"
	}
	op += suffix
	for _, p := range plans {
		for _, n := range append(p.change.Notes, p.removal.Notes...) {
			fmt.Fprintf(o.ErrOut, "note: namespace/%s: %s\n", p.ns.Name, n)
		}
		created, err := o.applyWaypoint(ctx, p, suffix)
		if err != nil {
			return err
		}
		result, operation := p.ns, unchanged
		if !p.change.Empty() {
			operation = op
			switch o.DryRun {
			case cmdutil.DryRunClient:
				result = p.ns.DeepCopy()
				result.Labels = p.change.Apply(p.ns.Labels)
			default:
				if result, err = o.patch(ctx, p, o.DryRun == cmdutil.DryRunServer); err != nil {
					return o.undoWaypoint(ctx, p, created, err)
				}
			}
		}
		if err := o.print(result, operation); err != nil {
			return err
		}
		if d := p.removal.Delete; d != nil {
			if o.DryRun != cmdutil.DryRunClient {
				if err := inject.DeleteWaypoint(ctx, o.dyn, d.GetNamespace(), d.GetName(), o.DryRun == cmdutil.DryRunServer); err != nil {
					return o.withUser(ctx, err)
				}
			}
			if err := o.print(d, "deleted"+suffix); err != nil {
				return err
			}
		}
		need := rules.NeedRestart(snap, p.ns.Name, p.change.Apply(p.ns.Labels))
		fmt.Fprintln(o.ErrOut, inject.NeedRestartSummary(p.ns.Name, need))
	}
	if o.DryRun != cmdutil.DryRunNone {
		return nil
	}
	return o.waitWaypoints(ctx, plans)
}

func (o *InjectionLabelOptions) patch(ctx context.Context, p plannedLabels, dryRun bool) (*corev1.Namespace, error) {
	if p.change.Empty() {
		return p.ns, nil
	}
	body, err := json.Marshal(p.change.MergePatch())
	if err != nil {
		return nil, err
	}
	opts := metav1.PatchOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	ns, err := o.kube.CoreV1().Namespaces().Patch(ctx, p.ns.Name, types.MergePatchType, body, opts)
	if apierrors.IsForbidden(err) {
		return nil, &inject.LabelForbiddenError{Namespace: p.ns.Name, User: o.user(ctx), Err: err}
	} else if err != nil {
		return nil, fmt.Errorf("patching namespace %s: %w", p.ns.Name, err)
	}
	return ns, nil
}

// user is who the API server takes us for ("" when it will not say).
func (o *InjectionLabelOptions) user(ctx context.Context) string {
	r, err := o.kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return ""
	}
	return r.Status.UserInfo.Username
}

func (o *InjectionLabelOptions) print(obj runtime.Object, operation string) error {
	o.PrintFlags.NamePrintFlags.Operation = operation
	printer, err := o.PrintFlags.ToPrinter()
	if err != nil {
		return err
	}
	// Several objects in YAML are one stream of documents.
	if f := o.PrintFlags.OutputFormat; f != nil && *f == "yaml" && o.printed > 0 {
		fmt.Fprintln(o.Out, "---")
	}
	o.printed++
	return printer.PrintObj(obj.DeepCopyObject(), o.Out)
}
