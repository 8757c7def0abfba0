package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/verify"
)

// VerifyOptions is `kubectl mesh verify`.
type VerifyOptions struct {
	*options.Options

	AllNamespaces bool
	Selector      string
	Output        string
	StrictYAML    bool
	Concurrency   int
	RootNamespace string
	AdminPort     int
	NoCapture     bool

	// How to reach the nodes, as sniff does; the capture flags follow.
	NodeAccess
	Interface    string
	Filter       string
	Duration     time.Duration
	IncludeInfra bool

	namespaces []string
	clients    verify.Clients
	selector   labels.Selector
	podNS      string
	// certsClients and captureNodes replace the real transports in tests.
	certsClients *certs.Clients
	captureNodes verify.CaptureFunc
	// notes is stderr, shared by the parts that run at once.
	notes io.Writer
}

const verifyLong = `Prove a namespace (or the mesh) at once, from the API, the certificates and
the wire:

1. Inventory, from a fixed number of LIST calls: every workload with running
   pods, its mesh mode (sidecar, ambient, gateway, partial, none), its
   sidecar version against the control plane's, and its effective
   PeerAuthentication mode (workload, namespace, mesh-wide, port-level).
2. Identities: one pod of each meshed workload, read as 'kubectl mesh
   certs' reads it (port-forward to the proxy's admin port, or for an
   ambient pod to the admin port of the ztunnel on its node),
   --concurrency at a time: the chain verifies, the leaf is valid now, its
   SPIFFE ID is the pod's namespace and service account, and every workload
   shares one trust root (the odd ones are named).
3. The wire: one capture per node that runs selected pods, all nodes at
   once, for --duration, with sniff's transport (--via, --ssh-*). Each flow
   is mapped to workloads by pod IP (Service ClusterIPs are resolved to the
   workload they select, node addresses and pods outside the scope are
   named, the rest is "external") and aggregated into edges SOURCE →
   DESTINATION:PORT with protocol, verdict (sniff's policy), packets, bytes
   and evidence. Mesh infrastructure (probes, scrapes, DNS, istiod) is
   listed apart. A Service port of the scope that carried no packet is an
   UNPROVEN edge: no traffic is never taken for encryption.
4. STRICT readiness: for each meshed workload in PERMISSIVE mode, the
   plaintext clients seen on the wire that STRICT would cut off; when there
   are none, --strict-yaml prints the PeerAuthentication to apply.

Without SSH to the nodes or the right to exec into a capture pod, or
without pods/portforward, the parts that can run still run and the others
say what is missing.

Exit status: 0 everything proven; 2 a proof failed (plaintext between
meshed workloads, a workload not in the mesh, a bad certificate or one with
another root, sidecar version skew); 3 nothing failed but something is
unproven (an edge with no traffic, a node not captured, an identity not
read); 1 an error.`

// NewCmdVerify returns the verify command.
func NewCmdVerify(root *options.Options) *cobra.Command {
	return newCmdVerify(newVerifyOptions(root))
}

func newVerifyOptions(root *options.Options) *VerifyOptions {
	return &VerifyOptions{Options: root, NodeAccess: newNodeAccess(), Duration: 10 * time.Second, Concurrency: 4,
		RootNamespace: certs.DefaultRootNamespace, AdminPort: certs.DefaultAdminPort}
}

func newCmdVerify(o *VerifyOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify [NAMESPACE... | -A] [-l SELECTOR] [--duration 10s] [flags]",
		Short: "Prove a namespace's mesh: injection, identities and every edge on the wire",
		Long:  verifyLong,
		Example: `  # Prove the default namespace, capturing over SSH for 10 seconds
  kubectl mesh verify default --ssh-user root

  # CI: the exit status says proven (0), failed (2) or unproven (3)
  kubectl mesh verify shop --duration 30s -o json > verify.json

  # Draw the edges (green mTLS, red plaintext, grey unproven)
  kubectl mesh verify default -o dot | dot -Tsvg > mesh.svg

  # Switch to STRICT once no plaintext client is left
  kubectl mesh verify default --strict-yaml | kubectl apply -f -`,
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
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "Verify every namespace")
	f.StringVarP(&o.Selector, "selector", "l", "", "Only workloads whose pods match this label selector")
	f.StringVarP(&o.Output, "output", "o", "", "Output format: table, json, yaml, dot or mermaid")
	f.BoolVar(&o.StrictYAML, "strict-yaml", false, "Print (on stdout, the report going to stderr) the STRICT PeerAuthentication for the workloads no plaintext client needs")
	f.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "Certificate reads in flight at once")
	f.StringVar(&o.RootNamespace, "root-namespace", o.RootNamespace, "Istio's root namespace (meshConfig.rootNamespace), where mesh-wide PeerAuthentication lives")
	f.IntVar(&o.AdminPort, "proxy-admin-port", o.AdminPort, "Envoy admin port of the istio-proxy container")
	f.BoolVar(&o.NoCapture, "no-capture", false, "Skip the wire (the verdict is then at best unproven)")
	f.DurationVar(&o.Duration, "duration", o.Duration, "How long to capture on every node at once")
	o.NodeAccess.AddFlags(f)
	f.StringVar(&o.Interface, "interface", "", "Node interface to capture on (default: any when a node runs several selected pods)")
	f.StringVar(&o.Filter, "filter", "", "Extra tcpdump filter, and-ed with each node's pod addresses")
	f.BoolVar(&o.IncludeInfra, "include-infra", false, "Judge mesh infrastructure traffic (probes, scrapes, istiod, DNS) with the application's")
	return cmd
}

