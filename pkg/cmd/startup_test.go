package cmd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// dialCounter is an API server address that only counts the connections
// made to it and hangs up.
type dialCounter struct {
	ln    net.Listener
	dials atomic.Int32
}

func newDialCounter(t *testing.T) *dialCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dialCounter{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.dials.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return d
}

// Help, the client version and completion scripts must work without a
// cluster: no client is built, nothing is dialled, no discovery cache is
// written. The last case shows the check would notice a dial.
func TestStartupTouchesNoNetwork(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		kubeconfig string // "listener" (default), "missing" or "none"
		wantDial   bool
		wantCode   int
		wantOut    string // a prefix of stdout
	}{
		{name: "help flag", args: []string{"--help"}, wantOut: "kubectl mesh makes the everyday operations"},
		{name: "help command", args: []string{"help", "version"}, wantOut: "Print the plugin, Kubernetes and Istio control-plane versions"},
		{name: "no arguments", args: nil, wantOut: "kubectl mesh makes the everyday operations"},
		{name: "client version", args: []string{"version", "--client"}, wantOut: "Client Version: "},
		{name: "client version json", args: []string{"version", "--client", "-o", "json"}, wantOut: "{\n  \"clientVersion\""},
		{name: "client version, kubeconfig missing", args: []string{"version", "--client"}, kubeconfig: "missing", wantOut: "Client Version: "},
		{name: "client version, no kubeconfig at all", args: []string{"version", "--client"}, kubeconfig: "none", wantOut: "Client Version: "},
		{name: "completion script", args: []string{"completion", "bash"}, wantOut: "# bash completion V2 for kubectl-mesh"},
		{name: "flag completion", args: []string{"__complete", "version", "-o", ""}, wantOut: "json\nyaml\n:4\n"},
		{name: "server version dials", args: []string{"version", "--request-timeout=1s"}, wantDial: true, wantCode: 1, wantOut: "Client Version: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDialCounter(t)
			home := t.TempDir()
			t.Setenv("HOME", home)
			kubeconfig := filepath.Join(t.TempDir(), "config")
			cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: "t"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, d.ln.Addr())
			if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			args := tt.args
			switch tt.kubeconfig {
			case "":
				t.Setenv("KUBECONFIG", kubeconfig)
			case "missing":
				t.Setenv("KUBECONFIG", kubeconfig)
				args = append([]string{"--kubeconfig", filepath.Join(home, "does-not-exist")}, args...)
			case "none":
				t.Setenv("KUBECONFIG", "")
			}
			var out, errOut bytes.Buffer
			code := Main(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &out, ErrOut: &errOut}, args)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr: %s", code, tt.wantCode, errOut.String())
			}
			if !strings.HasPrefix(out.String(), tt.wantOut) {
				t.Errorf("stdout starts %q, want %q", firstLine(out.String()), tt.wantOut)
			}
			if got := d.dials.Load() > 0; got != tt.wantDial {
				t.Errorf("dialled the API server = %v, want %v", got, tt.wantDial)
			}
			if tt.wantDial {
				return
			}
			entries, err := os.ReadDir(home)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				t.Errorf("wrote %s in $HOME; no client should have been built", e.Name())
			}
		})
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
