package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

const splitLong = `Show or set how traffic to a Service is split between its versions.

Versions are the values of the "version" label (--subset-label) on the pods
behind the Service. Weights are whole percentages that add up to 100, given
in one of three ways:

  50/50                 one weight per version, in version order (v1, v2, v10)
  v1=80,v2=20           by name; versions left out get no traffic
  --v1 80 --v2 20       the same, as one flag per version

The --SUBSET form accepts any flag this command does not define as a subset
name; a subset named like a flag of this command (say "route") has to be
given as route=50 instead.

With the Istio API (default), its VirtualService's default route (the
first without match conditions, or the one named with --route) gets the
weights, and the DestinationRule that applies to the Service gets the
subsets it needs. Existing objects are edited in place whatever their
names; every other field, route and annotation in them is kept. With --api
gateway an HTTPRoute whose parent is the Service sends traffic to one
Service per version (<service>-<version>; --create-services creates
missing ones).

Nothing in a route is dropped. Versions the weights leave out stay in the
route with weight 0. Destinations that are not versions of the Service
(another host, a subset that selects no version, another backend) keep
their weights, and the weights given divide only the share that went to
the Service: if a route sends 90 to backend and 10 to
legacy.other.svc.cluster.local, 50/50 makes it v1 45, v2 45, legacy 10.
split refuses (and changes nothing) when the Service has no share in the
route, or when a weight would round to 0 in it.

Istio applies one DestinationRule per host: for clients in the Service's
namespace, the most specific one there (exact host before wildcard, such
as *.<namespace>.svc.cluster.local), else the most specific one in the
root namespace (--root-namespace) exported to it. split never creates a
rule that would take the place of a wildcard or root-namespace rule and
so drop its trafficPolicy for the Service: it adds the subsets to a
wildcard rule in the Service's namespace that is exported at least as
widely as the VirtualService, and otherwise refuses and says what to do.

Every change records what it did in an annotation, so --undo takes it
back (and a second --undo redoes): the route is found by its name, or by
its match conditions and destinations when it has none, and undo refuses
when its destinations were edited since. Objects the change created (the
VirtualService or HTTPRoute, the DestinationRule, per-version Services)
are deleted again unless they were changed since or something still uses
them; subsets added to an existing DestinationRule stay. Without weights,
the current split is shown.

In Istio's ambient mode (namespace or pod labelled
istio.io/dataplane-mode=ambient, pods without a sidecar) only a waypoint
applies routes; without one Istio ignores them silently. There split
finds the waypoint as istiod does (istio.io/use-waypoint on the Service,
else on its namespace, a Gateway of that name serving service traffic
whose HBONE listener accepts the namespace) and refuses, writing nothing,
when none serves the Service or the Gateway may not be read; the error
names the waypoint and the command that creates it (kubectl mesh
enable-injection NAMESPACE --ambient --waypoint). --force writes the route
anyway, with a warning; --undo is never refused.`

const splitExample = `  # Show the current split of service backend
  kubectl mesh split backend

  # Half of the traffic to v1, half to v2
  kubectl mesh split backend 50/50
  kubectl mesh split backend --v1 50 --v2 50
  kubectl mesh split backend v1=50,v2=50

  # Change only the route named "canary" of the VirtualService
  kubectl mesh split backend v1=90,v2=10 --route canary

  # Review the objects before writing them
  kubectl mesh split backend 80/20 --dry-run=server -o yaml

  # Put the previous weights back
  kubectl mesh split backend --undo

  # Gateway API: HTTPRoute with the Service as parent, per-version Services
  kubectl mesh split backend 90/10 --api gateway --create-services

  # Ambient namespace before its waypoint is ready: write the route anyway
  kubectl mesh split backend 90/10 --force`

// SplitOptions is `kubectl mesh split`.
type SplitOptions struct {
	*options.Options

	PrintFlags     *genericclioptions.PrintFlags
	SubsetLabel    string
	Route          string
	AllowEmpty     bool
	Undo           bool
	API            string
	CreateServices bool
	DryRun         string
	RootNamespace  string
	Force          bool

	Namespace   string
	Service     string
	WeightsArg  string
	SubsetFlags []traffic.SubsetWeight
	Weights     *traffic.Weights
	clients     traffic.Clients
	printer     printers.ResourcePrinter
}

