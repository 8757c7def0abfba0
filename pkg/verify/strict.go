package verify

import (
	"fmt"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// StrictWorkload is one PERMISSIVE workload: the plaintext clients STRICT
// would cut off, seen on the wire during the capture.
type StrictWorkload struct {
	Workload string `json:"workload"`
	Mode     string `json:"mode"`
	// Ready: the capture saw the workload and no plaintext client of it.
	Ready   bool           `json:"ready"`
	Clients []StrictClient `json:"clients,omitempty"`
	// Unchecked says why readiness is not known (the wire did not run).
	Unchecked string `json:"unchecked,omitempty"`

	namespace   string
	matchLabels map[string]string
}

// StrictClient is a client STRICT would refuse.
type StrictClient struct {
	Client string `json:"client"`
	Port   int    `json:"port"`
	Why    string `json:"why"`
}

// String is "default/legacy-cron → backend-app:80, no sidecar".
func (c StrictClient) String(dst string) string {
	return fmt.Sprintf("%s → %s:%d, %s", c.Client, dst, c.Port, c.Why)
}

// strictReadiness lists, for each meshed workload that accepts plaintext
// (PERMISSIVE, or a port-level PERMISSIVE), the clients that sent it
// plaintext: those STRICT would cut off. Mesh infrastructure (probes,
// which Istio rewrites, and scrapes) is not counted.
func strictReadiness(inv *inventory, wireSkipped string, edges []Edge) []StrictWorkload {
	var out []StrictWorkload
	for _, w := range inv.workloads {
		r := w.row
		if !r.Meshed() || r.Mesh == MeshGateway || !permissive(r) {
			continue
		}
		sw := StrictWorkload{Workload: r.Name(), Mode: r.MTLS, namespace: r.Namespace, matchLabels: r.MatchLabels}
		if len(r.PortMTLS) > 0 {
			sw.Mode += " (" + strings.Join(r.PortMTLS, ", ") + ")"
		}
		captured := false
		for _, e := range edges {
			if e.dstWorkload != w {
				continue
			}
			captured = true
			if e.Verdict == EdgeUnproven || !e.plaintext() || r.modeForPort(e.Port) == "STRICT" {
				continue
			}
			sw.Clients = append(sw.Clients, StrictClient{Client: e.Src, Port: e.Port, Why: clientWhy(e)})
		}
		switch {
		case wireSkipped != "":
			sw.Unchecked = "the wire was not captured"
		case !captured && len(edges) == 0:
			sw.Unchecked = "no traffic was captured"
		default:
			sw.Ready = len(sw.Clients) == 0
		}
		sort.Slice(sw.Clients, func(i, j int) bool { return sw.Clients[i].Client < sw.Clients[j].Client })
		out = append(out, sw)
	}
	return out
}

func permissive(r WorkloadRow) bool {
	if r.MTLS == "PERMISSIVE" {
		return true
	}
	for _, p := range r.PortMTLS {
		if strings.HasSuffix(p, "=PERMISSIVE") {
			return true
		}
	}
	return false
}

func clientWhy(e Edge) string {
	switch {
	case e.SrcMeshed:
		return "has a sidecar but sends plaintext (check its DestinationRule's tls mode)"
	case strings.HasPrefix(e.Src, "node "):
		return "from the node, not a probe Istio rewrites"
	case strings.HasPrefix(e.Src, "external "):
		return "outside the cluster"
	}
	return "no sidecar"
}

// StrictYAML is the PeerAuthentication to apply for the workloads that
// are ready: one per namespace when all its PERMISSIVE workloads are
// ready, else one per ready workload. Empty when none is ready.
func StrictYAML(res *Result) (string, error) {
	byNS := map[string][]StrictWorkload{}
	var namespaces []string
	for _, s := range res.Strict {
		if _, ok := byNS[s.namespace]; !ok {
			namespaces = append(namespaces, s.namespace)
		}
		byNS[s.namespace] = append(byNS[s.namespace], s)
	}
	sort.Strings(namespaces)
	var docs []string
	for _, ns := range namespaces {
		all := true
		for _, s := range byNS[ns] {
			all = all && s.Ready
		}
		if all {
			d, err := peerAuthentication(ns, "default", nil)
			if err != nil {
				return "", err
			}
			docs = append(docs, d)
			continue
		}
		for _, s := range byNS[ns] {
			if !s.Ready || len(s.matchLabels) == 0 {
				continue
			}
			name := strings.TrimPrefix(s.Workload, ns+"/") + "-strict"
			d, err := peerAuthentication(ns, name, s.matchLabels)
			if err != nil {
				return "", err
			}
			docs = append(docs, d)
		}
	}
	return strings.Join(docs, "---\n"), nil
}

func peerAuthentication(ns, name string, match map[string]string) (string, error) {
	spec := map[string]any{"mtls": map[string]any{"mode": "STRICT"}}
	if len(match) > 0 {
		spec["selector"] = map[string]any{"matchLabels": match}
	}
	obj := map[string]any{
		"apiVersion": "security.istio.io/v1",
		"kind":       "PeerAuthentication",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}
	b, err := yaml.Marshal(obj)
	return string(b), err
}
