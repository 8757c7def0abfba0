package podnet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// Ports istio-proxy serves in cleartext on every address of the pod, as
// real sidecars do: the kubelet probes them from the node and Prometheus
// scrapes them.
const (
	// ProxyStatusPort is Envoy's health listener (GET /healthz/ready).
	ProxyStatusPort = 15021
	// AgentPort is pilot-agent's status server: /healthz/ready, the
	// rewritten app probes under /app-health/ and merged metrics.
	AgentPort = 15020
	// EnvoyPromPort is Envoy's own Prometheus endpoint.
	EnvoyPromPort = 15090
	// HealthPath is what the workshop apps answer their probes on.
	HealthPath = "/healthz"

	appProbersEnv = "ISTIO_KUBE_APP_PROBERS"
)

// appProber is one entry of ISTIO_KUBE_APP_PROBERS: the app's own probe
// that the injector replaced with a GET to pilot-agent.
type appProber struct {
	HTTPGet        *corev1.HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket      *corev1.TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC           *corev1.GRPCAction      `json:"grpc,omitempty"`
	TimeoutSeconds int32                   `json:"timeoutSeconds,omitempty"`
}

// appProbers reads the injector's ISTIO_KUBE_APP_PROBERS from the pod's
// istio-proxy container (path → prober).
func appProbers(kp *corev1.Pod) (map[string]appProber, error) {
	out := map[string]appProber{}
	for _, c := range append(append([]corev1.Container(nil), kp.Spec.InitContainers...), kp.Spec.Containers...) {
		if c.Name != certs.ProxyContainer {
			continue
		}
		for _, e := range c.Env {
			if e.Name == appProbersEnv && e.Value != "" {
				if err := json.Unmarshal([]byte(e.Value), &out); err != nil {
					return nil, fmt.Errorf("reading %s of pod %s/%s: %w", appProbersEnv, kp.Namespace, kp.Name, err)
				}
			}
		}
	}
	return out, nil
}

// startStatus runs istio-proxy's cleartext servers in the pod's namespace:
// Envoy's health listener on 15021, pilot-agent on 15020 (readiness, the
// app probes it forwards to the app, merged metrics) and Envoy's stats on
// 15090.
func (d *daemon) startStatus(kp *corev1.Pod, p *pod) error {
	probers, err := appProbers(kp)
	if err != nil {
		return err
	}
	stats := proxyStats{pod: p, start: time.Now()}
	handlers := []struct {
		port int
		h    http.Handler
	}{
		{ProxyStatusPort, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz/ready" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(http.StatusOK)
		})},
		{AgentPort, &agentStatus{podIP: p.net.IP, probers: probers, stats: stats.text,
			dial: func(ctx context.Context, addr string) (net.Conn, error) { return dialIn(ctx, p.net.NS, addr) }}},
		{EnvoyPromPort, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/stats/prometheus" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = io.WriteString(w, stats.envoy())
		})},
	}
	for _, s := range handlers {
		var ln net.Listener
		addr := ":" + strconv.Itoa(s.port)
		if err := netlab.InNetNS(p.net.NS, func() (err error) {
			ln, err = net.Listen("tcp4", addr)
			return err
		}); err != nil {
			return fmt.Errorf("istio-proxy listening on %s in %s: %w", addr, p.net.NS, err)
		}
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(p.proxyLog, "", 0)}
		go func() { _ = srv.Serve(ln) }()
		p.closers = append(p.closers, func() { _ = srv.Close() })
	}
	return nil
}

// agentStatus is pilot-agent's status server on 15020.
type agentStatus struct {
	podIP   netip.Addr
	probers map[string]appProber
	// stats is the merged metrics page.
	stats func() string
	// dial connects from inside the pod to the app.
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

func (a *agentStatus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz/ready":
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/stats/prometheus":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, a.stats())
	case strings.HasPrefix(r.URL.Path, "/app-health/"):
		a.appHealth(w, r)
	default:
		http.NotFound(w, r)
	}
}