// Complete reads the namespaces and builds the clients; the certificate
// and capture transports connect only when used.
func (o *VerifyOptions) Complete(cmd *cobra.Command, args []string) error {
	ns, _, err := o.Namespace()
	if err != nil {
		return err
	}
	o.podNS = ns
	o.notes = verify.SyncWriter(o.ErrOut)
	o.namespaces = args
	if len(args) == 0 && !o.AllNamespaces {
		o.namespaces = []string{ns}
	}
	kube, err := o.KubeClient()
	if err != nil {
		return err
	}
	ist, err := o.IstioClient()
	if err != nil {
		return err
	}
	t := &certs.LazyKube{Config: o.RESTConfig, Client: kube}
	o.clients = verify.Clients{Kube: kube, Istio: ist, Certs: &certs.Clients{Forwarder: t, Executor: t, Kube: kube}, Capture: o.capture}
	if o.certsClients != nil {
		o.clients.Certs = o.certsClients
	}
	if o.captureNodes != nil {
		o.clients.Capture = o.captureNodes
	}
	if o.NoCapture {
		o.clients.Capture = nil
	}
	return nil
}

// Validate checks flags without touching the cluster.
func (o *VerifyOptions) Validate() error {
	if o.AllNamespaces && len(o.namespaces) > 0 {
		return errors.New("give NAMESPACE arguments or -A, not both")
	}
	valid := false
	for _, f := range verify.Formats {
		valid = valid || o.Output == f
	}
	if o.Output != "" && !valid {
		return fmt.Errorf("invalid --output %q: use %s", o.Output, strings.Join(verify.Formats, ", "))
	}
	if o.StrictYAML && o.Output != "" {
		return errors.New("--strict-yaml prints YAML on stdout: it cannot be combined with -o")
	}
	sel, err := labels.Parse(o.Selector)
	if err != nil {
		return fmt.Errorf("invalid --selector %q: %w", o.Selector, err)
	}
	o.selector = sel
	switch o.Via {
	case sniff.ViaAuto, sniff.ViaSSH, sniff.ViaPod:
	default:
		return fmt.Errorf("--via must be auto, ssh or pod, got %q", o.Via)
	}
	if o.Duration <= 0 {
		return errors.New("--duration must be positive: the capture on each node stops after it")
	}
	if o.Concurrency < 1 {
		return errors.New("--concurrency must be at least 1")
	}
	if o.Interface != "" {
		if err := sniff.ValidateInterface(o.Interface); err != nil {
			return fmt.Errorf("--interface: %w", err)
		}
	}
	return sniff.ValidateFilter(o.Filter)
}

// capture runs one capture per node with sniff's transport and flags.
func (o *VerifyOptions) capture(ctx context.Context, groups []sniff.NodeGroup) []sniff.NodeCapture {
	return sniff.CaptureNodes(ctx, sniff.GroupConfig{
		Transport: o.NodeAccess.Transport(nil, o.RESTConfig, o.podNS),
		Spec:      sniff.CaptureSpec{Interface: o.Interface, Filter: o.Filter, Duration: o.Duration},
		Analysis:  sniff.Config{IncludeInfra: o.IncludeInfra},
		Kube:      o.clients.Kube,
		Notes:     o.notes,
	}, groups)
}

// Run verifies, prints and turns the verdict into the exit status.
func (o *VerifyOptions) Run(ctx context.Context) error {
	cfg := verify.Config{
		Scope:         verify.Scope{AllNamespaces: o.AllNamespaces, Namespaces: o.namespaces, Selector: o.selector},
		RootNamespace: o.RootNamespace,
		Concurrency:   o.Concurrency,
		AdminPort:     o.AdminPort,
		Now:           o.Clock.Now(),
		Notes:         o.notes,
	}
	if o.NoCapture {
		cfg.WireSkipped = "--no-capture"
	}
	res, err := verify.Verify(ctx, o.clients, cfg)
	if err != nil {
		return err
	}
	var out io.Writer = o.Out
	if o.StrictYAML {
		out = o.ErrOut
	}
	if err := verify.Print(out, o.Output, res, o.Clock.Now()); err != nil {
		return err
	}
	if o.StrictYAML {
		y, err := verify.StrictYAML(res)
		if err != nil {
			return err
		}
		if y == "" {
			fmt.Fprintln(o.ErrOut, "no workload is ready for STRICT: see STRICT READINESS above")
		}
		fmt.Fprint(o.Out, y)
	}
	if res.ExitCode == verify.ExitProven {
		return nil
	}
	return &VerifyError{Code: res.ExitCode, Verdict: res.Verdict, Failed: len(res.Failures), Unproven: len(res.Unproven)}
}

// VerifyError is a verdict other than proven; its exit code is 2 or 3.
type VerifyError struct {
	Code             int
	Verdict          string
	Failed, Unproven int
}

func (e *VerifyError) Error() string {
	if e.Failed > 0 {
		return fmt.Sprintf("verify: %s, %d failed (see the Failed: lines or \"failures\")", e.Verdict, e.Failed)
	}
	return fmt.Sprintf("verify: %s, %d not proven (see the Unproven: lines or \"unproven\")", e.Verdict, e.Unproven)
}

// ExitCode tells Main the exit status.
func (e *VerifyError) ExitCode() int { return e.Code }
