package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubectl/pkg/polymorphichelpers"
	kubectlscheme "k8s.io/kubectl/pkg/scheme"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// Exit codes of `kubectl mesh sniff --expect`.
const (
	exitExpectFailed    = 2
	exitExpectNoTraffic = 3
)

// SniffOptions is `kubectl mesh sniff`.
type SniffOptions struct {
	*options.Options

	Selector     string
	Via          string
	NodeAddress  string
	SSHUser      string
	SSHPort      int
	SSHKeys      []string
	KnownHosts   []string
	SSHJump      string
	SSHConfig    string
	InsecureSkip bool
	Interface    string
	Filter       string
	Count        int
	Duration     time.Duration
	Grep         string
	Expect       string
	IncludeInfra bool
	Write        string
	Read         string
	Output       string
	Image        string

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
	o := &SniffOptions{Options: root, Via: "auto"}
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
	f.StringVarP(&o.Selector, "selector", "l", "", "Capture a pod matching this label selector")
	f.StringVar(&o.Via, "via", o.Via, "How to reach the node: ssh, pod (creates a capture pod on the node) or auto (SSH when flags or ssh_config give settings; never a pod)")
	f.StringVar(&o.NodeAddress, "node-address", "", "SSH to this address instead of the node's InternalIP")
	f.StringVar(&o.SSHUser, "ssh-user", "", "SSH user (default: from ssh_config, else $USER); unless root, only tcpdump runs, as sudo -n tcpdump")
	f.IntVar(&o.SSHPort, "ssh-port", 0, "SSH port (default: from ~/.ssh/config, else 22)")
	f.StringArrayVar(&o.SSHKeys, "ssh-key", nil, "Private key file to offer first (repeatable); then ssh_config's IdentityFile, then ssh-agent's keys unless IdentitiesOnly")
	f.StringArrayVar(&o.KnownHosts, "ssh-known-hosts", nil, "known_hosts file to check host keys against (default: UserKnownHostsFile, else ~/.ssh/known_hosts); /etc/ssh/ssh_known_hosts is checked too")
	f.StringVar(&o.SSHJump, "ssh-jump", "", "Reach the node through this bastion: [user@]host[:port]")
	f.StringVar(&o.SSHConfig, "ssh-config", "", "ssh_config file to read instead of ~/.ssh/config and /etc/ssh/ssh_config (Include, IdentitiesOnly and Match host are honoured)")
	f.BoolVar(&o.InsecureSkip, "insecure-skip-host-key-check", false, "Do not check the node's SSH host key (anyone on the path can impersonate the node)")
	f.StringVar(&o.Interface, "interface", "", "Node interface to capture on (default: the pod's host-side interface, else any)")
	f.StringVar(&o.Filter, "filter", "", "Extra tcpdump filter, and-ed with the pod's addresses (e.g. 'tcp port 80')")
	f.IntVar(&o.Count, "count", 0, "Stop after this many packets")
	f.DurationVar(&o.Duration, "duration", 0, "Stop after this long (default: until Ctrl-C)")
	f.StringVar(&o.Grep, "grep", "", "Count occurrences of this text in the reassembled payloads")
	f.BoolVar(&o.IncludeInfra, "include-infra", false, "Count mesh infrastructure traffic (probes, scrapes, istiod, cluster DNS) in the verdict")
	f.StringVar(&o.Expect, "expect", "", "Exit 2 unless the verdict is: encrypted, plaintext or istio-mtls")
	f.StringVarP(&o.Write, "write", "w", "", "Also write the raw capture to this pcap file ('-' for stdout)")
	f.StringVarP(&o.Read, "read", "r", "", "Analyse this pcap or pcapng file instead of capturing")
	f.StringVarP(&o.Output, "output", "o", "", "Output format: json (one object at the end)")
	f.StringVar(&o.Image, "image", sniff.DefaultImage, "Image with tcpdump for --via pod")
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
	switch o.Output {
	case "", "json":
	default:
		return fmt.Errorf("--output must be json, got %q", o.Output)
	}
	if o.Write == "-" && o.Output == "json" {
		return fmt.Errorf("-w - and -o json both want stdout: write the capture to a file")
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
	if o.Output == "" {
		w := o.out()
		cfg.OnEvent = func(ev sniff.Event) { fmt.Fprintln(w, sniff.FormatEvent(ev)) }
	}
	var rep *sniff.Report
	var capErr error
	if o.Read != "" {
		f, err := os.Open(o.Read)
		if err != nil {
			return fmt.Errorf("opening the capture: %w", err)
		}
		defer f.Close()
		rep, capErr = sniff.Analyze(ctx, f, cfg)
		if errors.Is(capErr, sniff.ErrPacketLimit) {
			capErr = nil
		}
		if capErr != nil {
			return fmt.Errorf("analysing %s: %w", o.Read, capErr)
		}
	} else {
		var err error
		rep, capErr, err = o.capture(ctx, cfg)
		if err != nil {
			return err
		}
	}
	if o.Output == "json" {
		if err := sniff.WriteJSON(o.Out, rep); err != nil {
			return err
		}
	} else if err := sniff.WriteSummary(o.out(), rep); err != nil {
		return err
	}
	if capErr != nil {
		return capErr
	}
	return checkExpect(o.Expect, rep.Verdict)
}

// capture finds the pod and its node and runs the capture. err is a failure
// before any packet; capErr one after a (partial) report exists.
func (o *SniffOptions) capture(ctx context.Context, cfg sniff.Config) (rep *sniff.Report, capErr, err error) {
	pod, err := o.resolvePod(ctx)
	if err != nil {
		return nil, nil, err
	}
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []string{pod.Status.PodIP}
	}
	cfg.Pod = sniff.NewPodContext(ctx, o.kube, []*corev1.Pod{pod})
	if pod.Spec.HostNetwork {
		fmt.Fprintf(o.ErrOut, "note: pod %s uses the host network: its address is the node's, so other traffic of the node shows too\n", pod.Name)
	}
	spec := sniff.CaptureSpec{PodIPs: ips, Interface: o.Interface, Filter: o.Filter, Count: o.Count, Duration: o.Duration}
	if _, err := sniff.TcpdumpArgs(spec, "any"); err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if pod.Spec.NodeName == "" {
		return nil, nil, fmt.Errorf("pod %s/%s is not scheduled to a node yet", pod.Namespace, pod.Name)
	}
	runner, err := o.runner(ctx, pod.Spec.NodeName)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if cerr := runner.Close(); cerr != nil && err == nil {
			fmt.Fprintf(o.ErrOut, "warning: %v\n", cerr)
		}
	}()
	fmt.Fprintf(o.ErrOut, "sniffing pod %s/%s (%s) on %s\n", pod.Namespace, pod.Name, strings.Join(ips, ", "), runner.Describe())
	cc := sniff.CaptureConfig{Spec: spec, Analysis: cfg, Notes: o.ErrOut}
	if o.Write != "" {
		if o.Write == "-" {
			cc.Raw = o.Out
		} else {
			f, err := os.Create(o.Write)
			if err != nil {
				return nil, nil, fmt.Errorf("creating -w file: %w", err)
			}
			defer f.Close()
			cc.Raw = f
		}
	}
	rep, capErr = sniff.Capture(ctx, runner, cc)
	if rep == nil {
		return nil, nil, capErr
	}
	return rep, capErr, nil
}

