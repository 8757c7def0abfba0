package cmd

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	apimachineryversion "k8s.io/apimachinery/pkg/version"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/version"
)

// VersionOptions is `kubectl mesh version`.
type VersionOptions struct {
	*options.Options
	ClientOnly bool
	PrintFlags *options.ReportPrintFlags
}

// ClientVersion is the plugin's own build.
type ClientVersion struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// VersionInfo is what `version -o json|yaml` prints.
type VersionInfo struct {
	ClientVersion ClientVersion               `json:"clientVersion"`
	ServerVersion *apimachineryversion.Info   `json:"serverVersion,omitempty"`
	MeshVersions  []controlplane.ControlPlane `json:"meshVersions,omitempty"`
	// MeshUnchecked are the reads of the control plane the user was refused.
	MeshUnchecked []controlplane.Unchecked `json:"meshUnchecked,omitempty"`
	// injectorsUnknown: the injector webhooks could not be read.
	injectorsUnknown bool
}

// NewCmdVersion returns the version command.
func NewCmdVersion(root *options.Options) *cobra.Command {
	o := &VersionOptions{Options: root, PrintFlags: options.NewReportPrintFlags()}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin, Kubernetes and Istio control-plane versions",
		Example: `  # Plugin, cluster and Istio versions
  kubectl mesh version

  # Only the plugin's version; never contacts the cluster
  kubectl mesh version --client

  # Machine-readable
  kubectl mesh version -o json`,
		Args:              cobra.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd)
		},
	}
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "Print only the plugin's version; do not contact the cluster")
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Validate checks flags without touching the cluster.
func (o *VersionOptions) Validate() error {
	return o.PrintFlags.Validate()
}

// Run prints the versions. Without --client, a cluster that cannot be reached
// is an error after the client version has been printed, as kubectl does.
func (o *VersionOptions) Run(cmd *cobra.Command) error {
	info := VersionInfo{ClientVersion: ClientVersion{
		Version:   version.Version,
		Commit:    version.Commit,
		Date:      version.Date,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}}
	var serverErr error
	if !o.ClientOnly {
		serverErr = o.fetchServer(cmd, &info)
	}
	if err := o.printVersion(info); err != nil {
		return err
	}
	return serverErr
}

func (o *VersionOptions) fetchServer(cmd *cobra.Command, info *VersionInfo) error {
	disc, err := o.DiscoveryClient()
	if err != nil {
		return err
	}
	sv, err := disc.ServerVersion()
	if err != nil {
		return fmt.Errorf("cannot reach the Kubernetes API server: %w", err)
	}
	info.ServerVersion = sv
	kube, err := o.KubeClient()
	if err != nil {
		return err
	}
	inv, err := controlplane.Discover(cmd.Context(), kube)
	if err != nil {
		return err
	}
	info.MeshVersions, info.MeshUnchecked, info.injectorsUnknown = inv.ControlPlanes, inv.Unchecked, inv.WebhooksUnknown
	writeUnchecked(o.ErrOut, inv.Unchecked)
	return nil
}

func (o *VersionOptions) printVersion(info VersionInfo) error {
	w, clientOnly := o.Out, o.ClientOnly
	if !o.PrintFlags.Human() {
		return o.PrintFlags.Print(w, info)
	}
	c := info.ClientVersion
	fmt.Fprintf(w, "Client Version: %s (commit %s, built %s, %s, %s)\n", c.Version, c.Commit, c.Date, c.GoVersion, c.Platform)
	if clientOnly || info.ServerVersion == nil {
		return nil
	}
	fmt.Fprintf(w, "Server Version: %s\n", info.ServerVersion.GitVersion)
	if len(info.MeshVersions) == 0 && len(info.MeshUnchecked) > 0 {
		fmt.Fprintln(w, "Istio: not readable with your permissions (see the notes)")
		return nil
	}
	if len(info.MeshVersions) == 0 {
		fmt.Fprintln(w, "Istio: not installed (no sidecar injector or istiod found)")
		return nil
	}
	for _, cp := range info.MeshVersions {
		v := cp.Version
		if v == "" {
			v = "unknown version"
		}
		var extra []string
		if len(cp.Tags) > 0 {
			extra = append(extra, "tags "+strings.Join(cp.Tags, ","))
		}
		switch {
		case cp.Injector != "":
			extra = append(extra, "injector "+cp.Injector)
		case info.injectorsUnknown:
			extra = append(extra, "injector not checked")
		default:
			extra = append(extra, "no injector")
		}
		fmt.Fprintf(w, "Istio Control Plane: %s (revision %s; %s)\n", v, cp.Revision, strings.Join(extra, "; "))
	}
	return nil
}
