package certs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// ProxyContainer is the sidecar Istio injects.
const ProxyContainer = "istio-proxy"

// DefaultAdminPort is Envoy's admin port in Istio sidecars.
const DefaultAdminPort = 15000

// Legacy files: Istio ≤ 1.4 mounted the istio.default secret at /etc/certs.
const (
	LegacyChainFile = "/etc/certs/cert-chain.pem"
	LegacyRootFile  = "/etc/certs/root-cert.pem"
)

// Forwarder fetches an HTTP path from a port of a pod (a port-forward).
type Forwarder interface {
	Get(ctx context.Context, pod *corev1.Pod, port int, path string) ([]byte, error)
}

// Executor runs a command in a container of a pod and returns its stdout.
type Executor interface {
	Exec(ctx context.Context, pod *corev1.Pod, container string, command []string) ([]byte, error)
}

// Clients are what Inspect talks to. Istio may be nil: the mTLS mode is then
// not shown. Kube finds an ambient pod's ztunnel; without it a pod without
// a sidecar is not looked at as ambient.
type Clients struct {
	Istio     istioclient.Interface
	Forwarder Forwarder
	Executor  Executor
	Kube      kubernetes.Interface
}

// Config is one inspection.
type Config struct {
	Source        Source
	Files         []string
	AdminPort     int
	RootNamespace string
	Now           time.Time
}

