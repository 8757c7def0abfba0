// Command lab starts and stops the local kubectl-mesh lab.
//
//	lab up     start (or reuse) the lab and print how to use it
//	lab down   stop every lab process and remove the lab's state
//	lab status say whether a lab is running
//	lab restart-podnet  rebuild podnet and replace the running lab's one
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: lab up|down|status|restart-podnet")
		os.Exit(2)
	}
	cfg, err := lab.DefaultConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch os.Args[1] {
	case "up":
		l, err := lab.Up(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		fmt.Printf(`The lab is running: Kubernetes %s, Istio %s, KWOK nodes %s (workshop pods on %s; backend v2 on %s).
Use it with:
  export KUBECONFIG=%s
  kubectl get pods -A          # or %s/kubectl-%s
  kubectl mesh version
  kubectl mesh sniff backend-app --ssh-config %s
Stop it with: make lab-down
`, lab.KubeVersion, lab.IstioVersion, strings.Join(lab.NodeNames(), ", "), lab.NodeName, lab.Node2Name, l.Kubeconfig, cfg.BinDir, lab.KubeVersion, filepath.Join(cfg.PodnetDir(), "ssh", "config"))
	case "down":
		if err := lab.Down(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		fmt.Println("The lab is stopped and its state removed.")
	case "status":
		if lab.Running(ctx, cfg) {
			fmt.Printf("running (KUBECONFIG=%s/kubeconfig)\n", cfg.StateDir)
			return
		}
		fmt.Println("not running")
		os.Exit(3)
	case "restart-podnet":
		if err := lab.RestartPodnet(ctx, cfg); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		fmt.Println("podnet restarted with this tree's code.")
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: use up, down, status or restart-podnet\n", os.Args[1])
		os.Exit(2)
	}
}
