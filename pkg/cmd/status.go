package cmd

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// StatusOptions is `kubectl mesh status`.
type StatusOptions struct {
	*options.Options
	AllNamespaces bool
	PrintFlags    *options.ReportPrintFlags
	Namespaces    []string
	RootNamespace string

	kube    kubernetes.Interface
	istio   istioclient.Interface
	dynamic dynamic.Interface
}

// NewCmdStatus returns the status command.
func NewCmdStatus(root *options.Options) *cobra.Command {
	o := &StatusOptions{Options: root, RootNamespace: mesh.DefaultRootNamespace, PrintFlags: options.NewReportPrintFlags("wide")}
	cmd := &cobra.Command{
		Use:   "status [-n NAMESPACE | -A] [-o wide|json|yaml]",
		Short: "Show the control plane and each namespace's injection, sidecars and mTLS",
		Long: `Show the Istio control plane (revisions, tags, versions, injector) and, per
namespace: injection mode (sidecar, revision X, ambient, off, conflicting
labels), workloads whose pods all have a sidecar, pods needing a restart,
sidecar versions and skew, and the effective namespace-wide mTLS mode
(PeerAuthentications resolved as istiod does; the mesh-wide policy is read
from meshConfig's rootNamespace, else --root-namespace).

Namespaces in ambient mode (labelled istio.io/dataplane-mode=ambient, or
with pods so labelled, or naming a waypoint with istio.io/use-waypoint) get
a second table: how many pods ztunnel captures, pods opted out with
istio.io/dataplane-mode=none, pods with a sidecar (Istio does not redirect
those to ztunnel: the sidecar takes precedence), the waypoint the namespace
uses and whether that Gateway exists, Services that name their own
waypoint, and ambient pods on a node with no ready ztunnel pod (app=ztunnel).
-o wide adds a row per pod of those namespaces; -o json has them all.

Reads the cluster with a fixed number of LIST calls, however many namespaces.
A namespace admin can run it in their namespace: cluster-wide reads they may
not make (injector webhooks, istiod Deployments, injector ConfigMaps,
ztunnel DaemonSets and pods, waypoint Gateways) are skipped with a note on
stderr naming the permission that would allow them, and injection is judged
by Istio's standard webhook selectors.`,
		Example: `  # The current namespace
  kubectl mesh status

  # Every namespace, with the workloads that need a restart
  kubectl mesh status -A -o wide`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Show all namespaces")
	o.PrintFlags.AddFlags(cmd)
	cmd.Flags().StringVar(&o.RootNamespace, "root-namespace", o.RootNamespace, "Istio's root namespace, where the mesh-wide PeerAuthentication lives, when meshConfig.rootNamespace does not say")
	return cmd
}

// Complete resolves the namespace and builds the clients.
func (o *StatusOptions) Complete() error {
	if !o.AllNamespaces {
		ns, _, err := o.Namespace()
		if err != nil {
			return err
		}
		o.Namespaces = []string{ns}
	}
	var err error
	if o.kube, err = bulkKubeClient(o.Options); err != nil {
		return err
	}
	if o.istio, err = o.IstioClient(); err != nil {
		return err
	}
	o.dynamic, err = o.DynamicClient()
	return err
}

// Validate checks flags without touching the cluster.
func (o *StatusOptions) Validate() error {
	return o.PrintFlags.Validate()
}

// Run builds and prints the report.
func (o *StatusOptions) Run(ctx context.Context) error {
	rep, err := inject.BuildStatusWithGateways(ctx, o.kube, o.istio, o.dynamic, inject.Scope{AllNamespaces: o.AllNamespaces, Namespaces: o.Namespaces, RootNamespace: o.RootNamespace})
	if err != nil {
		return err
	}
	writeUnchecked(o.ErrOut, rep.Unchecked)
	if !o.PrintFlags.Human() {
		return o.PrintFlags.Print(o.Out, rep)
	}
	wide := o.PrintFlags.Format() == "wide"
	if err := inject.WriteStatus(o.Out, rep, wide); err != nil {
		return err
	}
	return inject.WriteAmbient(o.Out, rep, wide)
}

// writeUnchecked notes, on stderr, what the user's permissions kept from
// being checked and which permission would let it be.
func writeUnchecked(w io.Writer, unchecked []controlplane.Unchecked) {
	for _, u := range unchecked {
		fmt.Fprintf(w, "note: %s\n", u)
	}
}
