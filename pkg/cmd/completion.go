package cmd

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// completionTimeout bounds the API calls made while the user waits at a TAB:
// an unreachable cluster must cost a short pause, not a hung shell.
const completionTimeout = 5 * time.Second

const completionLong = `Output a shell completion script for kubectl mesh.

Completion is dynamic: namespaces, pods, services and Istio revisions are read
from the cluster of the current kubeconfig context (or the one given with
--kubeconfig/--context earlier on the line).

Under "kubectl mesh ..." (kubectl 1.26 or later), kubectl completes the plugin
by running kubectl_complete-mesh from PATH. Put that helper next to
kubectl-mesh ("make install" does) and load kubectl's own completion
("source <(kubectl completion bash)"); no script from this command is needed.

When the binary is run directly as "kubectl-mesh ...", load the script this
command prints. It completes the command named kubectl-mesh.`

const completionExample = `  # bash (needs the bash-completion package); add to ~/.bashrc to keep it
  source <(kubectl mesh completion bash)

  # zsh; add to ~/.zshrc to keep it
  source <(kubectl mesh completion zsh)

  # fish
  kubectl mesh completion fish | source

  # PowerShell
  kubectl mesh completion powershell | Out-String | Invoke-Expression`

// completionShells are the shells cobra can write a script for.
var completionShells = []string{"bash", "zsh", "fish", "powershell"}

// NewCmdCompletion returns `kubectl mesh completion SHELL`. It replaces
// cobra's default command, whose help only knows the binary's name and not
// how kubectl completes plugins.
func NewCmdCompletion(o *options.Options) *cobra.Command {
	return &cobra.Command{
		Use:                   "completion bash|zsh|fish|powershell",
		Short:                 "Output a shell completion script",
		Long:                  completionLong,
		Example:               completionExample,
		DisableFlagsInUseLine: true,
		ValidArgs:             completionShells,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("name one shell: %s", strings.Join(completionShells, ", "))
			}
			return cobra.OnlyValidArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(o.Out, true)
			case "zsh":
				return root.GenZshCompletion(o.Out)
			case "fish":
				return root.GenFishCompletion(o.Out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(o.Out)
			}
		},
	}
}

// registerFlagCompletions completes the root's kubeconfig flags, which every
// subcommand inherits.
func registerFlagCompletions(root *cobra.Command, o *options.Options) {
	for flag, fn := range map[string]cobra.CompletionFunc{
		"namespace": CompleteNamespaces(o),
		"context":   completeKubeconfig(o, contextNames),
		"cluster":   completeKubeconfig(o, clusterNames),
		"user":      completeKubeconfig(o, userNames),
		"color":     cobra.FixedCompletions([]cobra.Completion{"auto", "always", "never"}, cobra.ShellCompDirectiveNoFileComp),
	} {
		// Fails only for a missing or doubly registered flag, which
		// TestFlagCompletion catches.
		_ = root.RegisterFlagCompletionFunc(flag, fn)
	}
}

// CompleteNamespaces completes namespace names: for -n and for arguments that
// name a namespace.
func CompleteNamespaces(o *options.Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeFrom(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
			kube, err := o.KubeClient()
			if err != nil {
				return nil, err
			}
			list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing namespaces: %w", err)
			}
			names := make([]cobra.Completion, 0, len(list.Items))
			for _, ns := range list.Items {
				names = append(names, ns.Name)
			}
			return names, nil
		})
	}
}

// CompletePods completes the names of pods in the command's namespace (-n or
// the context's).
func CompletePods(o *options.Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeFrom(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
			kube, ns, err := kubeAndNamespace(o)
			if err != nil {
				return nil, err
			}
			list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing pods in namespace %s: %w", ns, err)
			}
			names := make([]cobra.Completion, 0, len(list.Items))
			for _, p := range list.Items {
				names = append(names, p.Name)
			}
			return names, nil
		})
	}
}

// CompleteServices completes the names of services in the command's
// namespace.
func CompleteServices(o *options.Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeFrom(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
			kube, ns, err := kubeAndNamespace(o)
			if err != nil {
				return nil, err
			}
			list, err := kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("listing services in namespace %s: %w", ns, err)
			}
			names := make([]cobra.Completion, 0, len(list.Items))
			for _, s := range list.Items {
				names = append(names, s.Name)
			}
			return names, nil
		})
	}
}