// appHealth runs the app's original probe from inside the pod, against the
// pod's IP as pilot-agent does, and answers with its status and body.
func (a *agentStatus) appHealth(w http.ResponseWriter, r *http.Request) {
	pr, ok := a.probers[r.URL.Path]
	if !ok {
		http.Error(w, "app prober config does not exist for "+r.URL.Path, http.StatusNotFound)
		return
	}
	timeout := time.Second
	if pr.TimeoutSeconds > 0 {
		timeout = time.Duration(pr.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	podIP := a.podIP.String()
	switch {
	case pr.HTTPGet != nil:
		host := podIP
		if pr.HTTPGet.Host != "" {
			host = pr.HTTPGet.Host
		}
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		url := scheme + "://" + net.JoinHostPort(host, pr.HTTPGet.Port.String()) + pr.HTTPGet.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for k, v := range r.Header {
			req.Header[k] = v
		}
		for _, h := range pr.HTTPGet.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true, DisableCompression: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as pilot-agent: probes do not verify
			DialContext:     func(ctx context.Context, _, addr string) (net.Conn, error) { return a.dial(ctx, addr) },
		}}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 10<<10))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	case pr.TCPSocket != nil:
		conn, err := a.dial(ctx, net.JoinHostPort(podIP, pr.TCPSocket.Port.String()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		conn.Close()
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, "unsupported app prober for "+r.URL.Path, http.StatusInternalServerError)
	}
}

// proxyStats makes a small Prometheus text page in the shape of Envoy's
// and pilot-agent's (a real one is far longer).
type proxyStats struct {
	pod   *pod
	start time.Time
}

func (s *proxyStats) envoy() string {
	p := s.pod
	up := int(time.Since(s.start).Seconds())
	idle := 0
	if p.pool != nil {
		idle = p.pool.count()
	}
	labels := fmt.Sprintf(`app=%q,version=%q,namespace=%q`, p.app, p.version, p.namespace)
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime{%s} %d\n", labels, up)
	fmt.Fprintf(&b, "# TYPE envoy_server_live gauge\nenvoy_server_live{%s} 1\n", labels)
	fmt.Fprintf(&b, "# TYPE envoy_server_state gauge\nenvoy_server_state{%s} 0\n", labels)
	fmt.Fprintf(&b, "# TYPE envoy_cluster_upstream_cx_active gauge\nenvoy_cluster_upstream_cx_active{cluster_name=\"outbound|80||%s.%s.svc.cluster.local\"} %d\n", BackendService, p.namespace, idle)
	fmt.Fprintf(&b, "# TYPE envoy_listener_manager_total_listeners_active gauge\nenvoy_listener_manager_total_listeners_active %d\n", 12)
	return b.String()
}

// text is pilot-agent's merged page: its own metrics, then Envoy's.
func (s *proxyStats) text() string { return s.agent() + s.envoy() }

func (s *proxyStats) agent() string {
	up := time.Since(s.start).Seconds()
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE istio_agent_process_start_time_seconds gauge\nistio_agent_process_start_time_seconds %d\n", s.start.Unix())
	fmt.Fprintf(&b, "# TYPE istio_agent_startup_duration_seconds gauge\nistio_agent_startup_duration_seconds %.3f\n", 0.5)
	fmt.Fprintf(&b, "# TYPE istio_agent_uptime_seconds gauge\nistio_agent_uptime_seconds %.0f\n", up)
	fmt.Fprintf(&b, "# TYPE istio_agent_xds_proxy_requests counter\nistio_agent_xds_proxy_requests %d\n", 1+int(up)/30)
	return b.String()
}

// appHealth wraps an app's handler so that it answers its probes on
// HealthPath, as the workshop apps' Deployments declare.
func appHealth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		h.ServeHTTP(w, r)
	})
}
