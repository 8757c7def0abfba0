package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// RestartPodnet rebuilds podnet from this source tree and replaces the
// running lab's podnet with it, leaving the control plane alone: for work
// on the pod network without a full `lab down` and `lab up`. The build
// comes first, so a tree that does not build leaves the old podnet running.
// The pods get new network namespaces, so open connections and running
// captures end.
func RestartPodnet(ctx context.Context, c Config) error {
	closeInheritedFiles()
	if os.Geteuid() != 0 {
		return errors.New("podnet needs root: run the restart as root")
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, "ready")); err != nil {
		return errors.New("no lab is running: start one with `make lab-up`")
	}
	pki, err := loadPKI(filepath.Join(c.StateDir, "pki"))
	if err != nil {
		return err
	}
	bin, err := buildPodnet(ctx, c)
	if err != nil {
		return err
	}
	procs, err := readPIDs(c.StateDir)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Name == "podnet" {
			p.stop(10 * time.Second)
		}
	}
	return runPodnet(ctx, c, pki, bin)
}

// buildPodnet builds podnet into the lab's binary directory.
func buildPodnet(ctx context.Context, c Config) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(c.BinDir, "podnet")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+".new", "./lab/cmd/podnet")
	build.Dir = filepath.Join(root, "test")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building podnet: %w: %s", err, out)
	}
	// Renamed into place: the running podnet's binary is not overwritten.
	return bin, os.Rename(bin+".new", bin)
}

// runPodnet starts podnet and waits until the running workshop pods have a
// network.
func runPodnet(ctx context.Context, c Config, pki *PKI, bin string) error {
	dir := c.PodnetDir()
	_ = os.Remove(podnet.ReadyFile(dir))
	if _, err := (process{Name: "podnet", Bin: bin, Args: []string{
		"--kubeconfig=" + filepath.Join(c.StateDir, "kubeconfig"), "--istiod-ca=" + pki.CA.CertFile,
		"--dir=" + dir, "--nodes=" + strings.Join(NodeNames(), ","),
	}}).start(c.StateDir); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, err := os.Stat(podnet.ReadyFile(dir)); err == nil {
			return true, nil
		}
		procs, _ := readPIDs(c.StateDir)
		for _, p := range procs {
			if p.Name == "podnet" && !p.alive() {
				return false, fmt.Errorf("podnet exited; see %s", filepath.Join(c.StateDir, "logs", "podnet.log"))
			}
		}
		return false, nil
	})
}
