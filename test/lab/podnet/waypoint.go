package podnet

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// The waypoint stand-in: for each Running waypoint pod istiod deploys
// (pods labelled with the istio-waypoint class), an HBONE listener on its
// 15008 that takes CONNECT to a Service's address, routes each HTTP
// request in the stream (L7, as a waypoint's Envoy does) by the HTTPRoutes
// whose parent is that Service, else by the mesh's VirtualServices, and
// sends it on as HBONE from the waypoint's own identity to the chosen pod.
// A captured pod's calls to a Service that a waypoint serves
// (istio.io/use-waypoint on the Service, else its namespace) go to that
// waypoint instead of straight to an endpoint.

const appWaypoint = "waypoint"

// UpstreamHeader is the lab's own response header in which the waypoint
// names the pod that answered ("NAMESPACE/POD IP VERSION"), so the
// frontend's log can show it as it does for sidecars. Envoy adds no such
// header; nothing outside the lab reads it.
const UpstreamHeader = "X-Podnet-Upstream"

// httpRoutes are the Gateway API's HTTPRoutes: a waypoint applies those
// whose parent is a Service it serves (GAMMA).
var httpRoutes = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// initWaypoints watches the waypoint pods of every node (this node's are
// served here, and every node's are where captured pods send their calls)
// and the HTTPRoutes the waypoints apply.
func (d *daemon) initWaypoints(h cache.ResourceEventHandler) ([]starter, error) {
	f := informers.NewSharedInformerFactoryWithOptions(d.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = mesh.LabelGatewayClass + "=" + mesh.WaypointClass
	}))
	inf := f.Core().V1().Pods()
	d.amb.waypoints = inf.Lister()
	if _, err := inf.Informer().AddEventHandler(h); err != nil {
		return nil, err
	}
	if _, err := inf.Informer().AddEventHandler(d.peerGone()); err != nil {
		return nil, err
	}
	df := dynamicinformer.NewDynamicSharedInformerFactory(d.dyn, 0)
	routes := df.ForResource(httpRoutes)
	d.amb.httpRoutes = routes.Lister()
	d.synced = append(d.synced, inf.Informer().HasSynced, routes.Informer().HasSynced)
	return []starter{f, df}, nil
}

// localWaypoints are the waypoint pods scheduled to this node.
func (d *daemon) localWaypoints() []*corev1.Pod {
	if d.amb == nil || d.amb.waypoints == nil {
		return nil
	}
	all, _ := d.amb.waypoints.List(labels.Everything())
	var out []*corev1.Pod
	for _, p := range all {
		if p.Spec.NodeName == d.cfg.Node {
			out = append(out, p)
		}
	}
	return out
}

