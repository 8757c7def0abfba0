package sniff

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// Istio's annotations that narrow which inbound ports the sidecar takes.
const (
	annotationIncludeInbound = "traffic.sidecar.istio.io/includeInboundPorts"
	annotationExcludeInbound = "traffic.sidecar.istio.io/excludeInboundPorts"
)

// NewPodContext gathers what the cluster says about the captured pods, for
// the policy's pod-context, kubelet-probe and mesh-bypass rules. The list
// of the other pods of the namespace (to know which peers run a sidecar,
// or are enrolled in ambient mode like the captured pods) is best effort:
// without it, outbound flows caught mid-stream stay unproven and no bypass
// is named; without the namespace, only pod labels enrol.
func NewPodContext(ctx context.Context, kube kubernetes.Interface, pods []*corev1.Pod) *PodContext {
	pc := &PodContext{Sidecar: len(pods) > 0, Ambient: len(pods) > 0}
	pc.ProbeRequests = map[uint16][]string{}
	var nsLabels map[string]string
	if kube != nil && len(pods) > 0 {
		// Best effort: without the namespace, pod labels alone enrol.
		if ns, err := kube.CoreV1().Namespaces().Get(ctx, pods[0].Namespace, metav1.GetOptions{}); err == nil {
			nsLabels = ns.Labels
		}
	}
	for _, pod := range pods {
		pc.Ambient = pc.Ambient && mesh.AmbientOf(pod, nsLabels).Mode == mesh.AmbientCaptured
		pc.IPs = append(pc.IPs, podAddrs(pod)...)
		if a, err := netip.ParseAddr(pod.Status.HostIP); err == nil {
			pc.NodeIP = a
		}
		pc.Sidecar = pc.Sidecar && mesh.HasSidecar(pod)
		probeRequests(pod, pc.ProbeRequests)
		pc.ExcludedInbound = append(pc.ExcludedInbound, excludedInbound(pod)...)
	}
	if !pc.Sidecar && !pc.Ambient || kube == nil || len(pods) == 0 {
		return pc
	}
	if pc.Ambient {
		pc.LookupAmbientPeer = ambientPeerLookup(ctx, kube, pods[0].Namespace)
	}
	list, err := kube.CoreV1().Pods(pods[0].Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return pc
	}
	for i := range list.Items {
		p := &list.Items[i]
		if pc.Sidecar && mesh.HasSidecar(p) && !p.Spec.HostNetwork {
			pc.MeshedPeers = append(pc.MeshedPeers, podAddrs(p)...)
		}
		if pc.Ambient && mesh.AmbientOf(p, nsLabels).Mode == mesh.AmbientCaptured && p.DeletionTimestamp == nil {
			for _, a := range podAddrs(p) {
				if !slices.Contains(pc.IPs, a) {
					if pc.AmbientPeers == nil {
						pc.AmbientPeers = map[netip.Addr]string{}
					}
					pc.AmbientPeers[a] = p.Namespace + "/" + p.Name
				}
			}
		}
	}
	return pc
}

func podAddrs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// probeRequests are what the kubelet sends for the pod's probes, by port
// (named ports resolved against the container's ports): "GET PATH" for an
// HTTP probe, ProbeTCP for a TCP one, ProbeGRPC for a gRPC one.
func probeRequests(pod *corev1.Pod, out map[uint16][]string) {
	cs := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range cs {
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if pr == nil {
				continue
			}
			var ports []uint16
			var what string
			switch {
			case pr.HTTPGet != nil:
				ports, what = resolvePort(c, pr.HTTPGet.Port.IntValue(), pr.HTTPGet.Port.StrVal), "GET "+cmp.Or(pr.HTTPGet.Path, "/")
			case pr.TCPSocket != nil:
				ports, what = resolvePort(c, pr.TCPSocket.Port.IntValue(), pr.TCPSocket.Port.StrVal), ProbeTCP
			case pr.GRPC != nil:
				ports, what = []uint16{uint16(pr.GRPC.Port)}, ProbeGRPC
			}
			for _, p := range ports {
				if !slices.Contains(out[p], what) {
					out[p] = append(out[p], what)
				}
			}
		}
	}
}

func resolvePort(c corev1.Container, n int, name string) []uint16 {
	if n > 0 && n < 65536 {
		return []uint16{uint16(n)}
	}
	for _, p := range c.Ports {
		if p.Name == name {
			return []uint16{uint16(p.ContainerPort)}
		}
	}
	return nil
}

// excludedInbound lists ports the sidecar does not take inbound: those
// excluded, and, when includeInboundPorts is a list rather than "*", every
// port of the pod's containers not in it.
func excludedInbound(pod *corev1.Pod) []uint16 {
	out := parsePorts(pod.Annotations[annotationExcludeInbound])
	inc, ok := pod.Annotations[annotationIncludeInbound]
	if !ok || strings.TrimSpace(inc) == "*" {
		return out
	}
	keep := map[uint16]bool{}
	for _, p := range parsePorts(inc) {
		keep[p] = true
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if !keep[uint16(p.ContainerPort)] {
				out = append(out, uint16(p.ContainerPort))
			}
		}
	}
	return out
}

func parsePorts(s string) []uint16 {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16); err == nil {
			out = append(out, uint16(n))
		}
	}
	return out
}

// maxPeerLookups caps the API calls one capture spends naming bypass
// peers of other namespaces.
const maxPeerLookups = 32

// ambientPeerLookup finds the enrolled pod of another namespace than own
// at an address: one pod LIST by status.podIP (and one namespace GET) per
// address, remembered, at most maxPeerLookups, each within 2 s; a refused
// list stops the lookups. The API server matches status.podIP against a
// pod's first address only, so a dual-stack peer is found by that one.
func ambientPeerLookup(ctx context.Context, kube kubernetes.Interface, own string) func(netip.Addr) string {
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	nsLabels := map[string]map[string]string{}
	stopped := false
	return func(a netip.Addr) string {
		mu.Lock()
		defer mu.Unlock()
		if name, ok := seen[a]; ok || stopped || len(seen) >= maxPeerLookups {
			return name
		}
		seen[a] = ""
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		list, err := kube.CoreV1().Pods(metav1.NamespaceAll).List(lctx, metav1.ListOptions{FieldSelector: "status.podIP=" + a.String()})
		if err != nil {
			stopped = apierrors.IsForbidden(err)
			return ""
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Namespace == own || p.DeletionTimestamp != nil || !slices.Contains(podAddrs(p), a) {
				continue
			}
			labels, ok := nsLabels[p.Namespace]
			if !ok {
				if ns, err := kube.CoreV1().Namespaces().Get(lctx, p.Namespace, metav1.GetOptions{}); err == nil {
					labels = ns.Labels
				}
				nsLabels[p.Namespace] = labels
			}
			if mesh.AmbientOf(p, labels).Mode == mesh.AmbientCaptured {
				seen[a] = p.Namespace + "/" + p.Name
			}
		}
		return seen[a]
	}
}
