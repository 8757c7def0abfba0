// Command podnet gives the lab's workshop pods a real network and real
// traffic until it is stopped (SIGTERM or Ctrl-C), then removes everything
// it created. `lab up` starts it; `lab down` stops it and cleans up after
// it even if it was killed. It needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

func main() {
	var cfg podnet.Config
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "admin kubeconfig of the lab")
	flag.StringVar(&cfg.IstiodCA, "istiod-ca", "", "PEM file that verifies istiod's serving certificate")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for SSH files, pod logs and the ready marker")
	flag.StringVar(&cfg.Node, "node", "node1", "KWOK node whose pods get a network")
	nodes := flag.String("nodes", "", "comma-separated KWOK nodes, in the network plan's order (node1's first); overrides --node")
	flag.DurationVar(&cfg.Interval, "interval", 0, "pause between two frontend calls (default 100ms)")
	flag.Parse()
	if cfg.Kubeconfig == "" || cfg.IstiodCA == "" || cfg.Dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: podnet --kubeconfig FILE --istiod-ca FILE --dir DIR [--node NAME | --nodes NAME,NAME...] [--interval DURATION]")
		os.Exit(2)
	}
	if *nodes != "" {
		cfg.Nodes = strings.Split(*nodes, ",")
	}
	cfg.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := podnet.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "podnet:", err)
		os.Exit(1)
	}
}
