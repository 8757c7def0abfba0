package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/target"
)

// Exit codes of `kubectl mesh sniff --expect`.
const (
	exitExpectFailed    = 2
	exitExpectNoTraffic = 3
)

// SniffOptions is `kubectl mesh sniff`.
type SniffOptions struct {
	*options.Options

	Selector string
	NodeAccess
	Interface    string
	Filter       string
	Count        int
	Duration     time.Duration
	Grep         string
	Expect       string
	IncludeInfra bool
	Write        string
	Read         string
	PrintFlags   *options.ReportPrintFlags

	args []string
	kube kubernetes.Interface
	ns   string
}

const sniffLong = `Capture a pod's traffic on its node and say whether it is plaintext or
encrypted, with evidence: each TCP direction is reassembled, TLS handshakes
(SNI, ALPN, version) and records, HTTP/1.x and cleartext HTTP/2 are
recognised, and --grep counts a marker even where it crosses segments.

The capture runs tcpdump on the pod's node, over SSH (--via ssh, the
default when SSH settings are given or ~/.ssh/config knows the node) or
from a short-lived privileged pod on the node (--via pod). Host keys are
checked against known_hosts. The remote tcpdump always stops: on
--duration, --count, Ctrl-C or a dropped connection. -r analyses a saved
pcap or pcapng file instead.

A workload (TYPE/NAME, or a NAME that is no pod) or -l SELECTOR means every
running pod of it: one capture per node, all nodes at once, each filtered to
that node's pods (on interface any when a node runs several). With pods on
several nodes each node's report is printed, then the overall verdict: the
worst wins (plaintext on one node and mTLS on another is MIXED, one unproven
node keeps it unproven, a node without traffic adds nothing); --expect and
the exit code use it, -o json has "verdict" and per node "nodes". A node that
cannot be captured is named and the exit code is 1. --node-address and -w
need pods on one node.

Every packet counts: UDP, ICMP and other IP traffic is classified (DNS,
QUIC, DTLS, printable text) and searched by --grep, and IP fragments are
reassembled. Istio's plaintext-by-design traffic (kubelet probes, metrics
scrapes, istiod, cluster DNS) is listed apart as mesh infrastructure and left
out of the verdict unless --include-infra. In a live capture the pod's own
facts (sidecar, probe ports, meshed peers) let a pooled connection whose
handshake was not captured count as Istio's. Encryption is only claimed with
evidence; "not Istio" only with a handshake that shows it.

Verdicts: PLAINTEXT, ENCRYPTED (Istio mTLS), ENCRYPTED (TLS, Istio not
proven), ENCRYPTED (TLS, not Istio), MIXED, NO TRAFFIC, UNKNOWN. The policy,
also in docs/verdicts.md:

`

const sniffExitCodes = `
Exit codes: 0 success (and --expect met); 1 error; 2 --expect not met;
3 --expect given but no traffic was captured. --expect encrypted accepts
every ENCRYPTED verdict; --expect istio-mtls only ENCRYPTED (Istio mTLS).`