// startWaypoint is a waypoint pod: its network, its identity's
// certificate from istiod's CA in Envoy's admin config_dump (port 15000),
// the proxy's log for `kubectl logs`, and the HBONE listener that routes.
func (d *daemon) startWaypoint(ctx context.Context, kp *corev1.Pod, addr netip.Addr) (_ *pod, err error) {
	p := &pod{namespace: kp.Namespace, name: kp.Name, uid: string(kp.UID), labels: kp.Labels, app: appWaypoint,
		sa: kp.Spec.ServiceAccountName, net: podNetFor(kp.Namespace, kp.Name, string(kp.UID), addr), pool: newUpstreamPool()}
	if p.sa == "" {
		p.sa = "default"
	}
	defer func() {
		if err != nil {
			d.stop(p)
		}
	}()
	if p.proxyLog, err = openCRILog(logFile(d.cfg.Dir, p.namespace, p.name, ProxyContainer)); err != nil {
		return p, err
	}
	p.appLog = p.proxyLog
	p.closers = append(p.closers, func() { p.proxyLog.Close() })
	if err := p.net.add(); err != nil {
		return p, err
	}
	p.closers = append(p.closers, p.net.remove)
	if err := d.applyKwok(ctx, kwokLogs, kp, p, logsSpec(map[string]string{ProxyContainer: p.proxyLog.path})); err != nil {
		return p, err
	}
	// Envoy's admin config_dump with the waypoint's certificate, as for a
	// sidecar; its HBONE uses the same certificate.
	if err := d.startProxy(ctx, kp, p); err != nil {
		return p, err
	}
	st := &hboneState{id: istioca.SPIFFEID(p.namespace, p.sa), cert: p.cert, roots: p.roots, pool: d.newPool()}
	hostPort := net.JoinHostPort(p.net.IP.String(), strconv.Itoa(HBONEPort))
	if err := netlab.InNetNS(p.net.NS, func() (err error) {
		st.ln, err = net.Listen("tcp", hostPort)
		return err
	}); err != nil {
		st.close()
		return p, fmt.Errorf("listening for HBONE on %s in %s: %w", hostPort, p.net.NS, err)
	}
	st.srv = serveHBONE(st.ln, hboneServerTLS(st.cert, st.roots), func(target string) error {
		_, _, err := d.serviceAt(target)
		return err
	}, func(ctx context.Context, target string) (net.Conn, error) {
		svc, port, err := d.serviceAt(target)
		if err != nil {
			return nil, err
		}
		// The stream is served as HTTP here, request by request.
		in, out := net.Pipe()
		go d.waypointServe(p, st, svc, port, out)
		return in, nil
	}, p.proxyLog.Printf)
	p.hbone.Store(st)
	p.proxyLog.Printf("waypoint: HBONE on %s as %s; routes each request by the Service's HTTPRoutes, else the mesh's VirtualServices", hostPort, st.id)
	d.cfg.logf("pod %s/%s: waypoint in %s, HBONE on %s (%s)", p.namespace, p.name, p.net.NS, hostPort, st.id)
	return p, nil
}

// serviceAt is the Service whose cluster IP and port target (IP:port) is:
// a waypoint takes traffic addressed to the Services it serves.
func (d *daemon) serviceAt(target string) (*corev1.Service, int, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return nil, 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return nil, 0, err
	}
	svcs, _ := d.services.List(labels.Everything())
	for _, s := range svcs {
		if s.Spec.ClusterIP != host {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if int(sp.Port) == n {
				return s, n, nil
			}
		}
	}
	return nil, 0, fmt.Errorf("CONNECT to %s: no Service has that address and port", target)
}

// waypointServe reads HTTP requests from one CONNECT stream to svc:port,
// routes each by the Service's HTTPRoutes, else the mesh's
// VirtualServices, and writes the answers.
func (d *daemon) waypointServe(p *pod, st *hboneState, svc *corev1.Service, port int, conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	host := svc.Name + "." + svc.Namespace + ".svc." + ClusterDomain
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		out := &http.Response{ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Close: req.Close}
		var body, upstream string
		t, routed, err := d.pickHTTPRoute(svc, req.URL.Path)
		if !routed {
			t, err = d.pick(Request{Gateway: MeshGateway, Namespace: svc.Namespace, Host: host, Path: req.URL.RequestURI()}, true)
		}
		if err == nil {
			hr, _ := http.NewRequestWithContext(ctx, req.Method, "http://"+host+req.URL.RequestURI(), nil)
			var res Result
			res, err = d.hboneRoundTrip(ctx, p, st, t, hr)
			out.StatusCode, body = res.Status, res.Body
			upstream = fmt.Sprintf("%s/%s %s %s", t.Namespace, t.Pod, t.IP, orDash(t.Labels["version"]))
			out.Header.Set(UpstreamHeader, upstream)
		}
		cancel()
		var re *RouteError
		switch {
		case errors.As(err, &re):
			out.StatusCode, body = re.Status, re.Reason+"\n"
		case err != nil:
			out.StatusCode, body = http.StatusServiceUnavailable, "upstream connect error: "+err.Error()+"\n"
		}
		// As Envoy's access log says it, in short.
		p.proxyLog.Printf("%q %d %s:%d -> %s subset=%s", req.Method+" "+req.URL.RequestURI(), out.StatusCode, host, port, orDash(upstream), orDash(t.Subset))
		out.Body, out.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
		if err := out.Write(conn); err != nil || req.Close {
			return
		}
	}
}

