package cmd

import (
	"strings"
	"testing"

	"k8s.io/klog/v2"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

// -v works as in kubectl: anywhere on the line, and it turns on client-go's
// logging (verbosity is process-wide, so it is set back afterwards).
func TestVerbosityFlag(t *testing.T) {
	f := fake.New(nil, nil)
	root := NewCmdMesh(f.Options)
	fl := root.PersistentFlags().Lookup("v")
	if fl == nil || fl.Shorthand != "v" || root.PersistentFlags().Lookup("vmodule") == nil {
		t.Fatalf("-v/--v and --vmodule must be root flags, got %v", fl)
	}
	t.Cleanup(func() { _ = fl.Value.Set("0") })
	root.SetArgs([]string{"version", "--client", "-v", "6"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !klog.V(6).Enabled() || klog.V(7).Enabled() {
		t.Errorf("after -v 6: V(6) %v, V(7) %v", klog.V(6).Enabled(), klog.V(7).Enabled())
	}
	if !strings.Contains(f.Out.String(), "Client Version") {
		t.Errorf("version output: %q", f.Out.String())
	}
}
