package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// CaptureContainer is the container of `kubectl mesh sniff --via pod`'s
// capture pod (pkg/sniff.CapturePod) whose exec the lab serves on the node.
const CaptureContainer = "sniff"

// NodeExecName is the KWOK ClusterExec that serves it.
const NodeExecName = "kubectl-mesh-node-exec"

// NodeExecDir holds the shims that run tcpdump, ip and bridge in the
// node's network namespace.
func (c Config) NodeExecDir() string { return filepath.Join(c.StateDir, "node-exec", "bin") }

// EnsureNodeExec makes exec into a capture pod on the lab's node behave as
// on a real node. KWOK serves such an exec by running the command on this
// host, in the root network namespace, while node1's traffic lives in
// podnet's node namespace: a ClusterExec puts shims first on the command's
// PATH, and each shim runs the real binary in the node namespace. Packets
// then really come from the node, through KWOK's exec stream and the API
// server, to the plugin. It is idempotent: lab up runs it, and tests run it
// against a lab started before it existed.
//
// One ClusterExec serves every node, and KWOK tells the command nothing of
// the pod: the shims find the node from the pod IP in their arguments (the
// IP sniff's discovery asks the route and neighbour of, the host in
// tcpdump's filter), whose pod subnet names the node; bridge, asked
// without one, lists every node's FDB (pod MACs are unique).
func (l *Lab) EnsureNodeExec(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("exec on the lab's node needs the pod network, which needs root")
	}
	dir := l.NodeExecDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("the node exec shims need iproute2: %w", err)
	}
	// What the capture pod's exec runs that must see the node's network:
	// tcpdump, and ip and bridge for finding the pod's veth. timeout and sh
	// are started by KWOK itself from its own PATH and are harmless in the
	// host's namespace.
	plan, err := podnet.Plan(NodeNames()...)
	if err != nil {
		return err
	}
	for _, name := range []string{"tcpdump", "ip", "bridge"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("the node exec shims need %s: %w", name, err)
		}
		script := nodeExecShim(name, bin, ipBin, plan)
		// Replaced by rename: a capture may be running the old one.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	path := dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "ClusterExec",
		"metadata":   map[string]any{"name": NodeExecName},
		"spec": map[string]any{
			// No label selector exists: the container's name picks the
			// capture pods, in every namespace and on every node.
			"execs": []any{map[string]any{
				"containers": []any{CaptureContainer},
				"local":      map[string]any{"envs": []any{map[string]any{"name": "PATH", "value": path}}},
			}},
		},
	}}
	dyn, err := dynamic.NewForConfig(l.RESTConfig)
	if err != nil {
		return err
	}
	if _, err := dyn.Resource(schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "clusterexecs"}).Apply(ctx, NodeExecName, obj, metav1.ApplyOptions{FieldManager: "kubectl-mesh-lab", Force: true}); err != nil {
		return fmt.Errorf("applying the KWOK ClusterExec %s: %w", NodeExecName, err)
	}
	return nil
}

// nodeExecShim is the script that runs bin in the network namespace of the
// node whose pod subnet holds the first IPv4 address in its arguments
// (node1's without one); for bridge without an IP, in every node's, one
// after the other. Paths are absolute: the shim directory is first on PATH,
// so a bare name would find the shim again.
func nodeExecShim(name, bin, ipBin string, plan []podnet.NodeNet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# Written by the lab: %s in the network namespace of the node whose pods it is asked about.\n", name)
	b.WriteString("first=$(printf '%s\\n' \"$@\" | grep -oE '[0-9]{1,3}([.][0-9]{1,3}){3}' | head -n 1)\nns=\ncase \"$first\" in\n")
	for _, n := range plan {
		// The pod subnets are /16s: their first two octets tell them apart.
		o := n.PodCIDR.Addr().As4()
		fmt.Fprintf(&b, "%d.%d.*) ns=%s ;;\n", o[0], o[1], n.NS)
	}
	b.WriteString("esac\n")
	if name == "bridge" {
		b.WriteString("if [ -z \"$ns\" ]; then\n  rc=0\n  for n in")
		for _, n := range plan {
			b.WriteString(" " + n.NS)
		}
		fmt.Fprintf(&b, "; do %s netns exec \"$n\" %s \"$@\" || rc=$?; done\n  exit $rc\nfi\n", ipBin, bin)
	}
	fmt.Fprintf(&b, "exec %s netns exec \"${ns:-%s}\" %s \"$@\"\n", ipBin, plan[0].NS, bin)
	return b.String()
}
