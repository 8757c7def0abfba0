package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

const exposeLong = `Expose a Service through the mesh's ingress gateway and print its URL.

With the Istio API (default) this creates the Gateway <service>-gateway
(HTTP on port 80 of the gateway pods chosen by --gateway-selector) and binds
a VirtualService to it: a new <service>-ingress, or, when a VirtualService
already routes the Service inside the mesh, that one, keeping its routes
(it stays bound to the mesh too; it needs --host, since Istio forbids host *
on mesh routes). With --api gateway it creates a Gateway API Gateway
(gatewayClassName istio) and an HTTPRoute.

Existing objects are only added to, never rewritten, so running expose again
is safe. The URL comes from the ingress gateway Service: its load balancer
address, else a NodePort on a node; only the URL goes to stdout, so
  curl "$(kubectl mesh expose frontend)"
works.`

const exposeExample = `  # Expose service frontend on any host name
  kubectl mesh expose frontend

  # Only for shop.example.com, under /shop
  kubectl mesh expose frontend --host shop.example.com --path-prefix /shop

  # Review first
  kubectl mesh expose frontend --dry-run=client -o yaml

  # Gateway API instead of Istio's own API
  kubectl mesh expose frontend --api gateway`

// ExposeOptions is `kubectl mesh expose`.
type ExposeOptions struct {
	*options.Options

	PrintFlags      *genericclioptions.PrintFlags
	Port            int32
	Host            string
	PathPrefix      string
	GatewaySelector string
	API             string
	DryRun          string

	Namespace string
	Service   string
	selector  map[string]string
	clients   traffic.Clients
	printer   printers.ResourcePrinter
}

// NewCmdExpose returns the expose command.
func NewCmdExpose(root *options.Options) *cobra.Command {
	o := &ExposeOptions{
		Options:         root,
		PrintFlags:      genericclioptions.NewPrintFlags(""),
		Host:            "*",
		PathPrefix:      "/",
		GatewaySelector: "istio=ingressgateway",
		API:             string(traffic.APIIstio),
		DryRun:          string(traffic.DryRunNone),
	}
	cmd := &cobra.Command{
		Use:     "expose SERVICE",
		Short:   "Expose a Service through the ingress gateway and print its URL",
		Long:    exposeLong,
		Example: exposeExample,
		Args:    cobra.ExactArgs(1),
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
	f.Int32Var(&o.Port, "port", o.Port, "Service port to send traffic to (default: the Service's only port)")
	f.StringVar(&o.Host, "host", o.Host, "Host name clients use; * accepts any")
	f.StringVar(&o.PathPrefix, "path-prefix", o.PathPrefix, "Only requests under this path go to the Service")
	f.StringVar(&o.GatewaySelector, "gateway-selector", o.GatewaySelector, "Labels of the ingress gateway pods (Istio API)")
	f.StringVar(&o.API, "api", o.API, "Routing API to write: istio (Gateway and VirtualService) or gateway (Gateway API Gateway and HTTPRoute)")
	options.AddDryRunFlag(cmd, `Must be "none", "server", or "client". If client strategy, only print the objects that would be sent; if server strategy, send them for validation without persisting them`)
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete reads the arguments and --dry-run and builds the clients.
func (o *ExposeOptions) Complete(cmd *cobra.Command, args []string) error {
	dry, err := options.DryRun(cmd, args)
	if err != nil {
		return err
	}
	o.DryRun = options.DryRunName(dry)
	o.Service = args[0]
	ns, _, err := o.Options.Namespace()
	if err != nil {
		return err
	}
	o.Namespace = ns
	o.clients, err = trafficClients(o.Options)
	return err
}

// Validate checks the flags; it makes no API calls.
func (o *ExposeOptions) Validate() error {
	switch traffic.API(o.API) {
	case traffic.APIIstio, traffic.APIGateway:
	default:
		return fmt.Errorf("invalid --api %q: use istio or gateway", o.API)
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("invalid --port %d: use a port number of the Service (1-65535)", o.Port)
	}
	if err := traffic.ValidateHost(o.Host); err != nil {
		return err
	}
	if !strings.HasPrefix(o.PathPrefix, "/") {
		return fmt.Errorf("invalid --path-prefix %q: it must start with /", o.PathPrefix)
	}
	sel, err := labels.ConvertSelectorToLabelsMap(o.GatewaySelector)
	if err != nil || len(sel) == 0 {
		return fmt.Errorf("invalid --gateway-selector %q: use labels like istio=ingressgateway", o.GatewaySelector)
	}
	o.selector = sel
	if *o.PrintFlags.OutputFormat != "" {
		if o.printer, err = o.PrintFlags.ToPrinter(); err != nil {
			return err
		}
	}
	return nil
}

// Run exposes the Service.
func (o *ExposeOptions) Run(ctx context.Context) error {
	res, err := traffic.Expose(ctx, o.clients, traffic.ExposeConfig{
		Namespace:       o.Namespace,
		Service:         o.Service,
		Port:            o.Port,
		Host:            o.Host,
		PathPrefix:      o.PathPrefix,
		GatewaySelector: o.selector,
		API:             traffic.API(o.API),
		DryRun:          traffic.DryRun(o.DryRun),
	})
	if err != nil {
		return err
	}
	traffic.WriteChanges(o.ErrOut, res.Changes, traffic.DryRun(o.DryRun))
	for _, n := range res.Notes {
		fmt.Fprintln(o.ErrOut, n)
	}
	if o.printer != nil {
		return traffic.WriteObjects(o.printer, o.Out, res.Objects)
	}
	if res.URL != "" {
		fmt.Fprintln(o.Out, res.URL)
	}
	return nil
}
