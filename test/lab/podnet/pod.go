package podnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// Containers whose logs podnet writes, as `kubectl logs -c` names them.
const (
	AppContainer   = "app"
	ProxyContainer = "istio-proxy"
)

var (
	kwokPortForwards = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}
	kwokLogs         = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}
)

// pod is a running pod: its namespace, servers and loops.
type pod struct {
	namespace, name, uid string
	app, version, sa     string
	labels               map[string]string
	net                  podNet
	// sidecar is set for pods with an injected istio-proxy; cert and roots
	// are its workload certificate and trust root.
	sidecar bool
	cert    tls.Certificate
	roots   *x509.CertPool
	// pool keeps the sidecar's upstream connections; dns is the app's
	// cached answer from the cluster DNS.
	pool *upstreamPool
	dns  dnsCache
	// hbone is set while a ztunnel carries the pod's traffic (ztunnel.go).
	hbone atomic.Pointer[hboneState]
	// proxyHBONE is the sidecar's own HBONE to pods ztunnel carries.
	proxyHBONE atomic.Pointer[hboneState]

	appLog, proxyLog *criLog
	cancel           context.CancelFunc
	wg               sync.WaitGroup
	closers          []func()
}

func (d *daemon) start(ctx context.Context, kp *corev1.Pod) (_ *pod, err error) {
	addr, err := netip.ParseAddr(kp.Status.PodIP)
	if err != nil || !addr.Is4() {
		return nil, fmt.Errorf("pod IP %q is not an IPv4 address", kp.Status.PodIP)
	}
	if kp.Labels["app"] == AppZtunnel {
		return d.startZtunnel(ctx, kp, addr)
	}
	if mesh.IsWaypointPod(kp) {
		return d.startWaypoint(ctx, kp, addr)
	}
	p := &pod{
		namespace: kp.Namespace, name: kp.Name, uid: string(kp.UID), labels: kp.Labels,
		app: kp.Labels["app"], version: kp.Labels["version"], sa: kp.Spec.ServiceAccountName,
		net: podNetFor(kp.Namespace, kp.Name, string(kp.UID), addr), sidecar: certs.HasProxy(kp),
		pool: newUpstreamPool(),
	}
	if p.sa == "" {
		p.sa = "default"
	}
	pctx, cancel := context.WithCancel(ctx)
	p.cancel = cancel
	defer func() {
		if err != nil {
			d.stop(p)
		}
	}()
	p.closers = append(p.closers, p.pool.close)
	if p.appLog, err = openCRILog(logFile(d.cfg.Dir, p.namespace, p.name, AppContainer)); err != nil {
		return p, err
	}
	p.closers = append(p.closers, func() { p.appLog.Close() })
	logContainers := map[string]string{AppContainer: p.appLog.path}
	if p.sidecar {
		if p.proxyLog, err = openCRILog(logFile(d.cfg.Dir, p.namespace, p.name, ProxyContainer)); err != nil {
			return p, err
		}
		p.closers = append(p.closers, func() { p.proxyLog.Close() })
		logContainers[ProxyContainer] = p.proxyLog.path
	}
	if err := p.net.add(); err != nil {
		return p, err
	}
	p.closers = append(p.closers, p.net.remove)
	if p.sidecar {
		if err := d.startProxy(pctx, kp, p); err != nil {
			return p, err
		}
		if err := d.startStatus(kp, p); err != nil {
			return p, err
		}
	}
	if err := d.applyKwok(pctx, kwokLogs, kp, p, logsSpec(logContainers)); err != nil {
		return p, err
	}
	switch p.app {
	case AppBackend:
		err = d.serve(p, 80, http.HandlerFunc(p.greet))
	case AppFrontend:
		err = d.serve(p, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.frontendHandler(p, w, r) }))
		if err == nil {
			p.wg.Add(1)
			go d.frontendLoop(pctx, p)
		}
	case AppGateway:
		err = d.serve(p, 8080, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.gatewayHandler(p, w, r) }))
	}
	if err != nil {
		return p, err
	}
	d.startProbes(pctx, kp, p)
	d.startScrapes(pctx, kp, p)
	mode := "no sidecar"
	if p.sidecar {
		mode = "sidecar, " + istioca.SPIFFEID(p.namespace, p.sa)
	}
	d.cfg.logf("pod %s/%s: %s in %s (%s)", p.namespace, p.name, p.net.IP, p.net.NS, mode)
	return p, nil
}