// resolvePod turns the arguments into one running pod: POD (or, when no pod
// has that name, a workload of that name or pods labelled app=NAME),
// TYPE/NAME or TYPE NAME through the RESTMapper, or -l SELECTOR.
func (o *SniffOptions) resolvePod(ctx context.Context) (*corev1.Pod, error) {
	pods := o.kube.CoreV1().Pods(o.ns)
	var selector string
	what := ""
	switch {
	case o.Selector != "":
		selector, what = o.Selector, "selector "+o.Selector
	case len(o.args) == 1 && !strings.Contains(o.args[0], "/"):
		name := o.args[0]
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return pod, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("getting pod %s/%s: %w", o.ns, name, err)
		}
		sel, err := o.workloadSelector(ctx, name)
		if err != nil {
			return nil, err
		}
		if sel == "" {
			sel = labels.Set{"app": name}.String()
		}
		selector, what = sel, name
	default:
		sel, err := o.builderSelector(ctx)
		if err != nil {
			return nil, err
		}
		selector, what = sel, strings.Join(o.args, " ")
	}
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing pods for %s in namespace %s: %w", what, o.ns, err)
	}
	var running []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			running = append(running, p)
		}
	}
	if len(running) == 0 {
		return nil, fmt.Errorf("no running pod for %s in namespace %s: check the name, -n and -l", what, o.ns)
	}
	sort.Slice(running, func(i, j int) bool { return running[i].Name < running[j].Name })
	if len(running) > 1 {
		fmt.Fprintf(o.ErrOut, "%d pods match %s; sniffing %s (name a pod to pick another)\n", len(running), what, running[0].Name)
	}
	return &running[0], nil
}