// waypointTarget is the waypoint a captured pod's call to a Service goes
// through: its pod's address and identity, and the Service's address.
type waypointTarget struct {
	name    string // NAMESPACE/NAME of the Gateway
	addr    string // pod IP:15008
	id      string
	service string // cluster IP:port
}

// waypointFor finds the waypoint serving the Service req addresses, as
// ztunnel learns it from istiod: the Service's istio.io/use-waypoint label,
// else its namespace's ("none" opts out); a Running, Ready pod of that
// Gateway that serves services. ok is false when there is none, and the
// call goes straight to an endpoint.
func (d *daemon) waypointFor(req Request) (wt waypointTarget, ok bool) {
	if d.amb == nil || d.amb.waypoints == nil {
		return wt, false
	}
	parts := strings.SplitN(fqdn(stripPort(req.Host), req.Namespace), ".", 3)
	if len(parts) < 3 {
		return wt, false
	}
	svc, err := d.services.Services(parts[1]).Get(parts[0])
	if err != nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return wt, false
	}
	if svc.Labels[mesh.LabelUseWaypoint] == mesh.DataplaneNone {
		return wt, false
	}
	wns, name, ok := mesh.WaypointOf(svc.Labels, svc.Namespace)
	if !ok {
		if wns, name, ok = mesh.WaypointOf(d.nsLabels(svc.Namespace), svc.Namespace); !ok {
			return wt, false
		}
	}
	pods, _ := d.amb.waypoints.Pods(wns).List(labels.SelectorFromSet(labels.Set{mesh.LabelGatewayName: name}))
	for _, wp := range pods {
		if f := wp.Labels["istio.io/waypoint-for"]; f != "" && f != "service" && f != "all" {
			continue
		}
		if wp.Status.Phase != corev1.PodRunning || wp.Status.PodIP == "" || wp.DeletionTimestamp != nil || !mesh.PodReady(wp) {
			continue
		}
		sa := wp.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		return waypointTarget{name: wns + "/" + name, addr: net.JoinHostPort(wp.Status.PodIP, strconv.Itoa(HBONEPort)),
			id: istioca.SPIFFEID(wns, sa), service: net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))}, true
	}
	return wt, false
}

// callWaypoint sends hr from captured pod p to its waypoint: a CONNECT
// stream to the Service's address on the pooled HBONE connection to the
// waypoint pod. The waypoint picks the pod and says which in
// UpstreamHeader.
func (d *daemon) callWaypoint(ctx context.Context, p *pod, st *hboneState, wt waypointTarget, hr *http.Request) (Result, error) {
	res := Result{HBONE: true, Waypoint: wt.name}
	tun, err := d.tunnel(ctx, p, st, wt.addr, wt.id, wt.service)
	if err != nil {
		return res, err
	}
	defer tun.Close()
	var hdr http.Header
	res.Status, res.Body, hdr, err = roundTripHeader(ctx, tun, bufio.NewReader(tun), hr)
	res.Target = upstreamTarget(hdr.Get(UpstreamHeader))
	return res, err
}

// upstreamTarget reads UpstreamHeader back into the target it names.
func upstreamTarget(v string) Target {
	f := strings.Fields(v)
	if len(f) != 3 {
		return Target{}
	}
	ns, name, _ := strings.Cut(f[0], "/")
	ip, _ := netip.ParseAddr(f[1])
	t := Target{Endpoint: Endpoint{Namespace: ns, Pod: name, IP: ip, Labels: map[string]string{}}}
	if f[2] != "-" {
		t.Labels["version"] = f[2]
	}
	return t
}

