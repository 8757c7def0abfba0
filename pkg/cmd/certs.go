package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/target"
)

// certsVerdictExitCode is the exit status when certificates were read but
// failed the verdict (or --compare found no shared trust), so scripts can
// tell it from "could not read them" (1).
const certsVerdictExitCode = 2

// CertsOptions is `kubectl mesh certs`.
type CertsOptions struct {
	*options.Options
	Selector      string
	Source        string
	Files         []string
	AdminPort     int
	PrintFlags    *options.ReportPrintFlags
	Compare       string
	RootNamespace string

	args      []string
	namespace string
	kube      kubernetes.Interface
	clients   certs.Clients
}

// NewCmdCerts returns the certs command.
func NewCmdCerts(root *options.Options) *cobra.Command {
	o := &CertsOptions{Options: root, Source: string(certs.SourceAuto), AdminPort: certs.DefaultAdminPort, RootNamespace: certs.DefaultRootNamespace,
		PrintFlags: options.NewReportPrintFlags("table", "wide", "pem")}
	cmd := &cobra.Command{
		Use:   "certs (POD | TYPE/NAME | -l SELECTOR | --file PATH) [--compare OTHER]",
		Short: "Show a workload's mTLS certificates and verify chain, validity and identity",
		Long: `Show the certificates an Istio sidecar uses for mTLS and verify them: the chain
verifies to the trust root, every certificate is valid now, and the leaf's
SPIFFE ID is the pod's namespace and service account. The effective
PeerAuthentication mode (mesh-wide, namespace, workload, port-level) is shown
beside them.

Certificates are read, in order, from Envoy's admin API (config_dump through a
port-forward to the proxy's admin port), or from the files Istio up to 1.4
mounted at /etc/certs in istio-proxy; --source forces one.

A pod in ambient mode (no sidecar; its namespace or itself labelled
istio.io/dataplane-mode=ambient) has its workload certificate in the
ztunnel on its node: the pod labelled app=ztunnel there (istio-system
first, then any namespace you may list) is asked for its /config_dump on
admin port 15000 through the same port-forward, and the certificate of the
pod's identity (spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE-ACCOUNT) is
verified like a sidecar's. ztunnel fetches a workload's certificate on its
first traffic: until then there is none to show.

--file reads saved certificates instead, with no cluster needed:
  - PEM files, or a directory of them (the agent's OUTPUT_CERTS); files named
    root-cert.pem, ca-cert.pem or root-cert.crt hold the trust roots;
  - an Envoy admin config_dump saved as JSON: all of it
    (kubectl exec POD -c istio-proxy -- curl -s localhost:15000/config_dump),
    only the secrets (...config_dump?resource=dynamic_active_secrets), the
    output of istioctl proxy-config secret POD -o json, or the same file from
    an istioctl bug-report archive. The secret "default" is the workload
    chain and "ROOTCA" its trust roots (several with SPIRE federation: each
    is shown with its trust domain). A secret still warming shows as WARMING;
    private keys are redacted by Envoy and never read;
  - a ztunnel config_dump (kubectl exec ZTUNNEL-POD -- curl -s
    localhost:15000/config_dump, or istioctl ztunnel-config certificates -o
    json): one report per identity, with ztunnel's state (Available,
    Initializing, Unavailable).
With a pod, the file's identity is compared with the pod's; without one the
identity check says "no pod to compare". An identity without a certificate
yet (WARMING, Initializing) gives the verdict PENDING.

A NAME alone is a pod, or else the Deployment, StatefulSet or DaemonSet of
that name. A workload (TYPE/NAME, or such a NAME) is read from its first
running pod by name, with a note when it has more; -l reads every running
pod that matches. Exit status: 0 when the verdict is OK, 1 when the certificates
could not be read, 2 when the verdict (or --compare) failed.`,
		Example: `  # The certificates of the frontend workload, verified
  kubectl mesh certs frontend-app

  # A pod, with serials, keys and fingerprints
  kubectl mesh certs frontend-app-7d9c4b-x2x8q -o wide

  # Every pod of a workload
  kubectl mesh certs -l app=backend

  # Do two workloads (e.g. in two clusters' namespaces) share a trust root?
  kubectl mesh certs deploy/frontend-app --compare shop/deploy/cart

  # The PEM chain, for openssl
  kubectl mesh certs deploy/frontend-app -o pem | openssl x509 -noout -text

  # Files written by the Istio agent's OUTPUT_CERTS
  kubectl mesh certs --file ./output-certs/

  # A saved Envoy config_dump (e.g. from a support case), offline
  kubectl exec deploy/frontend-app -c istio-proxy -- curl -s localhost:15000/config_dump > dump.json
  kubectl mesh certs --file dump.json

  # Every identity of a ztunnel, from its saved config_dump
  kubectl mesh certs --file ztunnel-config_dump.json`,
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
	f.StringVarP(&o.Selector, "selector", "l", "", "Inspect every pod whose labels match this selector (e.g. app=frontend)")
	f.StringVar(&o.Source, "source", o.Source, "Where to read certificates: auto (envoy, then legacy; ztunnel for a pod in ambient mode), envoy, legacy, ztunnel or file")
	f.StringSliceVar(&o.Files, "file", nil, "PEM files, directories of them, or a saved Envoy or ztunnel config_dump (JSON) to read instead of a pod (repeatable; implies --source file)")
	f.IntVar(&o.AdminPort, "proxy-admin-port", o.AdminPort, "Envoy admin port of the istio-proxy container")
	f.StringVar(&o.Compare, "compare", "", "Another workload (POD, TYPE/NAME or NAMESPACE/TYPE/NAME) to check for a shared trust root")
	f.StringVar(&o.RootNamespace, "root-namespace", o.RootNamespace, "Istio's root namespace (meshConfig.rootNamespace), where mesh-wide PeerAuthentication lives")
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete records arguments and builds clients. The port-forward/exec
// transport is built only when a pod is actually read.
func (o *CertsOptions) Complete(cmd *cobra.Command, args []string) error {
	o.args = args
	if len(o.Files) > 0 && !cmd.Flags().Changed("source") {
		o.Source = string(certs.SourceFile)
	}
	ns, _, err := o.Namespace()
	if err != nil {
		return err
	}
	o.namespace = ns
	if o.Source == string(certs.SourceFile) && len(args) == 0 && o.Selector == "" {
		return nil // files alone: no cluster needed
	}
	if o.kube, err = o.KubeClient(); err != nil {
		return err
	}
	ist, err := o.IstioClient()
	if err != nil {
		return err
	}
	t := &certs.LazyKube{Config: o.RESTConfig, Client: o.kube}
	o.clients = certs.Clients{Istio: ist, Forwarder: t, Executor: t, Kube: o.kube}
	return nil
}

// Validate checks flags without touching the cluster.
func (o *CertsOptions) Validate() error {
	valid := false
	for _, s := range certs.Sources {
		valid = valid || o.Source == string(s)
	}
	if !valid {
		return fmt.Errorf("invalid --source %q: use auto, envoy, legacy, ztunnel or file", o.Source)
	}
	if o.Source == string(certs.SourceFile) && len(o.Files) == 0 {
		return errors.New("--source file needs --file PATH")
	}
	if len(o.Files) > 0 && o.Source != string(certs.SourceFile) {
		return fmt.Errorf("--file reads files, it cannot be combined with --source %s", o.Source)
	}
	if err := o.PrintFlags.Validate(); err != nil {
		return err
	}
	if o.AdminPort < 1 || o.AdminPort > 65535 {
		return fmt.Errorf("invalid --proxy-admin-port %d: use a port between 1 and 65535", o.AdminPort)
	}
	if o.Selector != "" {
		if len(o.args) > 0 {
			return errors.New("give either a POD or TYPE/NAME argument or -l SELECTOR, not both")
		}
		if _, err := labels.Parse(o.Selector); err != nil {
			return fmt.Errorf("invalid --selector %q: %w", o.Selector, err)
		}
	}
	if len(o.args) > 2 {
		return fmt.Errorf("too many arguments %q: give one POD, TYPE/NAME or TYPE NAME", o.args)
	}
	if len(o.args) == 0 && o.Selector == "" && o.Source != string(certs.SourceFile) {
		return errors.New("name a pod: kubectl mesh certs POD (or TYPE/NAME, or -l SELECTOR, or --file PATH)")
	}
	if o.Compare != "" && o.Source == string(certs.SourceFile) {
		return errors.New("--compare reads the other workload from the cluster; it cannot be combined with --file")
	}
	return nil
}

// Run reads, judges and prints. Pods that could not be read are reported
// together after the others were printed.
func (o *CertsOptions) Run(ctx context.Context) error {
	cfg := certs.Config{
		Source:        certs.Source(o.Source),
		Files:         o.Files,
		AdminPort:     o.AdminPort,
		RootNamespace: o.RootNamespace,
		Now:           o.Clock.Now(),
	}
	var pods []*corev1.Pod
	if len(o.args) > 0 || o.Selector != "" {
		var err error
		if pods, err = o.resolve(ctx, o.namespace, o.args); err != nil {
			return err
		}
	} else {
		pods = []*corev1.Pod{nil} // --file alone
	}

	var res certs.Result
	var readErrs []error
	for _, pod := range pods {
		rs, err := certs.Inspect(ctx, o.clients, cfg, pod)
		if err != nil {
			readErrs = append(readErrs, err)
			continue
		}
		res.Reports = append(res.Reports, rs...)
	}
	if o.Compare != "" && len(res.Reports) > 0 {
		other, err := o.resolveCompare(ctx)
		if err != nil {
			return err
		}
		rs, err := certs.Inspect(ctx, o.clients, cfg, other)
		if err != nil {
			return fmt.Errorf("--compare %s: %w", o.Compare, err)
		}
		c := certs.Compare(res.Reports[0], rs[0])
		res.Comparison = &c
		res.Reports = append(res.Reports, rs[0])
	}
	if len(res.Reports) > 0 {
		var err error
		if o.PrintFlags.Human() {
			err = certs.Print(o.Out, o.PrintFlags.Format(), res)
		} else {
			err = o.PrintFlags.Print(o.Out, certs.Value(res))
		}
		if err != nil {
			return err
		}
	}
	for _, r := range res.Reports {
		for _, w := range r.Verdict.Warnings {
			fmt.Fprintf(o.ErrOut, "Warning: %s: %s\n", r.Name(), w)
		}
		if r.MTLS != nil && r.Workload != nil {
			for _, n := range r.MTLS.Notes {
				fmt.Fprintf(o.ErrOut, "note: %s: %s\n", r.Name(), n)
			}
		}
	}
	if len(readErrs) == 1 && len(pods) == 1 {
		return readErrs[0]
	}
	if len(readErrs) > 0 {
		msgs := make([]string, len(readErrs))
		for i, e := range readErrs {
			msgs[i] = e.Error()
		}
		return fmt.Errorf("could not read the certificates of %d of %d pods:\n%s", len(readErrs), len(pods), strings.Join(msgs, "\n"))
	}
	return verdictError(res)
}

// CertsVerdictError is a failed verdict; its exit code is 2.
type CertsVerdictError struct{ Lines []string }

func (e *CertsVerdictError) Error() string {
	return strings.Join(e.Lines, "\n")
}

// ExitCode tells Main the exit status.
func (e *CertsVerdictError) ExitCode() int { return certsVerdictExitCode }

func verdictError(res certs.Result) error {
	var lines []string
	for _, r := range res.Reports {
		if f := r.Verdict.Failures(); len(f) > 0 {
			lines = append(lines, fmt.Sprintf("certificate verdict failed for %s: %s", r.Name(), strings.Join(f, "; ")))
		}
	}
	if c := res.Comparison; c != nil && !c.OK {
		lines = append(lines, c.Message)
	}
	if len(lines) == 0 {
		return nil
	}
	return &CertsVerdictError{Lines: lines}
}

// resolve turns arguments into pods with the shared target resolver: a
// NAME is a pod, or else the workload of that name; TYPE/NAME and TYPE NAME
// go through the RESTMapper. A workload is read from its first running pod
// (by name), with a note when it has more; -l reads every running pod.
func (o *CertsOptions) resolve(ctx context.Context, ns string, args []string) ([]*corev1.Pod, error) {
	r := &target.Resolver{Kube: o.kube, Factory: o.Factory}
	t, err := r.Resolve(ctx, target.Request{Namespace: ns, Args: args, Selector: o.Selector})
	if err != nil {
		return nil, err
	}
	if t.Kind != target.KindWorkload {
		return t.Pods, nil
	}
	first := t.Pods[0]
	if t.Fallback != "" {
		fmt.Fprintf(o.ErrOut, "note: no pod %q; using pod %s of %s\n", args[0], first.Name, t.Fallback)
	}
	if len(t.Pods) > 1 {
		fmt.Fprintf(o.ErrOut, "note: %s has %d running pods; showing %s (all of them: kubectl mesh certs -n %s -l %s)\n",
			t.What, len(t.Pods), first.Name, ns, t.Selector)
	}
	return []*corev1.Pod{first}, nil
}

// resolveCompare reads --compare: POD, TYPE/NAME, or NAMESPACE/TYPE/NAME
// and NAMESPACE/POD for a workload in another namespace.
func (o *CertsOptions) resolveCompare(ctx context.Context) (*corev1.Pod, error) {
	ns, ref := o.namespace, o.Compare
	switch parts := strings.Split(o.Compare, "/"); len(parts) {
	case 3:
		ns, ref = parts[0], parts[1]+"/"+parts[2]
	case 2:
		// NAMESPACE/POD unless the first part is a resource type.
		if f, err := o.Factory(); err == nil {
			if mapper, err := f.ToRESTMapper(); err == nil {
				if _, err := mapper.ResourceFor(schema.ParseGroupResource(parts[0]).WithVersion("")); err != nil {
					ns, ref = parts[0], parts[1]
				}
			}
		}
	}
	saved := o.Selector
	o.Selector = ""
	defer func() { o.Selector = saved }()
	pods, err := o.resolve(ctx, ns, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("--compare %s: %w", o.Compare, err)
	}
	return pods[0], nil
}
