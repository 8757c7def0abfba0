package podnet

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// injectedPod is the shape of a workshop pod after istiod's injection: the
// app's probes rewritten to pilot-agent, the originals in
// ISTIO_KUBE_APP_PROBERS, istio-proxy's own startup and readiness probes.
const injectedPod = `
metadata:
  name: backend-app-5d8-x2x
  namespace: default
  annotations:
    prometheus.io/path: /stats/prometheus
    prometheus.io/port: "15020"
    prometheus.io/scrape: "true"
spec:
  containers:
  - name: app
    ports: [{name: http, containerPort: 80}]
    readinessProbe:
      httpGet: {path: /app-health/app/readyz, port: 15020, scheme: HTTP}
      periodSeconds: 3
      timeoutSeconds: 1
    livenessProbe:
      httpGet: {path: /app-health/app/livez, port: 15020}
    startupProbe:
      exec: {command: [/bin/true]}
  - name: istio-proxy
    ports:
    - {name: http-envoy-prom, containerPort: 15090}
    - {name: status-port, containerPort: 15021}
    env:
    - name: ISTIO_KUBE_APP_PROBERS
      value: '{"/app-health/app/livez":{"tcpSocket":{"port":80},"timeoutSeconds":1},"/app-health/app/readyz":{"httpGet":{"path":"/healthz","port":80,"scheme":"HTTP"},"timeoutSeconds":1}}'
    startupProbe:
      httpGet: {path: /healthz/ready, port: 15021}
      periodSeconds: 1
      timeoutSeconds: 3
      failureThreshold: 600
    readinessProbe:
      httpGet: {path: /healthz/ready, port: status-port}
      periodSeconds: 15
      timeoutSeconds: 3
    livenessProbe:
      httpGet: {port: no-such-port}
`

