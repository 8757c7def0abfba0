package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// Node2Name is the lab's second KWOK node. It is tainted with Node2Taint so
// that only pods that ask for it land there (BackendV2YAML does): every
// other pod stays on node1, as before node2 existed. Its pod subnet is its
// spec.podCIDR, from which KWOK hands out its pods' IPs, routed from node1
// over the nodes' LAN (podnet.Plan).
const Node2Name = "node2"

// Node2Taint keeps pods off node2 unless they tolerate it.
const Node2Taint = "lab.kubectl-mesh.io/node2"

// onNode2 pins a workshop Deployment's pods (the pod spec indented as
// workloadYAML writes it) to node2.
func onNode2(deployment string) string {
	const anchor = "\n    spec:\n"
	return strings.Replace(deployment, anchor, anchor+fmt.Sprintf(`      nodeSelector: {kubernetes.io/hostname: %s}
      tolerations:
      - {key: %s, operator: Exists, effect: NoSchedule}
`, Node2Name, Node2Taint), 1)
}

// NodeNames lists the lab's nodes in podnet's plan order.
func NodeNames() []string { return []string{NodeName, Node2Name} }

// node2YAML is node2 as the plan lays it out.
func node2YAML() (string, error) {
	plan, err := podnet.Plan(NodeNames()...)
	if err != nil {
		return "", err
	}
	n := plan[1]
	return fmt.Sprintf(`
apiVersion: v1
kind: Node
metadata:
  name: %[1]s
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: %[1]s
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/worker: ""
    type: kwok
spec:
  podCIDR: %[2]s
  podCIDRs: [%[2]s]
  taints:
  - {key: %[3]s, value: "true", effect: NoSchedule}
status:
  addresses:
  - {type: InternalIP, address: "%[4]s"}
  - {type: InternalDNS, address: localhost}
  - {type: Hostname, address: %[1]s}
  allocatable: {cpu: "64", memory: 256Gi, pods: "500"}
  capacity: {cpu: "64", memory: 256Gi, pods: "500"}
`, n.Name, n.PodCIDR, Node2Taint, n.IP), nil
}

// closeInheritedFiles marks every file descriptor above stderr that this
// process inherited close-on-exec, so the daemons it starts do not keep
// them open: `flock /tmp/lab.lock go test` or `flock … make lab-up` hands
// the lock down this way, and a daemon holding it would keep the lock
// taken until `lab down`.
func closeInheritedFiles() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