// CompleteRevisions completes Istio revisions and revision tags, described
// with their version (or the revision a tag points at) for shells that show
// descriptions.
func CompleteRevisions(o *options.Options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeFrom(cmd, toComplete, func(ctx context.Context) ([]cobra.Completion, error) {
			kube, err := o.KubeClient()
			if err != nil {
				return nil, err
			}
			inv, err := controlplane.Discover(ctx, kube)
			if err != nil {
				return nil, err
			}
			var out []cobra.Completion
			seen := map[string]bool{}
			for _, cp := range inv.ControlPlanes {
				desc := "Istio revision"
				if cp.Version != "" {
					desc = "Istio " + cp.Version
				}
				if !seen[cp.Revision] {
					seen[cp.Revision] = true
					out = append(out, cobra.CompletionWithDesc(cp.Revision, desc))
				}
				for _, tag := range cp.Tags {
					if !seen[tag] {
						seen[tag] = true
						out = append(out, cobra.CompletionWithDesc(tag, "tag of revision "+cp.Revision))
					}
				}
			}
			return out, nil
		})
	}
}

func kubeAndNamespace(o *options.Options) (kubernetes.Interface, string, error) {
	kube, err := o.KubeClient()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := o.Namespace()
	if err != nil {
		return nil, "", err
	}
	return kube, ns, nil
}

// completeFrom runs list with a deadline and keeps the candidates that start
// with toComplete, sorted. Errors go to stderr, which shells hide, and leave
// no candidates rather than falling back to file names.
func completeFrom(cmd *cobra.Command, toComplete string, list func(context.Context) ([]cobra.Completion, error)) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	all, err := list(ctx)
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "completion: %v\n", err)
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return filterPrefix(all, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func filterPrefix(all []cobra.Completion, prefix string) []cobra.Completion {
	out := make([]cobra.Completion, 0, len(all))
	for _, c := range all {
		name, _, _ := strings.Cut(c, "\t")
		if strings.HasPrefix(name, prefix) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// completeKubeconfig completes names from the kubeconfig files alone, without
// contacting any cluster.
func completeKubeconfig(o *options.Options, names func(clientcmdapi.Config) []string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		raw, err := o.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "completion: reading kubeconfig: %v\n", err)
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return filterPrefix(names(raw), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func contextNames(c clientcmdapi.Config) []string { return mapKeys(c.Contexts) }
func clusterNames(c clientcmdapi.Config) []string { return mapKeys(c.Clusters) }
func userNames(c clientcmdapi.Config) []string    { return mapKeys(c.AuthInfos) }

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// registerCommandCompletions completes the subcommands' arguments and
// flags: the resources each argument names, and the fixed values of
// enumerated flags. Flags a command lacks are skipped.
func registerCommandCompletions(root *cobra.Command, o *options.Options) {
	fixed := func(values ...string) cobra.CompletionFunc {
		return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
	}
	for _, c := range root.Commands() {
		flag := func(name string, fn cobra.CompletionFunc) {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, fn)
			}
		}
		switch c.Name() {
		case "enable-injection", "disable-injection", "restart":
			c.ValidArgsFunction = unusedArgs(CompleteNamespaces(o))
			flag("revision", CompleteRevisions(o))
			flag("dry-run", fixed("none", "client", "server"))
			if c.Name() == "restart" {
				flag("output", fixed("wide"))
			}
		case "status":
			c.ValidArgsFunction = cobra.NoFileCompletions
			flag("output", fixed("wide", "json", "yaml"))
		case "certs":
			c.ValidArgsFunction = firstArg(CompletePods(o))
			flag("compare", CompletePods(o))
			flag("source", fixed("auto", "envoy", "legacy", "ztunnel", "file"))
			// -o completes from its PrintFlags.
		case "sniff":
			c.ValidArgsFunction = firstArg(CompletePods(o))
			flag("via", fixed("auto", "ssh", "pod"))
			flag("expect", fixed("encrypted", "plaintext", "istio-mtls"))
			// -o completes from its PrintFlags.
		case "verify":
			c.ValidArgsFunction = unusedArgs(CompleteNamespaces(o))
			flag("via", fixed("auto", "ssh", "pod"))
			flag("output", fixed("table", "json", "yaml", "dot", "mermaid"))
		case "split", "expose":
			// split parses its own flags and completes its own arguments.
			if c.ValidArgsFunction == nil {
				c.ValidArgsFunction = firstArg(CompleteServices(o))
			}
			flag("api", fixed("istio", "gateway"))
			flag("dry-run", fixed("none", "client", "server"))
		}
	}
}

// firstArg completes only the first positional argument.
func firstArg(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return fn(cmd, args, toComplete)
	}
}

// unusedArgs drops candidates already given as arguments (namespaces
// listed once each).
func unusedArgs(fn cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		all, dir := fn(cmd, args, toComplete)
		used := map[string]bool{}
		for _, a := range args {
			used[a] = true
		}
		out := all[:0:0]
		for _, c := range all {
			if name, _, _ := strings.Cut(c, "\t"); !used[name] {
				out = append(out, c)
			}
		}
		return out, dir
	}
}