// NewCmdSniff returns the sniff command.
func NewCmdSniff(root *options.Options) *cobra.Command {
	o := &SniffOptions{Options: root, NodeAccess: newNodeAccess(), PrintFlags: options.NewReportPrintFlags()}
	cmd := &cobra.Command{
		Use:   "sniff (POD | TYPE/NAME | -l SELECTOR) [flags]",
		Short: "Capture a pod's traffic on its node and tell plaintext from mTLS",
		Long:  sniffLong + sniff.PolicyText() + sniffExitCodes,
		Example: `  # 20 seconds of the backend's traffic over SSH to its node, counting a marker
  kubectl mesh sniff deploy/backend-app --ssh-user root --duration 20s --grep TGN

  # CI: fail unless the traffic is encrypted
  kubectl mesh sniff backend-app --duration 10s --expect encrypted

  # Keep the raw capture for Wireshark while analysing
  kubectl mesh sniff backend-app -w backend.pcap --count 500

  # Analyse a saved capture
  kubectl mesh sniff -r backend.pcap --grep TGN -o json`,
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
	f.StringVarP(&o.Selector, "selector", "l", "", "Capture every running pod matching this label selector")
	o.NodeAccess.AddFlags(f)
	f.StringVar(&o.Interface, "interface", "", "Node interface to capture on (default: the pod's host-side interface, else any)")
	f.StringVar(&o.Filter, "filter", "", "Extra tcpdump filter, and-ed with the pod's addresses (e.g. 'tcp port 80')")
	f.IntVar(&o.Count, "count", 0, "Stop after this many packets")
	f.DurationVar(&o.Duration, "duration", 0, "Stop after this long (default: until Ctrl-C)")
	f.StringVar(&o.Grep, "grep", "", "Count occurrences of this text in the reassembled payloads")
	f.BoolVar(&o.IncludeInfra, "include-infra", false, "Count mesh infrastructure traffic (probes, scrapes, istiod, cluster DNS) in the verdict")
	f.StringVar(&o.Expect, "expect", "", "Exit 2 unless the verdict is: encrypted, plaintext or istio-mtls")
	f.StringVarP(&o.Write, "write", "w", "", "Also write the raw capture to this pcap file ('-' for stdout)")
	f.StringVarP(&o.Read, "read", "r", "", "Analyse this pcap or pcapng file instead of capturing")
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete reads the environment and builds the client when capturing live.
func (o *SniffOptions) Complete(cmd *cobra.Command, args []string) error {
	o.args = args
	if o.Read != "" {
		return nil
	}
	ns, _, err := o.Namespace()
	if err != nil {
		return err
	}
	o.ns = ns
	o.kube, err = o.KubeClient()
	return err
}

// Validate checks flags without touching the cluster.
func (o *SniffOptions) Validate() error {
	switch o.Via {
	case "auto", "ssh", "pod":
	default:
		return fmt.Errorf("--via must be auto, ssh or pod, got %q", o.Via)
	}
	switch o.Expect {
	case "", "encrypted", "plaintext", "istio-mtls":
	default:
		return fmt.Errorf("--expect must be encrypted, plaintext or istio-mtls, got %q", o.Expect)
	}
	if err := o.PrintFlags.Validate(); err != nil {
		return err
	}
	if o.Write == "-" && !o.PrintFlags.Human() {
		return fmt.Errorf("-w - and -o %s both want stdout: write the capture to a file", o.PrintFlags.Format())
	}
	if o.Count < 0 || o.Duration < 0 {
		return fmt.Errorf("--count and --duration must not be negative")
	}
	if o.Read != "" {
		if len(o.args) > 0 || o.Selector != "" {
			return fmt.Errorf("-r analyses a file: do not name a pod or selector too")
		}
		if o.Write != "" {
			return fmt.Errorf("-r and -w cannot be combined: the file already is a capture")
		}
		return nil
	}
	if (len(o.args) == 0) == (o.Selector == "") {
		return fmt.Errorf("name one pod (POD or TYPE/NAME) or give -l SELECTOR, e.g. kubectl mesh sniff deploy/backend-app")
	}
	if len(o.args) > 2 {
		return fmt.Errorf("too many arguments %q: name one pod or workload", o.args)
	}
	if o.Interface != "" {
		if err := sniff.ValidateInterface(o.Interface); err != nil {
			return fmt.Errorf("--interface: %w", err)
		}
	}
	return sniff.ValidateFilter(o.Filter)
}

// out is where the human output goes: stderr when stdout carries the pcap.
func (o *SniffOptions) out() io.Writer {
	if o.Write == "-" {
		return o.ErrOut
	}
	return o.Out
}

// Run captures (or reads) and prints the events, summary and verdict.
func (o *SniffOptions) Run(ctx context.Context) error {
	cfg := sniff.Config{Grep: o.Grep, MaxPackets: o.Count, IncludeInfra: o.IncludeInfra}
	if o.Read == "" {
		return o.runLive(ctx, cfg)
	}
	if o.PrintFlags.Human() {
		w := o.out()
		cfg.OnEvent = func(ev sniff.Event) { fmt.Fprintln(w, sniff.FormatEvent(ev)) }
	}
	f, err := os.Open(o.Read)
	if err != nil {
		return fmt.Errorf("opening the capture: %w", err)
	}
	defer f.Close()
	rep, err := sniff.Analyze(ctx, f, cfg)
	if err != nil && !errors.Is(err, sniff.ErrPacketLimit) {
		return fmt.Errorf("analysing %s: %w", o.Read, err)
	}
	if err := o.print(rep); err != nil {
		return err
	}
	return checkExpect(o.Expect, rep.Verdict)
}

func (o *SniffOptions) print(rep *sniff.Report) error {
	if !o.PrintFlags.Human() {
		return o.PrintFlags.Print(o.Out, rep)
	}
	return sniff.WriteSummary(o.out(), rep)
}

// runLive resolves the pods, captures on each of their nodes at once (one
// capture per node, filtered to that node's pods) and prints one report,
// or with several nodes each node's report and the overall verdict.
func (o *SniffOptions) runLive(ctx context.Context, cfg sniff.Config) error {
	r := &target.Resolver{Kube: o.kube, Factory: o.Factory}
	t, err := r.Resolve(ctx, target.Request{Namespace: o.ns, Args: o.args, Selector: o.Selector})
	if err != nil {
		return err
	}
	groups, skipped := sniff.GroupByNode(t.Pods)
	if len(groups) == 0 {
		if p := t.Pods[0]; len(t.Pods) == 1 && p.Spec.NodeName == "" {
			return fmt.Errorf("pod %s/%s is not scheduled to a node yet", p.Namespace, p.Name)
		} else if len(t.Pods) == 1 {
			return fmt.Errorf("pod %s/%s has no IP address yet: wait until it is running", p.Namespace, p.Name)
		}
		return fmt.Errorf("no pod of %s in namespace %s is on a node with an address yet: wait until they run", t.What, o.ns)
	}
	for _, p := range skipped {
		fmt.Fprintf(o.ErrOut, "note: pod %s/%s is not on a node with an address yet; not captured\n", p.Namespace, p.Name)
	}
	if len(groups) > 1 && (o.NodeAddress != "" || o.Write != "") {
		return fmt.Errorf("--node-address and -w name one node, but the pods of %s run on %d nodes: drop them, or name pods on one node", t.What, len(groups))
	}
	gc := sniff.GroupConfig{Transport: o.transport(), Analysis: cfg, Kube: o.kube, Notes: o.ErrOut,
		Spec: sniff.CaptureSpec{Interface: o.Interface, Filter: o.Filter, Count: o.Count, Duration: o.Duration}}
	if o.PrintFlags.Human() {
		w, prefix := o.out(), len(groups) > 1
		gc.OnEvent = func(node string, ev sniff.Event) {
			if prefix {
				fmt.Fprintf(w, "%s: ", node)
			}
			fmt.Fprintln(w, sniff.FormatEvent(ev))
		}
	}
	if o.Write != "" {
		raw, closeRaw, err := o.rawWriter()
		if err != nil {
			return err
		}
		defer closeRaw()
		gc.Raw = raw
	}
	caps := sniff.CaptureNodes(ctx, gc, groups)
	if len(caps) == 1 && len(skipped) == 0 {
		c := caps[0]
		if c.Report == nil {
			return c.Err
		}
		if err := o.print(c.Report); err != nil {
			return err
		}
		if c.Err != nil {
			return c.Err
		}
		return checkExpect(o.Expect, c.Report.Verdict)
	}
	gr := sniff.NewGroupReport(caps, skipped)
	if !o.PrintFlags.Human() {
		err = o.PrintFlags.Print(o.Out, gr)
	} else {
		err = sniff.WriteGroupSummary(o.out(), gr)
	}
	if err != nil {
		return err
	}
	if err := gr.Err(); err != nil {
		return err
	}
	return checkExpect(o.Expect, gr.Verdict)
}

// rawWriter is where -w writes the pcap: stdout or a new file.
func (o *SniffOptions) rawWriter() (io.Writer, func(), error) {
	if o.Write == "-" {
		return o.Out, func() {}, nil
	}
	f, err := os.Create(o.Write)
	if err != nil {
		return nil, nil, fmt.Errorf("creating -w file: %w", err)
	}
	return f, func() { f.Close() }, nil
}

// transport is how the engine reaches nodes: SSH or a capture pod from
// --via, the SSH flags and ssh_config.
func (o *SniffOptions) transport() sniff.TransportConfig {
	t := o.NodeAccess.Transport(o.kube, o.RESTConfig, o.ns)
	t.Notes = o.ErrOut
	return t
}

// expectError is an --expect that the capture did not meet.
type expectError struct {
	msg  string
	code int
}

func (e *expectError) Error() string { return e.msg }
func (e *expectError) ExitCode() int { return e.code }

func checkExpect(expect string, v sniff.Verdict) error {
	if expect == "" {
		return nil
	}
	if v == sniff.VerdictNoTraffic {
		return &expectError{code: exitExpectNoTraffic, msg: fmt.Sprintf("expected %s traffic but none was captured: make the workload send requests during the capture, or widen --duration", expect)}
	}
	ok := false
	switch expect {
	case "encrypted":
		ok = v.Encrypted()
	case "plaintext":
		ok = v == sniff.VerdictPlaintext
	case "istio-mtls":
		ok = v == sniff.VerdictEncryptedIstio
	}
	if ok {
		return nil
	}
	return &expectError{code: exitExpectFailed, msg: fmt.Sprintf("expected %s traffic, but the verdict is %s", expect, v)}
}
