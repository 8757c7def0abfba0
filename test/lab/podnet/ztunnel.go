package podnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
)

// AppZtunnel is the app label of ztunnel's pods (Istio's ztunnel
// DaemonSet). podnet runs the stand-in for a Running ztunnel pod on its
// node in any namespace: its admin endpoint, and HBONE for the node's
// enrolled pods while the pod is Ready.
const AppZtunnel = "ztunnel"

// BypassAnnotation set to "true" on an enrolled workshop pod makes its
// calls skip ztunnel: plaintext straight to the destination's application
// port, traffic that bypasses the mesh (as from a pod whose redirection
// broke, or a host-network client with the pod's address).
const BypassAnnotation = "podnet.kubectl-mesh.io/bypass-mesh"

// ambient is the node's ztunnel state: the namespaces (for their
// enrolment labels), the workload certificates ztunnel holds by identity,
// and the pods it carries by IP.
type ambient struct {
	namespaces corelisters.NamespaceLister

	// waypoints are the waypoint pods of every node, httpRoutes the
	// HTTPRoutes they apply (waypoint.go).
	waypoints  corelisters.PodLister
	httpRoutes cache.GenericLister

	mu       sync.Mutex
	certs    map[string]*istioca.Cert // by SPIFFE ID
	enrolled map[netip.Addr]*pod
}

// initAmbient watches namespaces (enrolment labels) for the ztunnel
// stand-in; h triggers a sync on their changes.
func (d *daemon) initAmbient(kf informers.SharedInformerFactory, h cache.ResourceEventHandler) error {
	inf := kf.Core().V1().Namespaces()
	d.amb = &ambient{namespaces: inf.Lister(), certs: map[string]*istioca.Cert{}, enrolled: map[netip.Addr]*pod{}}
	if _, err := inf.Informer().AddEventHandler(h); err != nil {
		return err
	}
	d.synced = append(d.synced, inf.Informer().HasSynced)
	return nil
}

// wantedAmbient says whether a pod outside the workshop's namespaces gets
// a network: a ztunnel pod anywhere, and workshop pods in a namespace
// enrolled in ambient mode (a second copy of the workshop for the ambient
// story).
func (d *daemon) wantedAmbient(p *corev1.Pod) bool {
	if d.amb == nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
		return false
	}
	if p.Labels["app"] == AppZtunnel || mesh.IsWaypointPod(p) {
		return true
	}
	ns := d.nsLabels(p.Namespace)
	return mesh.NamespaceAmbient(ns) || p.Labels[mesh.LabelDataplaneMode] == mesh.DataplaneAmbient || ns[NetworkLabel] == "true"
}

// NetworkLabel on a namespace gives its workshop pods a network whatever
// their mesh mode: benchmarks that spread many workshop pods over the
// nodes use it; tests keep their namespaces without networks unless asked.
const NetworkLabel = "podnet.kubectl-mesh.io/network"

func (d *daemon) nsLabels(ns string) map[string]string {
	if n, err := d.amb.namespaces.Get(ns); err == nil {
		return n.Labels
	}
	return nil
}

// ztunnelReady says whether a Ready ztunnel pod runs on the node.
func (d *daemon) ztunnelReady() bool {
	zs, _ := d.pods.List(labels.SelectorFromSet(labels.Set{"app": AppZtunnel}))
	return readyZtunnel(zs, "")
}

// readyZtunnel says whether one of zs is a Ready ztunnel pod on node (any
// node for "").
func readyZtunnel(zs []*corev1.Pod, node string) bool {
	for _, z := range zs {
		if z.Status.Phase != corev1.PodRunning || z.DeletionTimestamp != nil || node != "" && z.Spec.NodeName != node {
			continue
		}
		for _, c := range z.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
	}
	return false
}

// captured applies istio-cni's rules: enrolled by label, no sidecar, not
// opted out, not on the host network.
func (d *daemon) captured(kp *corev1.Pod) bool {
	return mesh.AmbientOf(kp, d.nsLabels(kp.Namespace)).Mode == mesh.AmbientCaptured
}

