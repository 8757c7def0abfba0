package podnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// BackendService is the Service the frontend calls.
const BackendService = "backend"

// Result is one request a pod made through its proxy (or kube-proxy).
type Result struct {
	Target Target
	// MTLS is set when the connection was Istio mTLS; HBONE when ztunnel
	// carried it.
	MTLS  bool
	HBONE bool
	// Waypoint is the waypoint (NAMESPACE/NAME) that routed the call.
	Waypoint string
	Status   int
	Body     string
}

// Mode is how the request travelled, as the frontend logs it.
func (r Result) Mode() string {
	if r.Waypoint != "" {
		return "hbone-waypoint"
	}
	if r.HBONE {
		return "hbone"
	}
	if r.MTLS {
		return "mtls"
	}
	return "plaintext"
}

// call makes one request from p: routed by its sidecar's view of the mesh
// (or to any endpoint without a sidecar), from inside p's namespace. Between
// two sidecars it goes over Istio mTLS on a pooled connection, as Envoy
// sends it; otherwise on a new plaintext connection per request.
func (d *daemon) call(ctx context.Context, p *pod, req Request, method string, header http.Header) (Result, error) {
	if st := p.hbone.Load(); st != nil {
		return d.callAmbient(ctx, p, st, req, method, header)
	}
	t, err := d.pick(req, p.sidecar)
	if err != nil {
		return Result{}, err
	}
	res := Result{Target: t, MTLS: p.sidecar && t.IstioMTLS()}
	addr := net.JoinHostPort(t.IP.String(), strconv.Itoa(t.Port))
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+req.Host+req.Path, nil)
	if err != nil {
		return res, err
	}
	for k, v := range header {
		hr.Header[k] = v
	}
	if p.sidecar && !res.MTLS && d.hboneDest(t) != "" {
		// A sidecar or gateway sends HBONE to a pod that ztunnel carries
		// (Istio's PILOT_ENABLE_SENDING_HBONE, on with ambient).
		hr.Close = true
		return d.hboneRoundTrip(ctx, p, d.proxyHBONE(p), t, hr)
	}
	if !res.MTLS {
		conn, err := dialIn(ctx, p.net.NS, addr)
		if err != nil {
			return res, err
		}
		defer conn.Close()
		hr.Close = true
		res.Status, res.Body, _, err = roundTrip(ctx, conn, bufio.NewReader(conn), hr)
		return res, err
	}
	key := addr + " " + t.SNI() + " " + istioca.SPIFFEID(t.Namespace, t.ServiceAccount)
	for attempt := 0; ; attempt++ {
		c := p.pool.get(key)
		reused := c != nil
		if c == nil {
			if c, err = d.dialMTLS(ctx, p, t, addr, key); err != nil {
				return res, err
			}
		}
		var keep bool
		res.Status, res.Body, keep, err = roundTrip(ctx, c.Conn, c.br, hr)
		if err != nil {
			_ = c.Close()
			// The upstream closed an idle connection: retry once on a new
			// one, as Envoy does for a reset pooled connection.
			if reused && attempt == 0 && ctx.Err() == nil {
				continue
			}
			return res, err
		}
		if !keep {
			_ = c.Close()
			return res, nil
		}
		_ = c.SetDeadline(time.Time{})
		p.pool.put(c)
		return res, nil
	}
}

// proxyHBONE is the HBONE client of p's sidecar (or gateway): its
// workload certificate, and a pool of its own.
func (d *daemon) proxyHBONE(p *pod) *hboneState {
	if st := p.proxyHBONE.Load(); st != nil {
		return st
	}
	st := &hboneState{id: istioca.SPIFFEID(p.namespace, p.sa), cert: p.cert, roots: p.roots, pool: d.newPool()}
	if !p.proxyHBONE.CompareAndSwap(nil, st) {
		return p.proxyHBONE.Load()
	}
	return st
}