// pickHTTPRoute routes a request to svc by the oldest HTTPRoute whose
// parent is that Service, as a waypoint applies the Gateway API's GAMMA
// routes: the first rule whose path match fits, a backendRef by weight,
// then any ready endpoint of that Service. routed is false when no
// HTTPRoute names the Service (VirtualServices apply then).
func (d *daemon) pickHTTPRoute(svc *corev1.Service, path string) (t Target, routed bool, err error) {
	if d.amb == nil || d.amb.httpRoutes == nil {
		return t, false, nil
	}
	objs, _ := d.amb.httpRoutes.ByNamespace(svc.Namespace).List(labels.Everything())
	var routes []*unstructured.Unstructured
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok && parentIsService(u, svc) {
			routes = append(routes, u)
		}
	}
	if len(routes) == 0 {
		return t, false, nil
	}
	sort.Slice(routes, func(i, j int) bool {
		a, b := routes[i].GetCreationTimestamp(), routes[j].GetCreationTimestamp()
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return routes[i].GetName() < routes[j].GetName()
	})
	rules, _, _ := unstructured.NestedSlice(routes[0].Object, "spec", "rules")
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		if !httpRouteMatches(rule, path) {
			continue
		}
		refs, _, _ := unstructured.NestedSlice(rule, "backendRefs")
		type backend struct {
			name, ns string
			port     int
			weight   int64
		}
		var bs []backend
		total := int64(0)
		for _, x := range refs {
			m, _ := x.(map[string]any)
			b := backend{ns: svc.Namespace, weight: 1}
			b.name, _, _ = unstructured.NestedString(m, "name")
			if ns, _, _ := unstructured.NestedString(m, "namespace"); ns != "" {
				b.ns = ns
			}
			if p, ok, _ := unstructured.NestedInt64(m, "port"); ok {
				b.port = int(p)
			}
			if w, ok, _ := unstructured.NestedInt64(m, "weight"); ok {
				b.weight = w
			}
			if b.weight > 0 {
				bs = append(bs, b)
				total += b.weight
			}
		}
		if total == 0 {
			return t, true, &RouteError{Status: 500, Reason: "HTTPRoute " + routes[0].GetName() + ": no backend with a weight"}
		}
		d.rndMu.Lock()
		n := d.rnd.Int64N(total)
		d.rndMu.Unlock()
		var b backend
		for _, b = range bs {
			if n -= b.weight; n < 0 {
				break
			}
		}
		host := b.name + "." + b.ns + ".svc." + ClusterDomain
		eps := d.endpoints(host)
		if len(eps) == 0 {
			return t, true, &RouteError{Status: 503, Reason: "no healthy upstream for " + host}
		}
		d.rndMu.Lock()
		ep := eps[d.rnd.IntN(len(eps))]
		d.rndMu.Unlock()
		return Target{Host: host, Port: cmp.Or(b.port, 80), Endpoint: ep}, true, nil
	}
	return t, true, &RouteError{Status: 404, Reason: "no rule of HTTPRoute " + routes[0].GetName() + " matched"}
}

// parentIsService says whether an HTTPRoute names svc as a parent.
func parentIsService(u *unstructured.Unstructured, svc *corev1.Service) bool {
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	for _, x := range refs {
		m, _ := x.(map[string]any)
		group, _, _ := unstructured.NestedString(m, "group")
		kind, _, _ := unstructured.NestedString(m, "kind")
		name, _, _ := unstructured.NestedString(m, "name")
		ns, _, _ := unstructured.NestedString(m, "namespace")
		if (group == "" || group == "core") && kind == "Service" && name == svc.Name && (ns == "" || ns == svc.Namespace) {
			return true
		}
	}
	return false
}

// httpRouteMatches applies a rule's path matches (none matches all; a
// match without a path is PathPrefix /).
func httpRouteMatches(rule map[string]any, path string) bool {
	matches, _, _ := unstructured.NestedSlice(rule, "matches")
	if len(matches) == 0 {
		return true
	}
	for _, x := range matches {
		m, _ := x.(map[string]any)
		typ, _, _ := unstructured.NestedString(m, "path", "type")
		val, _, _ := unstructured.NestedString(m, "path", "value")
		switch {
		case val == "":
			return true
		case typ == "Exact" && path == val:
			return true
		case typ != "Exact":
			// Element-wise: /api matches /api and /api/v1, not /apiary;
			// a trailing slash in the value is ignored.
			p := strings.TrimSuffix(val, "/")
			if path == p || strings.HasPrefix(path, p+"/") {
				return true
			}
		}
	}
	return false
}