// workloadSelector finds a Deployment, StatefulSet or DaemonSet called name.
func (o *SniffOptions) workloadSelector(ctx context.Context, name string) (string, error) {
	apps := o.kube.AppsV1()
	var sel *metav1.LabelSelector
	if d, err := apps.Deployments(o.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		sel = d.Spec.Selector
	} else if s, err := apps.StatefulSets(o.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		sel = s.Spec.Selector
	} else if ds, err := apps.DaemonSets(o.ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		sel = ds.Spec.Selector
	}
	if sel == nil {
		return "", nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return "", fmt.Errorf("workload %s has an invalid selector: %w", name, err)
	}
	return s.String(), nil
}

// builderSelector resolves TYPE/NAME like kubectl and returns the selector
// of the pods it stands for.
func (o *SniffOptions) builderSelector(ctx context.Context) (string, error) {
	f, err := o.Factory()
	if err != nil {
		return "", err
	}
	obj, err := f.NewBuilder().WithScheme(kubectlscheme.Scheme, kubectlscheme.Scheme.PrioritizedVersionsAllGroups()...).
		NamespaceParam(o.ns).DefaultNamespace().ResourceTypeOrNameArgs(true, o.args...).SingleResourceType().
		Do().Object()
	if err != nil {
		return "", err
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		return "", fmt.Errorf("use the pod's name alone: kubectl mesh sniff %s", pod.Name)
	}
	_, sel, err := polymorphichelpers.SelectorsForObject(obj)
	if err != nil {
		return "", fmt.Errorf("cannot find the pods of %s: %w", strings.Join(o.args, " "), err)
	}
	return sel.String(), nil
}

// runner connects to the node: the engine picks SSH or a capture pod from
// --via, the SSH flags and ssh_config.
func (o *SniffOptions) runner(ctx context.Context, nodeName string) (sniff.Runner, error) {
	return sniff.OpenRunner(ctx, sniff.TransportConfig{
		Via: o.Via,
		SSH: sniff.SSHSettings{Address: o.NodeAddress, User: o.SSHUser, Port: o.SSHPort, KeyFiles: o.SSHKeys,
			KnownHosts: o.KnownHosts, Jump: o.SSHJump, ConfigFile: o.SSHConfig, InsecureSkipHostKeyCheck: o.InsecureSkip},
		Env: sniff.DefaultSSHEnv(), Kube: o.kube, REST: o.RESTConfig, Namespace: o.ns, Image: o.Image, Notes: o.ErrOut,
	}, nodeName)
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