// dialIn opens a TCP connection from inside network namespace ns.
func dialIn(ctx context.Context, ns, addr string) (conn net.Conn, err error) {
	if err := netlab.InNetNS(ns, func() (err error) {
		var dl net.Dialer
		conn, err = dl.DialContext(ctx, "tcp", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	return conn, nil
}

// dialMTLS opens a sidecar's mTLS connection to t: Istio's ALPN and SNI,
// the workload certificate, the peer's SPIFFE ID checked.
func (d *daemon) dialMTLS(ctx context.Context, p *pod, t Target, addr, key string) (*upstreamConn, error) {
	conn, err := dialIn(ctx, p.net.NS, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	tc := tls.Client(conn, &tls.Config{
		Certificates: []tls.Certificate{p.cert}, ServerName: t.SNI(), NextProtos: netlab.IstioALPN, MinVersion: tls.VersionTLS12,
		// Istio checks the peer's SPIFFE ID, not a host name.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifySPIFFE(p.roots, istioca.SPIFFEID(t.Namespace, t.ServiceAccount)),
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mTLS handshake with %s: %w", addr, err)
	}
	return &upstreamConn{Conn: tc, br: bufio.NewReader(tc), key: key}, nil
}

// roundTrip writes hr on conn and reads the whole response; keep says
// whether the connection may carry another request.
func roundTrip(ctx context.Context, conn net.Conn, br *bufio.Reader, hr *http.Request) (status int, body string, keep bool, err error) {
	status, body, keep, _, err = roundTripFull(ctx, conn, br, hr)
	return status, body, keep, err
}

// roundTripHeader is roundTrip on a connection used once, with the
// response's header.
func roundTripHeader(ctx context.Context, conn net.Conn, br *bufio.Reader, hr *http.Request) (status int, body string, h http.Header, err error) {
	status, body, _, h, err = roundTripFull(ctx, conn, br, hr)
	return status, body, h, err
}

func roundTripFull(ctx context.Context, conn net.Conn, br *bufio.Reader, hr *http.Request) (status int, body string, keep bool, h http.Header, err error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := hr.Write(conn); err != nil {
		return 0, "", false, nil, err
	}
	resp, err := http.ReadResponse(br, hr)
	if err != nil {
		return 0, "", false, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", false, nil, err
	}
	return resp.StatusCode, string(b), !resp.Close && !hr.Close, resp.Header, nil
}

// verifySPIFFE checks the peer's chain against roots and its SPIFFE ID:
// want, or any of the trust domain when want is "".
func verifySPIFFE(roots *x509.CertPool, want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the peer sent no certificate")
		}
		chain := make([]*x509.Certificate, len(raw))
		for i, b := range raw {
			c, err := x509.ParseCertificate(b)
			if err != nil {
				return err
			}
			chain[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return err
		}
		for _, u := range chain[0].URIs {
			if u.String() == want || want == "" && strings.HasPrefix(u.String(), "spiffe://"+istioca.DefaultTrustDomain+"/") {
				return nil
			}
		}
		if want == "" {
			return fmt.Errorf("peer identity is %v, not a SPIFFE ID of trust domain %s", chain[0].URIs, istioca.DefaultTrustDomain)
		}
		return fmt.Errorf("peer identity is %v, want %s", chain[0].URIs, want)
	}
}

// callBackend is one frontend → backend request. Like a real app the
// frontend first resolves the backend Service's name through the cluster
// DNS (over UDP, cached for the answer's TTL); without an answer the call
// fails.
func (d *daemon) callBackend(ctx context.Context, p *pod) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if d.dns != nil {
		name := BackendService + "." + p.namespace + ".svc." + ClusterDomain
		if _, err := p.dns.resolve(ctx, p.net.NS, d.dns.addr, name); err != nil {
			return Result{}, err
		}
	}
	return d.call(ctx, p, Request{Gateway: MeshGateway, Namespace: p.namespace, Host: BackendService, Path: "/greetings"}, http.MethodGet, nil)
}

// LogLine is how the frontend logs a call: `kubectl logs` of the frontend
// shows one per request, the fourth field being the backend's version.
//
//	call backend: 200 v1 backend-app-5d8-x2x 10.244.0.2 mtls {"greetings":"Hi TGN meetup"}
func LogLine(r Result, err error) string {
	if err != nil {
		var re *RouteError
		if errors.As(err, &re) {
			return fmt.Sprintf("call %s: %d - - - - %s", BackendService, re.Status, re.Reason)
		}
		version, pod, ip := "-", "-", "-"
		if r.Target.Pod != "" {
			version, pod, ip = orDash(r.Target.Labels["version"]), r.Target.Pod, r.Target.IP.String()
		}
		return fmt.Sprintf("call %s: 503 %s %s %s %s %v", BackendService, version, pod, ip, r.Mode(), err)
	}
	return fmt.Sprintf("call %s: %d %s %s %s %s %s", BackendService, r.Status, orDash(r.Target.Labels["version"]), r.Target.Pod, r.Target.IP, r.Mode(), strings.TrimSpace(r.Body))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// frontendLoop calls the backend every Interval: on a new connection per
// request without a sidecar, on the sidecar's pooled mTLS connection with
// one.
func (d *daemon) frontendLoop(ctx context.Context, p *pod) {
	defer p.wg.Done()
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := d.callBackend(ctx, p)
		if ctx.Err() != nil {
			return
		}
		p.appLog.Printf("%s", LogLine(r, err))
	}
}

// frontendHandler serves the frontend's page: one call to the backend.
func (d *daemon) frontendHandler(p *pod, w http.ResponseWriter, r *http.Request) {
	res, err := d.callBackend(r.Context(), p)
	p.appLog.Printf("%s (for %s %s)", LogLine(res, err), r.Method, r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprintf(w, `{"error":%q}`+"\n", err.Error())
		return
	}
	w.WriteHeader(res.Status)
	fmt.Fprintf(w, `{"frontend":%q,"backend":%q,"version":%q,"mtls":%t,"response":%s}`+"\n",
		p.name, res.Target.Pod, res.Target.Labels["version"], res.MTLS, jsonOrString(res.Body))
}

func jsonOrString(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
		return s
	}
	return strconv.Quote(s)
}

// gatewayHandler is the ingress gateway: the Gateways whose selector picks
// this pod and whose port-80 server takes the Host, then their
// VirtualServices, then the destination (over mTLS to sidecars).
func (d *daemon) gatewayHandler(p *pod, w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	host := stripPort(r.Host)
	var lastErr error = &RouteError{Status: 404, Reason: "no Gateway for host " + host + " on port 80"}
	for _, gw := range d.gatewaysFor(p, host) {
		res, err := d.call(ctx, p, Request{Gateway: gw, Namespace: p.namespace, Host: r.Host, Path: r.URL.RequestURI()}, r.Method, r.Header)
		if err != nil {
			lastErr = err
			var re *RouteError
			if errors.As(err, &re) && re.Status == 404 {
				continue
			}
			break
		}
		p.proxyLog.Printf("[%s] %q %d %s via %s to %s %s %s", time.Now().UTC().Format(time.RFC3339), r.Method+" "+r.URL.RequestURI(), res.Status, r.Host, gw, res.Target.Pod, res.Target.IP, res.Mode())
		w.WriteHeader(res.Status)
		_, _ = io.WriteString(w, res.Body)
		return
	}
	status := http.StatusServiceUnavailable
	var re *RouteError
	if errors.As(lastErr, &re) {
		status = re.Status
	}
	p.proxyLog.Printf("[%s] %q %d %s: %v", time.Now().UTC().Format(time.RFC3339), r.Method+" "+r.URL.RequestURI(), status, r.Host, lastErr)
	http.Error(w, lastErr.Error(), status)
}

// gatewaysFor lists NAMESPACE/NAME of the Istio Gateways that select the
// gateway pod and have a port-80 server for host.
func (d *daemon) gatewaysFor(p *pod, host string) []string {
	gws, _ := d.gateways.List(labels.Everything())
	var out []string
	for _, gw := range gws {
		if !labels.SelectorFromSet(gw.Spec.GetSelector()).Matches(labels.Set(p.labels)) {
			continue
		}
		for _, s := range gw.Spec.GetServers() {
			if s.GetPort().GetNumber() != 80 {
				continue
			}
			if serverHostMatches(s.GetHosts(), gw.Namespace, host) {
				out = append(out, gw.Namespace+"/"+gw.Name)
				break
			}
		}
	}
	return out
}

// serverHostMatches applies a Gateway server's hosts ([NAMESPACE/]HOST,
// with * wildcards) to the request's Host.
func serverHostMatches(hosts []string, _ string, host string) bool {
	for _, h := range hosts {
		if i := strings.IndexByte(h, '/'); i >= 0 {
			h = h[i+1:]
		}
		switch {
		case h == "*", strings.EqualFold(h, host):
			return true
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(strings.ToLower(host), strings.ToLower(h[1:])):
			return true
		}
	}
	return false
}