// NewCmdSplit returns the split command.
func NewCmdSplit(root *options.Options) *cobra.Command {
	o := &SplitOptions{
		Options:       root,
		PrintFlags:    genericclioptions.NewPrintFlags(""),
		SubsetLabel:   traffic.DefaultSubsetLabel,
		API:           string(traffic.APIIstio),
		DryRun:        string(traffic.DryRunNone),
		RootNamespace: traffic.DefaultRootNamespace,
	}
	cmd := &cobra.Command{
		Use:     "split SERVICE [WEIGHTS | --SUBSET WEIGHT ...]",
		Short:   "Show or set the traffic split between the versions of a Service",
		Long:    splitLong,
		Example: splitExample,
		// Subset weights are flags named after subsets (--v1 50), which
		// cannot be declared up front: the command parses its own flags,
		// taking every undeclared --NAME as a subset.
		DisableFlagParsing: true,
		// Cobra hands the unparsed words here too: parse them as RunE does,
		// so -n applies and only the SERVICE position is completed.
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			positional, _, err := o.parseArgs(cmd, args)
			if err != nil || len(positional) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return CompleteServices(root)(cmd, positional, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			positional, help, err := o.parseArgs(cmd, args)
			if err != nil || help {
				if help {
					return cmd.Help()
				}
				return err
			}
			if err := o.Complete(cmd, positional); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.SubsetLabel, "subset-label", o.SubsetLabel, "Pod label whose values name the versions (subsets)")
	f.StringVar(&o.Route, "route", o.Route, "Name of the HTTP route (Istio) or rule (Gateway API) to change; default: the first one without match conditions")
	f.BoolVar(&o.AllowEmpty, "allow-empty", o.AllowEmpty, "Allow weights for subsets that no pod backs yet")
	f.BoolVar(&o.Undo, "undo", o.Undo, "Restore the weights from before the last change")
	f.StringVar(&o.API, "api", o.API, "Routing API to write: istio (VirtualService and DestinationRule) or gateway (Gateway API HTTPRoute)")
	f.BoolVar(&o.CreateServices, "create-services", o.CreateServices, "With --api gateway, create missing per-version Services")
	f.BoolVar(&o.Force, "force", o.Force, "In ambient mode, write the route even when no waypoint is known to serve the Service (Istio ignores it until one does)")
	f.StringVar(&o.RootNamespace, "root-namespace", o.RootNamespace, "Istio's root namespace (meshConfig.rootNamespace), whose DestinationRules apply mesh-wide")
	options.AddDryRunFlag(cmd, `Must be "none", "server", or "client". If client strategy, only print the objects that would be sent; if server strategy, send them for validation without persisting them`)
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// parseArgs takes the subset flags out of args and parses the rest with
// the command's flag set, as cobra would have.
func (o *SplitOptions) parseArgs(cmd *cobra.Command, args []string) (positional []string, help bool, err error) {
	cmd.InheritedFlags() // merges the root's persistent flags into cmd.Flags()
	rest, subsets, err := takeSubsetFlags(cmd.Flags(), args)
	if err != nil {
		return nil, false, err
	}
	if err := cmd.Flags().Parse(rest); err != nil {
		return nil, false, err
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil, true, nil
	}
	// The root's PersistentPreRunE ran before these flags were parsed.
	if p := cmd.Root().PersistentPreRunE; p != nil {
		if err := p(cmd, cmd.Flags().Args()); err != nil {
			return nil, false, err
		}
	}
	o.SubsetFlags = subsets
	return cmd.Flags().Args(), false, nil
}

// takeSubsetFlags splits args into the flags fs declares (returned in
// order, followed by "--" and the positional arguments) and `--NAME N` /
// `--NAME=N` for every other long flag, which are subset weights.
// Positional arguments go after "--" so that `-5/105` reaches the weights
// parser rather than being read as a shorthand flag.
func takeSubsetFlags(fs *pflag.FlagSet, args []string) ([]string, []traffic.SubsetWeight, error) {
	var flags, positional []string
	var subsets []traffic.SubsetWeight
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			if f := fs.Lookup(name); f != nil {
				flags = append(flags, a)
				if !hasVal && f.NoOptDefVal == "" && i+1 < len(args) {
					i++
					flags = append(flags, args[i])
				}
				continue
			}
			if !hasVal {
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("--%s needs a weight, e.g. --%s 50 (if --%s is not a subset, it is an unknown flag; see --help)", name, name, name)
				}
				i++
				val = args[i]
			}
			sw, err := traffic.ParseWeightValue(name, val)
			if err != nil {
				return nil, nil, err
			}
			subsets = append(subsets, sw)
		case len(a) > 1 && a[0] == '-' && (a[1] < '0' || a[1] > '9'):
			flags = append(flags, a)
			if len(a) == 2 {
				if f := fs.ShorthandLookup(a[1:]); f != nil && f.NoOptDefVal == "" && i+1 < len(args) {
					i++
					flags = append(flags, args[i])
				}
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(append(flags, "--"), positional...), subsets, nil
}

// Complete reads the arguments and --dry-run and builds the clients.
func (o *SplitOptions) Complete(cmd *cobra.Command, args []string) error {
	dry, err := options.DryRun(cmd, args)
	if err != nil {
		return err
	}
	o.DryRun = options.DryRunName(dry)
	switch len(args) {
	case 0:
		return fmt.Errorf("name the service: kubectl mesh split SERVICE [WEIGHTS]")
	case 1:
	case 2:
		o.WeightsArg = args[1]
	default:
		return fmt.Errorf("too many arguments %q: give WEIGHTS as one argument, like 50/50 or v1=50,v2=50", strings.Join(args[1:], " "))
	}
	o.Service = args[0]
	ns, _, err := o.Options.Namespace()
	if err != nil {
		return err
	}
	o.Namespace = ns
	o.clients, err = trafficClients(o.Options)
	return err
}

// Validate checks the flags and parses the weights; it makes no API calls.
func (o *SplitOptions) Validate() error {
	switch traffic.API(o.API) {
	case traffic.APIIstio, traffic.APIGateway:
	default:
		return fmt.Errorf("invalid --api %q: use istio or gateway", o.API)
	}
	if o.CreateServices && o.API != string(traffic.APIGateway) {
		return fmt.Errorf("--create-services needs --api gateway: the Istio API routes to subsets, not per-version Services")
	}
	if o.SubsetLabel == "" {
		return fmt.Errorf("--subset-label must not be empty")
	}
	if o.WeightsArg != "" && len(o.SubsetFlags) > 0 {
		return fmt.Errorf("weights given twice (%q and --%s ...): use either WEIGHTS or --SUBSET flags", o.WeightsArg, o.SubsetFlags[0].Subset)
	}
	hasWeights := o.WeightsArg != "" || len(o.SubsetFlags) > 0
	if o.Undo && hasWeights {
		return fmt.Errorf("--undo restores the previous weights; do not give weights with it")
	}
	if !o.Undo && !hasWeights {
		if o.DryRun != string(traffic.DryRunNone) || *o.PrintFlags.OutputFormat != "" {
			return fmt.Errorf("--dry-run and --output apply when changing the split; give weights or --undo")
		}
		return nil
	}
	var err error
	switch {
	case o.WeightsArg != "":
		o.Weights, err = traffic.ParseWeights(o.WeightsArg)
	case len(o.SubsetFlags) > 0:
		o.Weights, err = traffic.NamedWeights(o.SubsetFlags)
	}
	if err != nil {
		return err
	}
	if *o.PrintFlags.OutputFormat != "" {
		if o.printer, err = o.PrintFlags.ToPrinter(); err != nil {
			return err
		}
	}
	return nil
}

// Run shows or changes the split.
func (o *SplitOptions) Run(ctx context.Context) error {
	res, err := traffic.Split(ctx, o.clients, traffic.SplitConfig{
		Namespace:      o.Namespace,
		Service:        o.Service,
		Weights:        o.Weights,
		Undo:           o.Undo,
		SubsetLabel:    o.SubsetLabel,
		Route:          o.Route,
		AllowEmpty:     o.AllowEmpty,
		CreateServices: o.CreateServices,
		Force:          o.Force,
		API:            traffic.API(o.API),
		DryRun:         traffic.DryRun(o.DryRun),
		RootNamespace:  o.RootNamespace,
	})
	if err != nil {
		return err
	}
	traffic.WriteChanges(o.ErrOut, res.Changes, traffic.DryRun(o.DryRun))
	if res.Merged {
		fmt.Fprintf(o.ErrOut, "objects changed while being updated; merged with the latest versions (%d attempts)\n", res.Attempts)
	}
	for _, n := range res.Notes {
		fmt.Fprintln(o.ErrOut, n)
	}
	if o.printer != nil {
		return traffic.WriteObjects(o.printer, o.Out, res.Objects)
	}
	return traffic.WriteSplit(o.Out, res.Rows)
}

// trafficClients gathers the clients the traffic engine needs (split, expose).
func trafficClients(o *options.Options) (traffic.Clients, error) {
	kube, err := o.KubeClient()
	if err != nil {
		return traffic.Clients{}, err
	}
	dyn, err := o.DynamicClient()
	if err != nil {
		return traffic.Clients{}, err
	}
	disc, err := o.DiscoveryClient()
	if err != nil {
		return traffic.Clients{}, err
	}
	return traffic.Clients{Kube: kube, Dynamic: dyn, Discovery: disc}, nil
}