// stop ends the pod's loops and servers, then removes its namespace.
func (d *daemon) stop(p *pod) {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	if d.amb != nil {
		d.stopHBONE(p)
	}
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
	if st := p.proxyHBONE.Swap(nil); st != nil {
		st.pool.close()
	}
	d.cfg.logf("pod %s/%s: removed %s", p.namespace, p.name, p.net.NS)
}

// startProxy is the istio-proxy stand-in: the workload certificate from
// istiod's CA (as the Istio agent gets it), and Envoy's admin config_dump
// on a local port that KWOK's port-forward serves as the pod's port 15000.
func (d *daemon) startProxy(ctx context.Context, kp *corev1.Pod, p *pod) error {
	c, err := d.ca.Issue(ctx, p.namespace, p.sa, 24*time.Hour)
	if err != nil {
		return fmt.Errorf("getting the workload certificate from istiod: %w", err)
	}
	// As the Istio agent does, the trust root (Envoy's ROOTCA) is the last
	// certificate of the chain the CA returned.
	root := c.Chain[len(c.Chain)-1]
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	p.roots = x509.NewCertPool()
	p.roots.AddCert(root)
	p.cert = tls.Certificate{PrivateKey: c.Key, Leaf: c.Leaf()}
	for _, x := range c.Chain {
		p.cert.Certificate = append(p.cert.Certificate, x.Raw)
	}
	body, err := istioca.ConfigDump(c.ChainPEM, rootPEM)
	if err != nil {
		return err
	}
	admin, err := istioca.ServeAdmin(body)
	if err != nil {
		return err
	}
	p.closers = append(p.closers, func() { _ = admin.Close() })
	spec := map[string]any{"forwards": []any{map[string]any{
		"ports":  []any{int64(certs.DefaultAdminPort)},
		"target": map[string]any{"address": "127.0.0.1", "port": int64(admin.Port)},
	}}}
	if err := d.applyKwok(ctx, kwokPortForwards, kp, p, spec); err != nil {
		return err
	}
	p.proxyLog.Printf("workload certificate for %s from istiod, serial %x, valid until %s", istioca.SPIFFEID(p.namespace, p.sa),
		c.Leaf().SerialNumber, c.Leaf().NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func logsSpec(containers map[string]string) map[string]any {
	var logs []any
	for _, c := range []string{AppContainer, ProxyContainer} {
		if f, ok := containers[c]; ok {
			logs = append(logs, map[string]any{"containers": []any{c}, "logsFile": f, "follow": true})
		}
	}
	return map[string]any{"logs": logs}
}

// applyKwok creates or replaces a KWOK object named like the pod, owned by
// it so that it goes when the pod goes.
func (d *daemon) applyKwok(ctx context.Context, gvr schema.GroupVersionResource, kp *corev1.Pod, p *pod, spec map[string]any) error {
	kind := map[string]string{"portforwards": "PortForward", "logs": "Logs"}[gvr.Resource]
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": kind,
		"metadata": map[string]any{
			"name": kp.Name, "namespace": kp.Namespace,
			"labels": map[string]any{"app.kubernetes.io/managed-by": "podnet"},
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Pod", "name": kp.Name, "uid": string(kp.UID),
			}},
		},
		"spec": spec,
	}}
	rc := d.dyn.Resource(gvr).Namespace(kp.Namespace)
	_, err := rc.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		old, gerr := rc.Get(ctx, kp.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		obj.SetResourceVersion(old.GetResourceVersion())
		_, err = rc.Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating the KWOK %s for pod %s/%s: %w", kind, kp.Namespace, kp.Name, err)
	}
	// The pod's deletion removes it too (owner reference); this is for a
	// podnet that stops while the pod stays.
	p.closers = append(p.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rc.Delete(ctx, kp.Name, metav1.DeleteOptions{})
	})
	return nil
}

