package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// The node exec shims pick the node from the first pod IP in their
// arguments; echo stands in for ip, so the output is the command the shim
// would run.
func TestNodeExecShim(t *testing.T) {
	plan, err := podnet.Plan(NodeNames()...)
	if err != nil {
		t.Fatal(err)
	}
	echo, err := exec.LookPath("echo")
	if err != nil {
		t.Fatal("echo is not on PATH: coreutils are needed")
	}
	dir := t.TempDir()
	for _, name := range []string{"ip", "bridge", "tcpdump"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(nodeExecShim(name, "/bin/"+name, echo, plan)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"ip", "-o", "route", "get", "10.245.0.1"}, "netns exec kml-node2 /bin/ip -o route get 10.245.0.1"},
		{[]string{"ip", "neigh", "show", "to", "10.244.0.12"}, "netns exec kml-node /bin/ip neigh show to 10.244.0.12"},
		{[]string{"ip", "-o", "link"}, "netns exec kml-node /bin/ip -o link"},
		{[]string{"bridge", "fdb", "show"}, "netns exec kml-node /bin/bridge fdb show\nnetns exec kml-node2 /bin/bridge fdb show"},
		{[]string{"tcpdump", "-U", "-w", "-", "-i", "kml0a1b2c3d", "(host 10.245.0.3 or host 10.245.0.4) and (not host 10.244.0.2)"},
			"netns exec kml-node2 /bin/tcpdump -U -w - -i kml0a1b2c3d (host 10.245.0.3 or host 10.245.0.4) and (not host 10.244.0.2)"},
		{[]string{"tcpdump", "-i", "any", "host 10.244.1.9 and not host 10.245.0.3"}, "netns exec kml-node /bin/tcpdump -i any host 10.244.1.9 and not host 10.245.0.3"},
		{[]string{"tcpdump", "-i", "any", "host 10.0.0.10"}, "netns exec kml-node /bin/tcpdump -i any host 10.0.0.10"},
	} {
		out, err := exec.Command(filepath.Join(dir, tc.argv[0]), tc.argv[1:]...).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("%q: %v\n%s\nwant\n%s", tc.argv, err, got, tc.want)
		}
	}
}
