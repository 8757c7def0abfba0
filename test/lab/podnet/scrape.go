package podnet

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ScrapeInterval is Prometheus's scrape interval in Istio's sample
// configuration.
const ScrapeInterval = 15 * time.Second

// ScrapeTarget is one metrics endpoint of a pod.
type ScrapeTarget struct {
	Port int
	Path string
}

// ScrapeTargetsFor lists what Istio's sample Prometheus scrapes on a pod:
// the prometheus.io/scrape, /port and /path annotations (the injector sets
// them to pilot-agent's merged metrics on 15020) and every container port
// named *-envoy-prom (Envoy's own stats on 15090).
func ScrapeTargetsFor(kp *corev1.Pod) []ScrapeTarget {
	var out []ScrapeTarget
	a := kp.Annotations
	if a["prometheus.io/scrape"] == "true" {
		if port, err := strconv.Atoi(a["prometheus.io/port"]); err == nil && port > 0 && port < 65536 {
			path := a["prometheus.io/path"]
			if path == "" {
				path = "/metrics"
			}
			out = append(out, ScrapeTarget{Port: port, Path: path})
		}
	}
	for _, c := range append(append([]corev1.Container(nil), kp.Spec.InitContainers...), kp.Spec.Containers...) {
		for _, p := range c.Ports {
			if strings.HasSuffix(p.Name, "-envoy-prom") {
				out = append(out, ScrapeTarget{Port: int(p.ContainerPort), Path: "/stats/prometheus"})
			}
		}
	}
	return out
}

// startScrapes scrapes the pod's metrics endpoints from the node every
// ScrapeInterval, keeping the connections open between scrapes as
// Prometheus does.
func (d *daemon) startScrapes(ctx context.Context, kp *corev1.Pod, p *pod) {
	targets := ScrapeTargetsFor(kp)
	if len(targets) == 0 {
		return
	}
	tr := &http.Transport{
		MaxIdleConnsPerHost: len(targets), IdleConnTimeout: 5 * time.Minute,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return d.node.dial(ctx, addr) },
	}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer tr.CloseIdleConnections()
		wait := time.Duration(rand.Int64N(int64(ScrapeInterval)))
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = ScrapeInterval
			for _, t := range targets {
				err := scrape(ctx, client, "http://"+net.JoinHostPort(p.net.IP.String(), strconv.Itoa(t.Port))+t.Path)
				if ctx.Err() != nil {
					return
				}
				if err != nil && !failing {
					d.cfg.logf("pod %s/%s: scraping :%d%s: %v", p.namespace, p.name, t.Port, t.Path, err)
				}
				failing = err != nil
			}
		}
	}()
}

func scrape(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "Prometheus/3.5.0")
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return &scrapeError{status: resp.StatusCode}
	}
	return nil
}

type scrapeError struct{ status int }

func (e *scrapeError) Error() string { return "server returned HTTP status " + strconv.Itoa(e.status) }