// serve runs h on the pod's IP and port inside its namespace. With a
// sidecar the port is PERMISSIVE, as Istio's default: Istio mTLS or
// plaintext, told apart by the first byte.
func (d *daemon) serve(p *pod, port int, h http.Handler) error {
	var ln net.Listener
	addr := net.JoinHostPort(p.net.IP.String(), strconv.Itoa(port))
	if err := netlab.InNetNS(p.net.NS, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return fmt.Errorf("listening on %s in %s: %w", addr, p.net.NS, err)
	}
	var serverTLS *tls.Config
	if p.sidecar {
		serverTLS = &tls.Config{
			Certificates: []tls.Certificate{p.cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.roots,
			NextProtos: netlab.IstioALPN, MinVersion: tls.VersionTLS12,
		}
	}
	// Failed handshakes and the like show in the proxy's log, as Envoy's.
	errLog := p.appLog
	if p.proxyLog != nil {
		errLog = p.proxyLog
	}
	pl := newPermissiveListener(ln, serverTLS, errLog)
	srv := &http.Server{Handler: appHealth(h), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(errLog, "", 0)}
	go func() { _ = srv.Serve(pl) }()
	p.closers = append(p.closers, func() { _ = srv.Close(); _ = pl.Close() })
	return nil
}

// greet is the backend: v1 answers the workshop's greeting, other versions
// say which they are.
func (p *pod) greet(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, Greeting(p.version))
}

// Greeting is what a backend of version answers.
func Greeting(version string) string {
	if version == "" || version == "v1" {
		return netlab.Greeting
	}
	return `{"greetings":"Hi TGN meetup from ` + version + `"}`
}

// criLog writes a container log in the CRI format KWOK serves to
// `kubectl logs`.
type criLog struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

func openCRILog(path string) (*criLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &criLog{path: path, f: f}, nil
}

func (l *criLog) Printf(format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		fmt.Fprintf(l.f, "%s stdout F %s\n", time.Now().UTC().Format(time.RFC3339Nano), msg)
	}
}

func (l *criLog) Write(b []byte) (int, error) {
	l.Printf("%s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (l *criLog) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	_ = os.Remove(l.path)
}

// permissiveListener hands out plaintext connections as they are and TLS
// ones (first byte 0x16, a handshake record) wrapped in tls.Server.
type permissiveListener struct {
	net.Listener
	tls    *tls.Config
	errLog *criLog
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
}

func newPermissiveListener(ln net.Listener, cfg *tls.Config, errLog *criLog) *permissiveListener {
	l := &permissiveListener{Listener: ln, tls: cfg, errLog: errLog, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *permissiveListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.Close()
			return
		}
		go func() {
			pc := &peekedConn{Conn: c, r: bufio.NewReader(c)}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := pc.r.Peek(1)
			_ = c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			var out net.Conn = pc
			if b[0] == 0x16 && l.tls != nil {
				// The sidecar terminates TLS: the app behind it gets plain
				// HTTP. (net/http would also drop a *tls.Conn that agreed on
				// Istio's ALPN, a protocol it does not know.)
				tc := tls.Server(pc, l.tls)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					l.errLog.Printf("inbound TLS handshake from %s failed: %v", c.RemoteAddr(), err)
					c.Close()
					return
				}
				_ = c.SetDeadline(time.Time{})
				out = terminated{tc}
			}
			select {
			case l.conns <- out:
			case <-l.done:
				c.Close()
			}
		}()
	}
}

func (l *permissiveListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *permissiveListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// terminated hides the TLS connection's type from net/http.
type terminated struct{ net.Conn }

// peekedConn reads what was peeked before the rest of the connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