// syncAmbient moves the running workshop pods into or out of ztunnel's
// care, as istio-cni does when a label or ztunnel changes: no restart,
// the pod's traffic is redirected from then on. It returns true when
// something failed and should be retried.
func (d *daemon) syncAmbient(ctx context.Context) bool {
	if d.amb == nil {
		return false
	}
	zt := d.ztunnelReady()
	failed := false
	for _, p := range d.running {
		if p.app == AppZtunnel || p.app == appWaypoint {
			continue
		}
		kp, err := d.pods.Pods(p.namespace).Get(p.name)
		if err != nil {
			continue
		}
		want := zt && d.captured(kp)
		cur := p.hbone.Load()
		switch {
		case want && cur == nil:
			if err := d.startHBONE(ctx, kp, p); err != nil {
				d.cfg.logf("pod %s/%s: ztunnel: %v (retrying)", p.namespace, p.name, err)
				failed = true
			}
		case !want && cur != nil:
			d.stopHBONE(p)
			d.cfg.logf("pod %s/%s: ztunnel no longer carries its traffic", p.namespace, p.name)
		case want:
			cur.bypass.Store(kp.Annotations[BypassAnnotation] == "true")
		}
	}
	return failed
}

// identityCert is ztunnel's certificate for a service account, from
// istiod's CA, reused for every pod of that identity until it has less
// than half its life left.
func (d *daemon) identityCert(ctx context.Context, ns, sa string) (*istioca.Cert, error) {
	id := istioca.SPIFFEID(ns, sa)
	d.amb.mu.Lock()
	c := d.amb.certs[id]
	d.amb.mu.Unlock()
	if c != nil && time.Until(c.Leaf().NotAfter) > c.Leaf().NotAfter.Sub(c.Leaf().NotBefore)/2 {
		return c, nil
	}
	c, err := d.ca.Issue(ctx, ns, sa, 24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("getting the workload certificate of %s from istiod: %w", id, err)
	}
	d.amb.mu.Lock()
	d.amb.certs[id] = c
	d.amb.mu.Unlock()
	return c, nil
}

// startHBONE puts p in ztunnel's care: its identity's certificate, the
// HBONE listener on 15008 in its namespace, and outbound calls as HBONE.
func (d *daemon) startHBONE(ctx context.Context, kp *corev1.Pod, p *pod) error {
	st, err := d.newHBONEState(ctx, p)
	if err != nil {
		return err
	}
	st.bypass.Store(kp.Annotations[BypassAnnotation] == "true")
	if err := d.listenHBONE(p, st); err != nil {
		st.pool.close()
		return err
	}
	p.hbone.Store(st)
	d.amb.mu.Lock()
	d.amb.enrolled[p.net.IP] = p
	d.amb.mu.Unlock()
	mode := "ztunnel carries its traffic as HBONE"
	if st.bypass.Load() {
		mode = "inbound HBONE; its own calls bypass ztunnel (" + BypassAnnotation + ")"
	}
	p.appLog.Printf("ambient: %s (%s, port %d)", mode, st.id, HBONEPort)
	d.cfg.logf("pod %s/%s: ambient, %s (%s)", p.namespace, p.name, mode, st.id)
	return nil
}

// newHBONEState is HBONE for p's identity: its certificate and trust
// root, and an empty pool.
func (d *daemon) newHBONEState(ctx context.Context, p *pod) (*hboneState, error) {
	c, err := d.identityCert(ctx, p.namespace, p.sa)
	if err != nil {
		return nil, err
	}
	st := &hboneState{id: istioca.SPIFFEID(p.namespace, p.sa), roots: x509.NewCertPool(), pool: d.newPool()}
	st.roots.AddCert(c.Chain[len(c.Chain)-1])
	st.cert = tls.Certificate{PrivateKey: c.Key, Leaf: c.Leaf()}
	for _, x := range c.Chain {
		st.cert.Certificate = append(st.cert.Certificate, x.Raw)
	}
	return st, nil
}

// newPool is an HBONE pool that dropPeer reaches.
func (d *daemon) newPool() *hbonePool {
	pl := newHBONEPool()
	d.hbonePools.Store(pl, struct{}{})
	return pl
}

