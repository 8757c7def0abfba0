package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

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
	for _, name := range []string{"tcpdump", "ip", "bridge"} {
		bin, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("the node exec shims need %s: %w", name, err)
		}
		// Absolute paths: the shim directory is first on PATH, so a bare
		// name would find the shim again.
		script := fmt.Sprintf("#!/bin/sh\n# Written by the lab: %s in node %s's network namespace.\nexec %s netns exec %s %s \"$@\"\n",
			name, NodeName, ipBin, podnet.NodeNS, bin)
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
			// capture pods, in every namespace; KWOK serves only node1.
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