func loadPod(t *testing.T, y string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := yaml.Unmarshal([]byte(y), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestProbesFor(t *testing.T) {
	plain := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name:  "app",
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 3},
		LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")}}},
	}}}}
	native := corev1.ContainerRestartPolicyAlways
	sidecarInit := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{
		{Name: "istio-init", ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(1)}}}},
		{Name: "istio-proxy", RestartPolicy: &native, ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(15021)}}}},
	}}}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"before injection", plain, []string{
			"app readiness HTTP :80/healthz every 3s",
			"app liveness tcp :80 every 10s",
		}},
		{"after injection", loadPod(t, injectedPod), []string{
			"app readiness HTTP :15020/app-health/app/readyz every 3s",
			"app liveness HTTP :15020/app-health/app/livez every 10s",
			"istio-proxy startup HTTP :15021/healthz/ready every 1s",
			"istio-proxy readiness HTTP :15021/healthz/ready every 15s",
		}},
		{"native sidecar, not the other init containers", sidecarInit, []string{
			"istio-proxy readiness HTTP :15021/healthz/ready every 10s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, p := range ProbesFor(tt.pod) {
				got = append(got, p.String())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestScrapeTargetsFor(t *testing.T) {
	got := ScrapeTargetsFor(loadPod(t, injectedPod))
	want := []ScrapeTarget{{15020, "/stats/prometheus"}, {15090, "/stats/prometheus"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := ScrapeTargetsFor(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"prometheus.io/scrape": "false", "prometheus.io/port": "9090"}}}); len(got) != 0 {
		t.Errorf("scrape=false: got %v", got)
	}
}

// localDial connects on 127.0.0.1 whatever the address: the tests' "pod"
// is a loopback server.
func localDial(port string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		_, p, _ := net.SplitHostPort(addr)
		if port != "" {
			p = port
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", p))
	}
}

// The prober sends what the kubelet sends and judges the status as it does.
func TestProberRun(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.UserAgent()+" "+r.Header.Get("Accept")+" close="+map[bool]string{true: "yes", false: "no"}[r.Close])
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, "ok")
		case "/moved":
			w.WriteHeader(http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	pb := Prober{Dial: localDial(port)}
	pod := netip.MustParseAddr("10.244.0.5")
	ctx := context.Background()
	tests := []struct {
		probe Probe
		want  string
	}{
		{Probe{Scheme: "HTTP", Port: 80, Path: "/ok", Timeout: time.Second}, "<nil>"},
		{Probe{Scheme: "HTTP", Port: 80, Path: "/moved", Timeout: time.Second}, "<nil>"},
		{Probe{Scheme: "HTTP", Port: 80, Path: "/down", Timeout: time.Second}, "HTTP probe failed with statuscode: 503"},
		{Probe{Scheme: "TCP", Port: 80, Timeout: time.Second}, "<nil>"},
	}
	for _, tt := range tests {
		if err := pb.Run(ctx, pod, tt.probe); errText(err) != tt.want {
			t.Errorf("%s: %v, want %s", tt.probe, err, tt.want)
		}
	}
	wantSeen := []string{
		"GET /ok kube-probe/1.35 */* close=yes",
		"GET /moved kube-probe/1.35 */* close=yes",
		"GET /down kube-probe/1.35 */* close=yes",
	}
	if strings.Join(seen, "\n") != strings.Join(wantSeen, "\n") {
		t.Errorf("requests:\n%s\nwant\n%s", strings.Join(seen, "\n"), strings.Join(wantSeen, "\n"))
	}
	// A closed port refuses the connection.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	_, closed, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	if err := (Prober{Dial: localDial(closed)}).Run(ctx, pod, Probe{Scheme: "TCP", Port: 80, Timeout: time.Second}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("TCP probe of a closed port: %v", err)
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// pilot-agent's status server answers its own readiness and metrics and
// runs the app's original probes from ISTIO_KUBE_APP_PROBERS.
func TestAgentStatus(t *testing.T) {
	app := httptest.NewServer(appHealth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, Greeting("v1"))
	})))
	defer app.Close()
	_, port, _ := net.SplitHostPort(app.Listener.Addr().String())
	probers, err := appProbers(loadPod(t, injectedPod))
	if err != nil {
		t.Fatal(err)
	}
	agent := httptest.NewServer(&agentStatus{podIP: netip.MustParseAddr("10.244.0.5"), probers: probers,
		stats: func() string { return "istio_agent_uptime_seconds 1\n" }, dial: localDial(port)})
	defer agent.Close()
	tests := []struct{ path, want string }{
		{"/healthz/ready", "200 "},
		{"/app-health/app/readyz", "200 ok\n"},
		{"/app-health/app/livez", "200 "},
		{"/app-health/other/readyz", "404 app prober config does not exist for /app-health/other/readyz\n"},
		{"/stats/prometheus", "200 istio_agent_uptime_seconds 1\n"},
		{"/", "404 404 page not found\n"},
	}
	for _, tt := range tests {
		resp, err := http.Get(agent.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := strconv.Itoa(resp.StatusCode) + " " + string(b); got != tt.want {
			t.Errorf("GET %s: %q, want %q", tt.path, got, tt.want)
		}
	}
	// The app down: its probe fails through the agent.
	app.Close()
	resp, err := http.Get(agent.URL + "/app-health/app/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("readyz with the app down: %s, want 500", resp.Status)
	}
}

func TestUpstreamPool(t *testing.T) {
	pl := newUpstreamPool()
	conns := make([]*upstreamConn, maxIdlePerUpstream+1)
	for i := range conns {
		a, b := net.Pipe()
		defer b.Close()
		conns[i] = &upstreamConn{Conn: a, key: "10.244.0.5:80 sni id"}
	}
	if c := pl.get("10.244.0.5:80 sni id"); c != nil {
		t.Fatal("an empty pool gave a connection")
	}
	for _, c := range conns {
		pl.put(c)
	}
	if n := pl.count(); n != maxIdlePerUpstream {
		t.Errorf("%d idle connections, want at most %d", n, maxIdlePerUpstream)
	}
	if c := pl.get("10.244.0.5:80 sni id"); c != conns[maxIdlePerUpstream-1] {
		t.Error("get did not return the most recently used connection")
	}
	if c := pl.get("10.244.0.6:80 sni id"); c != nil {
		t.Error("a connection to another endpoint was handed out")
	}
	// A connection idle for too long is closed, not handed out.
	conns[0].since = time.Now().Add(-maxIdleTime - time.Second)
	if c := pl.get("10.244.0.5:80 sni id"); c == conns[0] || pl.count() != maxIdlePerUpstream-3 {
		t.Errorf("got %p with %d idle; want the stale connection dropped", c, pl.count())
	}
	pl.close()
	if n := pl.count(); n != 0 {
		t.Errorf("%d idle connections after close", n)
	}
	pl.put(conns[0])
	if n := pl.count(); n != 0 {
		t.Error("a closed pool kept a connection")
	}
}