// dropPeer closes every pooled HBONE connection to a pod that went away,
// as ztunnel drops a workload's connections once istiod removes it: its
// address may go to a new pod, which must not receive stale keepalives.
func (d *daemon) dropPeer(ip string) {
	if ip == "" {
		return
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(HBONEPort))
	d.hbonePools.Range(func(k, _ any) bool {
		pl := k.(*hbonePool)
		if pl.isClosed() {
			d.hbonePools.Delete(pl)
		} else {
			pl.dropTo(addr)
		}
		return true
	})
}

// peerGone is an informer handler that calls dropPeer for pods deleted or
// on their way out.
func (d *daemon) peerGone() cache.ResourceEventHandler {
	ipOf := func(obj any) string {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			return p.Status.PodIP
		}
		return ""
	}
	return cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(oldObj, newObj any) {
			if p, ok := newObj.(*corev1.Pod); ok && (p.DeletionTimestamp != nil || p.Status.PodIP != ipOf(oldObj)) {
				d.dropPeer(ipOf(oldObj))
			}
		},
		DeleteFunc: func(obj any) { d.dropPeer(ipOf(obj)) },
	}
}

// stopHBONE takes p out of ztunnel's care.
func (d *daemon) stopHBONE(p *pod) {
	st := p.hbone.Swap(nil)
	if st == nil {
		return
	}
	d.amb.mu.Lock()
	if d.amb.enrolled[p.net.IP] == p {
		delete(d.amb.enrolled, p.net.IP)
	}
	d.amb.mu.Unlock()
	st.close()
}

// hboneDest is the identity of the HBONE endpoint of a target pod, or ""
// when no ztunnel carries that pod (plaintext to it): a pod of this node
// that this daemon carries, or a pod of another node that istio-cni would
// capture while a Ready ztunnel runs there (that node's daemon serves its
// 15008), as ztunnel learns from istiod that a workload speaks HBONE.
func (d *daemon) hboneDest(t Target) string {
	if d.amb == nil {
		return ""
	}
	d.amb.mu.Lock()
	p := d.amb.enrolled[t.IP]
	d.amb.mu.Unlock()
	if p != nil {
		if st := p.hbone.Load(); st != nil {
			return st.id
		}
	}
	if d.endpointPods == nil || t.Pod == "" {
		return ""
	}
	kp, err := d.endpointPods.Pods(t.Namespace).Get(t.Pod)
	if err != nil || kp.Spec.NodeName == d.cfg.Node || kp.Status.PodIP != t.IP.String() || !d.captured(kp) {
		return ""
	}
	zs, _ := d.endpointPods.List(labels.SelectorFromSet(labels.Set{"app": AppZtunnel}))
	if !readyZtunnel(zs, kp.Spec.NodeName) {
		return ""
	}
	sa := kp.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return istioca.SPIFFEID(kp.Namespace, sa)
}

