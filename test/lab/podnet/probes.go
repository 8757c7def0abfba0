package podnet

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubectl-mesh/kubectl-mesh/test/netlab"
)

// Probe kinds, in the order the kubelet starts them.
const (
	Startup   = "startup"
	Readiness = "readiness"
	Liveness  = "liveness"
)

// KubeletUserAgent is what the kubelet's HTTP probes send.
const KubeletUserAgent = "kube-probe/1.35"

// Probe is one kubelet probe of a container, with named ports resolved.
type Probe struct {
	Container string
	Kind      string
	// Scheme is HTTP or HTTPS for an httpGet probe, TCP for a tcpSocket one.
	Scheme       string
	Host         string // "" is the pod's IP
	Port         int
	Path         string
	Headers      []corev1.HTTPHeader
	InitialDelay time.Duration
	Period       time.Duration
	Timeout      time.Duration
}

func (p Probe) String() string {
	if p.Scheme == "TCP" {
		return fmt.Sprintf("%s %s tcp :%d every %s", p.Container, p.Kind, p.Port, p.Period)
	}
	return fmt.Sprintf("%s %s %s :%d%s every %s", p.Container, p.Kind, p.Scheme, p.Port, p.Path, p.Period)
}

// ProbesFor lists the network probes the kubelet runs for a pod: httpGet
// and tcpSocket probes of its containers and native sidecars (exec and gRPC
// probes are left out), with the kubelet's defaults.
func ProbesFor(kp *corev1.Pod) []Probe {
	var cs []corev1.Container
	for _, c := range kp.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			cs = append(cs, c)
		}
	}
	cs = append(cs, kp.Spec.Containers...)
	var out []Probe
	for _, c := range cs {
		for _, k := range []struct {
			kind string
			p    *corev1.Probe
		}{{Startup, c.StartupProbe}, {Readiness, c.ReadinessProbe}, {Liveness, c.LivenessProbe}} {
			if k.p == nil {
				continue
			}
			pr := Probe{Container: c.Name, Kind: k.kind, InitialDelay: time.Duration(k.p.InitialDelaySeconds) * time.Second,
				Period: seconds(k.p.PeriodSeconds, 10), Timeout: seconds(k.p.TimeoutSeconds, 1)}
			var port intstr.IntOrString
			switch {
			case k.p.HTTPGet != nil:
				g := k.p.HTTPGet
				pr.Scheme, pr.Host, pr.Path, pr.Headers, port = string(g.Scheme), g.Host, g.Path, g.HTTPHeaders, g.Port
				if pr.Scheme == "" {
					pr.Scheme = string(corev1.URISchemeHTTP)
				}
				if pr.Path == "" {
					pr.Path = "/"
				}
			case k.p.TCPSocket != nil:
				pr.Scheme, pr.Host, port = "TCP", k.p.TCPSocket.Host, k.p.TCPSocket.Port
			default:
				continue
			}
			n, ok := resolvePort(port, c)
			if !ok {
				continue
			}
			pr.Port = n
			out = append(out, pr)
		}
	}
	return out
}

func seconds(v, def int32) time.Duration {
	if v <= 0 {
		v = def
	}
	return time.Duration(v) * time.Second
}

func resolvePort(p intstr.IntOrString, c corev1.Container) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), p.IntValue() > 0 && p.IntValue() < 65536
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, n > 0 && n < 65536
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}

// Prober runs probes as the kubelet does: from the node's address, one
// connection per probe, success for HTTP 200–399 or an accepted connection.
type Prober struct {
	// Dial opens a connection from the node to addr.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// dialFrom connects from network namespace ns with source address src.
func dialFrom(ns string, src netip.Addr) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (conn net.Conn, err error) {
		err = netlab.InNetNS(ns, func() (err error) {
			dl := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			conn, err = dl.DialContext(ctx, "tcp", addr)
			return err
		})
		return conn, err
	}
}

// Run makes one probe of the pod at podIP; nil is success.
func (pb Prober) Run(ctx context.Context, podIP netip.Addr, p Probe) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	host := p.Host
	if host == "" {
		host = podIP.String()
	}
	addr := net.JoinHostPort(host, strconv.Itoa(p.Port))
	if p.Scheme == "TCP" {
		c, err := pb.Dial(ctx, addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	tr := &http.Transport{
		DisableKeepAlives: true, DisableCompression: true, Proxy: nil,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probe certificates
		DialContext:     func(ctx context.Context, _, addr string) (net.Conn, error) { return pb.Dial(ctx, addr) },
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.ToLower(p.Scheme)+"://"+addr+p.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", KubeletUserAgent)
	req.Header.Set("Accept", "*/*")
	for _, h := range p.Headers {
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// startProbes runs the kubelet's probes of the pod until it stops: per
// container the startup probe until it succeeds, then readiness and
// liveness at their periods. Failures and recoveries go to podnet's log.
func (d *daemon) startProbes(ctx context.Context, kp *corev1.Pod, p *pod) {
	byContainer := map[string][]Probe{}
	var order []string
	for _, pr := range ProbesFor(kp) {
		if _, ok := byContainer[pr.Container]; !ok {
			order = append(order, pr.Container)
		}
		byContainer[pr.Container] = append(byContainer[pr.Container], pr)
	}
	pb := Prober{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if p.hbone.Load() != nil {
			// As istio-cni SNATs them for a pod in ambient mode.
			return dialFrom(d.node.net.NS, AmbientProbeSource)(ctx, addr)
		}
		return d.node.dial(ctx, addr)
	}}
	for _, c := range order {
		probes := byContainer[c]
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			rest := probes
			if probes[0].Kind == Startup {
				if !d.probeLoop(ctx, p, pb, probes[0], true) {
					return
				}
				rest = probes[1:]
			}
			var wg sync.WaitGroup
			for _, pr := range rest {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d.probeLoop(ctx, p, pb, pr, false)
				}()
			}
			wg.Wait()
		}()
	}
}

// probeLoop probes at the probe's period until ctx ends or, with
// untilSuccess, until the first success (reported by the result).
func (d *daemon) probeLoop(ctx context.Context, p *pod, pb Prober, pr Probe, untilSuccess bool) bool {
	// The kubelet staggers its probe workers; so does this, by up to a period.
	wait := pr.InitialDelay + time.Duration(rand.Int64N(int64(pr.Period)))
	failing := false
	for {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = pr.Period
		err := pb.Run(ctx, p.net.IP, pr)
		if ctx.Err() != nil {
			return false
		}
		switch {
		case err != nil && !failing:
			d.cfg.logf("pod %s/%s: %s probe failed: %v", p.namespace, p.name, pr, err)
		case err == nil && failing:
			d.cfg.logf("pod %s/%s: %s probe succeeds again", p.namespace, p.name, pr)
		}
		failing = err != nil
		if err == nil && untilSuccess {
			return true
		}
	}
}