// Inspect reads the certificates of pod (nil only with SourceFile) and judges
// them: one report, or one per identity of a dump that holds several. With
// a pod, only the dump's identities of that pod are kept. An error means no
// certificates could be read; a failed verdict is in the report.
func Inspect(ctx context.Context, c Clients, cfg Config, pod *corev1.Pod) ([]*Report, error) {
	if cfg.AdminPort == 0 {
		cfg.AdminPort = DefaultAdminPort
	}
	if cfg.Source == "" {
		cfg.Source = SourceAuto
	}
	if pod == nil && cfg.Source != SourceFile {
		return nil, errors.New("no pod given: name a pod, TYPE/NAME or -l SELECTOR, or read PEM files or a saved dump with --file")
	}
	var bundles []*Bundle
	var err error
	ambient, known := false, true
	if pod != nil && cfg.Source == SourceAuto {
		ambient, known = Ambient(ctx, c.Kube, pod)
	}
	switch {
	case pod != nil && (cfg.Source == SourceZtunnel || ambient || !known):
		if pod.Status.Phase != corev1.PodRunning {
			return nil, notRunning(pod)
		}
		bundles, err = fetchZtunnel(ctx, c, pod)
		if err != nil && !known {
			// Not known to be ambient: it may just lack a sidecar.
			return nil, fmt.Errorf("%w\n(namespace %s could not be read to tell whether the pod is in ambient mode; asking the ztunnel on its node: %v)", CheckPod(pod), pod.Namespace, err)
		}
	case pod != nil && cfg.Source != SourceFile:
		if err := CheckPod(pod); err != nil {
			return nil, err
		}
		fallthrough
	default:
		bundles, err = fetch(ctx, c, cfg, pod)
	}
	if err != nil {
		return nil, err
	}
	expect := Expect{}
	var workload *Workload
	var mtls *MTLS
	if pod != nil {
		workload = &Workload{Namespace: pod.Namespace, Pod: pod.Name, ServiceAccount: ServiceAccount(pod)}
		expect = Expect{Namespace: pod.Namespace, ServiceAccount: ServiceAccount(pod)}
		if bundles, err = forPod(bundles, expect, pod); err != nil {
			return nil, err
		}
		if c.Istio != nil {
			if mtls, err = EffectiveMTLS(ctx, c.Istio, cfg.RootNamespace, pod); err != nil {
				return nil, fmt.Errorf("reading the mTLS mode of pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
		}
	}
	reports := make([]*Report, 0, len(bundles))
	for _, b := range bundles {
		r := &Report{Workload: workload, MTLS: mtls, Source: b.Source, Origin: b.Origin, Identity: b.Identity, State: b.State, Secrets: b.Secrets, bundle: b}
		r.Certificates, r.Verdict = Evaluate(b, expect, cfg.Now)
		reports = append(reports, r)
	}
	return reports, nil
}

// forPod keeps the identities of a multi-identity dump (ztunnel's) that are
// the pod's; a single bundle is kept whatever it says, so a wrong identity
// fails the identity check instead of vanishing.
func forPod(bundles []*Bundle, e Expect, pod *corev1.Pod) ([]*Bundle, error) {
	if len(bundles) < 2 {
		return bundles, nil
	}
	var out []*Bundle
	var ids []string
	for _, b := range bundles {
		ids = append(ids, b.Identity)
		if u, err := url.Parse(b.Identity); err == nil && u.Scheme == "spiffe" {
			if id := ParseSPIFFEID(u); id.Namespace == e.Namespace && id.ServiceAccount == e.ServiceAccount {
				out = append(out, b)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the dump has no identity of pod %s/%s (namespace %s, service account %s) among %s; leave out the pod to see them all",
			pod.Namespace, pod.Name, e.Namespace, e.ServiceAccount, strings.Join(ids, ", "))
	}
	return out, nil
}

// ServiceAccount is the pod's service account, "default" when unset.
func ServiceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

// CheckPod fails for pods that cannot have a mesh certificate: no sidecar, or
// not running.
func CheckPod(pod *corev1.Pod) error {
	if !HasProxy(pod) {
		return fmt.Errorf("pod %s/%s has no %s container, so it has no mesh certificate; enable sidecar injection and restart its workloads:\n  kubectl mesh enable-injection %s\n  kubectl mesh restart %s",
			pod.Namespace, pod.Name, ProxyContainer, pod.Namespace, pod.Namespace)
	}
	if pod.Status.Phase != corev1.PodRunning {
		return notRunning(pod)
	}
	return nil
}

func notRunning(pod *corev1.Pod) error {
	return fmt.Errorf("pod %s/%s is %s, not Running; wait for it (kubectl wait --for=condition=Ready pod/%s -n %s) or pick another pod",
		pod.Namespace, pod.Name, phase(pod), pod.Name, pod.Namespace)
}

func phase(pod *corev1.Pod) string {
	if pod.Status.Phase == "" {
		return "Pending"
	}
	return string(pod.Status.Phase)
}

// HasProxy reports whether the pod has the Istio sidecar, as a regular
// container or as a native sidecar (see mesh.HasSidecar).
func HasProxy(pod *corev1.Pod) bool { return mesh.HasSidecar(pod) }

func fetch(ctx context.Context, c Clients, cfg Config, pod *corev1.Pod) ([]*Bundle, error) {
	if cfg.Source == SourceFile {
		return LoadFiles(cfg.Files)
	}
	b, err := fetchPod(ctx, c, cfg, pod)
	if err != nil {
		return nil, err
	}
	return []*Bundle{b}, nil
}

func fetchPod(ctx context.Context, c Clients, cfg Config, pod *corev1.Pod) (*Bundle, error) {
	switch cfg.Source {
	case SourceEnvoy:
		return fetchEnvoy(ctx, c, cfg, pod)
	case SourceLegacy:
		return fetchLegacy(ctx, c, pod)
	case SourceAuto:
		b, err := fetchEnvoy(ctx, c, cfg, pod)
		// Only an Envoy without SDS secrets (Istio ≤ 1.4 mounted files) or
		// without a reachable admin port is worth a second try.
		var unreachable *UnreachableError
		if err == nil || !(errors.Is(err, ErrEmptyConfigDump) || errors.As(err, &unreachable)) {
			return b, err
		}
		lb, lerr := fetchLegacy(ctx, c, pod)
		if lerr == nil {
			return lb, nil
		}
		return nil, fmt.Errorf("no certificates found in pod %s/%s:\n  envoy admin: %v\n  legacy files: %v", pod.Namespace, pod.Name, err, lerr)
	}
	return nil, fmt.Errorf("unknown source %q", cfg.Source)
}

func fetchEnvoy(ctx context.Context, c Clients, cfg Config, pod *corev1.Pod) (*Bundle, error) {
	data, err := c.Forwarder.Get(ctx, pod, cfg.AdminPort, ConfigDumpPath)
	if err != nil {
		return nil, err
	}
	b, err := ParseConfigDump(data)
	if err != nil {
		return nil, fmt.Errorf("reading the Envoy admin config_dump of pod %s/%s (port %d): %w", pod.Namespace, pod.Name, cfg.AdminPort, err)
	}
	b.Origin = fmt.Sprintf("envoy admin config_dump, port-forward to %d", cfg.AdminPort)
	return b, nil
}

func fetchLegacy(ctx context.Context, c Clients, pod *corev1.Pod) (*Bundle, error) {
	b := &Bundle{Source: SourceLegacy, Origin: "exec cat " + LegacyChainFile + " " + LegacyRootFile}
	for _, f := range []string{LegacyChainFile, LegacyRootFile} {
		out, err := c.Executor.Exec(ctx, pod, ProxyContainer, []string{"cat", f})
		if err != nil {
			var ee *ExecError
			if errors.As(err, &ee) && strings.Contains(ee.Stderr, "No such file") {
				return nil, fmt.Errorf("%s does not exist in %s of pod %s/%s: since Istio 1.5 certificates come over SDS; use --source envoy", f, ProxyContainer, pod.Namespace, pod.Name)
			}
			return nil, err
		}
		certs, err := ParsePEM(out)
		if err != nil {
			return nil, fmt.Errorf("reading %s from pod %s/%s: %w", f, pod.Namespace, pod.Name, err)
		}
		if f == LegacyRootFile {
			b.Roots = certs
		} else {
			b.Chain = certs
		}
	}
	return splitRoots(b)
}