// startZtunnel is a ztunnel pod: no network namespace of its own (its
// HBONE sockets live in the pods' namespaces, in-pod redirection), an
// admin endpoint whose /config_dump KWOK's port-forward serves as the
// pod's port 15000.
func (d *daemon) startZtunnel(ctx context.Context, kp *corev1.Pod, addr netip.Addr) (_ *pod, err error) {
	p := &pod{namespace: kp.Namespace, name: kp.Name, uid: string(kp.UID), labels: kp.Labels, app: AppZtunnel,
		net: podNetFor(kp.Namespace, kp.Name, string(kp.UID), addr), pool: newUpstreamPool()}
	defer func() {
		if err != nil {
			d.stop(p)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return p, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		b, err := d.ztunnelDump(kp.Spec.NodeName)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	p.closers = append(p.closers, func() { _ = srv.Close() })
	spec := map[string]any{"forwards": []any{map[string]any{
		"ports":  []any{int64(certs.DefaultAdminPort)},
		"target": map[string]any{"address": "127.0.0.1", "port": int64(ln.Addr().(*net.TCPAddr).Port)},
	}}}
	if err := d.applyKwok(ctx, kwokPortForwards, kp, p, spec); err != nil {
		return p, err
	}
	d.cfg.logf("pod %s/%s: ztunnel, admin /config_dump on port %d via KWOK port-forward (%s)", p.namespace, p.name, certs.DefaultAdminPort, ln.Addr())
	return p, nil
}

// Shapes of ztunnel's admin /config_dump (ztunnel src/admin.rs, camelCase
// since Istio 1.22): PEM text base64-encoded, serials in decimal, times
// RFC 3339 in whole seconds.
type (
	ztunnelDump struct {
		Workloads    []ztunnelWorkload `json:"workloads"`
		Services     []any             `json:"services"`
		Policies     []any             `json:"policies"`
		Certificates []ztunnelCerts    `json:"certificates"`
	}
	ztunnelWorkload struct {
		UID            string   `json:"uid"`
		WorkloadIPs    []string `json:"workloadIps"`
		Protocol       string   `json:"protocol"`
		Name           string   `json:"name"`
		Namespace      string   `json:"namespace"`
		ServiceAccount string   `json:"serviceAccount"`
		TrustDomain    string   `json:"trustDomain"`
		Node           string   `json:"node"`
		Status         string   `json:"status"`
	}
	ztunnelCerts struct {
		Identity  string       `json:"identity"`
		State     string       `json:"state"`
		CertChain []ztunnelPEM `json:"certChain"`
		RootCerts []ztunnelPEM `json:"rootCerts"`
	}
	ztunnelPEM struct {
		PEM            string `json:"pem"`
		SerialNumber   string `json:"serialNumber"`
		ValidFrom      string `json:"validFrom"`
		ExpirationTime string `json:"expirationTime"`
	}
)

// ztunnelDump is the node's ztunnel config_dump: the enrolled pods as
// workloads and the certificates of their identities, sorted by identity
// as ztunnel sorts them.
func (d *daemon) ztunnelDump(node string) ([]byte, error) {
	if d.amb == nil {
		return nil, errors.New("ambient mode is off in this podnet")
	}
	d.amb.mu.Lock()
	dump := ztunnelDump{Workloads: []ztunnelWorkload{}, Services: []any{}, Policies: []any{}, Certificates: []ztunnelCerts{}}
	ids := map[string]bool{}
	for ip, p := range d.amb.enrolled {
		dump.Workloads = append(dump.Workloads, ztunnelWorkload{
			UID: "Kubernetes//Pod/" + p.namespace + "/" + p.name, WorkloadIPs: []string{ip.String()}, Protocol: "HBONE",
			Name: p.name, Namespace: p.namespace, ServiceAccount: p.sa, TrustDomain: istioca.DefaultTrustDomain, Node: node, Status: "Healthy",
		})
		ids[istioca.SPIFFEID(p.namespace, p.sa)] = true
	}
	for id := range ids {
		e := ztunnelCerts{Identity: id, State: certs.ZtunnelInitializing, CertChain: []ztunnelPEM{}, RootCerts: []ztunnelPEM{}}
		if c := d.amb.certs[id]; c != nil {
			e.State = certs.ZtunnelAvailable
			// Istio's CA returns the chain with its root last: ztunnel
			// keeps the root apart.
			for _, x := range c.Chain[:len(c.Chain)-1] {
				e.CertChain = append(e.CertChain, ztunnelCertOf(x))
			}
			e.RootCerts = append(e.RootCerts, ztunnelCertOf(c.Chain[len(c.Chain)-1]))
		}
		dump.Certificates = append(dump.Certificates, e)
	}
	d.amb.mu.Unlock()
	sort.Slice(dump.Workloads, func(i, j int) bool { return dump.Workloads[i].UID < dump.Workloads[j].UID })
	sort.Slice(dump.Certificates, func(i, j int) bool { return dump.Certificates[i].Identity < dump.Certificates[j].Identity })
	return json.MarshalIndent(dump, "", "  ")
}

func ztunnelCertOf(c *x509.Certificate) ztunnelPEM {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	return ztunnelPEM{
		PEM: base64.StdEncoding.EncodeToString(p), SerialNumber: c.SerialNumber.String(),
		ValidFrom: c.NotBefore.UTC().Format(time.RFC3339), ExpirationTime: c.NotAfter.UTC().Format(time.RFC3339),
	}
}
