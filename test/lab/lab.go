// Package lab runs a real Kubernetes control plane with a real istiod on
// 127.0.0.1 for the e2e tests and the demo: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, KWOK nodes and istiod with its
// sidecar-injection and validation webhooks. No containers run: KWOK makes
// pods Running without processes.
package lab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// Ports the lab listens on, all on 127.0.0.1.
const (
	APIServerPort = 6443
	IstiodWebhook = 15017
	IstiodHTTP    = 8080
	KwokPort      = 10250
	ContextName   = "kubectl-mesh-lab"
)

var labPorts = []int{2379, 2380, 2381, APIServerPort, 10257, 10259, KwokPort, IstiodHTTP, 15010, 15012, 15014, IstiodWebhook}

// Config says where the lab keeps its binaries and state.
type Config struct {
	// StateDir holds PKI, etcd data, logs, PID files and kubeconfigs.
	StateDir string
	// BinDir holds the binaries built by `make lab-bins`.
	BinDir string
	// Log receives progress lines.
	Log io.Writer
}

// DefaultConfig finds the repository root from the working directory and
// uses _output/ there.
func DefaultConfig() (Config, error) {
	root, err := repoRoot()
	if err != nil {
		return Config{}, err
	}
	c := Config{StateDir: filepath.Join(root, "_output", "lab"), BinDir: filepath.Join(root, "_output", "lab-bin"), Log: os.Stderr}
	if d := os.Getenv("LAB_STATE_DIR"); d != "" {
		c.StateDir = d
	}
	if d := os.Getenv("LAB_BIN_DIR"); d != "" {
		c.BinDir = d
	}
	return c, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/kubectl-mesh/kubectl-mesh\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the kubectl-mesh repository root above the working directory")
		}
		dir = parent
	}
}

// Lab is a running lab.
type Lab struct {
	Config
	PKI *PKI
	// Kubeconfig is the admin kubeconfig (system:masters).
	Kubeconfig string
	// Reused is true when Up found a healthy lab already running.
	Reused bool
	// RESTConfig is the admin client configuration.
	RESTConfig *rest.Config
}

func (c Config) bin(name, version string) string {
	return filepath.Join(c.BinDir, name+"-"+version)
}

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

// daemons lists the processes in start order.
var daemons = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "istiod", "podnet"}

// Up starts the lab, or reuses one that is already running and healthy. A
// lab left behind half-dead by a killed run is stopped and started afresh.
func Up(ctx context.Context, c Config) (*Lab, error) {
	closeInheritedFiles()
	start := time.Now()
	for _, b := range []string{c.bin("etcd", EtcdVersion), c.bin("kube-apiserver", KubeVersion), c.bin("kube-controller-manager", KubeVersion),
		c.bin("kube-scheduler", KubeVersion), c.bin("kwok", KwokVersion), c.bin("pilot-discovery", IstioVersion)} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("lab binary %s is missing: run `make lab-bins` first", b)
		}
	}
	if l, ok := reuse(ctx, c); ok {
		c.logf("lab: reusing the running lab (%s)", c.StateDir)
		return l, nil
	}
	if err := Down(c); err != nil {
		return nil, err
	}
	if err := checkPortsFree(); err != nil {
		return nil, err
	}
	l, err := bringUp(ctx, c)
	if err != nil {
		c.logf("lab: bring-up failed: %v; logs are in %s", err, filepath.Join(c.StateDir, "logs"))
		_ = stopAll(c)
		return nil, err
	}
	c.logf("lab: up in %.1fs", time.Since(start).Seconds())
	return l, nil
}

func reuse(ctx context.Context, c Config) (*Lab, bool) {
	procs, err := readPIDs(c.StateDir)
	if err != nil {
		return nil, false
	}
	// Every daemon must run; extras a test started on demand (the canary
	// istiod) do not make the lab unhealthy.
	alive := map[string]bool{}
	for _, p := range procs {
		alive[p.Name] = p.alive()
	}
	for _, d := range wantDaemons() {
		if !alive[d] {
			return nil, false
		}
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, "ready")); err != nil {
		return nil, false
	}
	pki, err := loadPKI(filepath.Join(c.StateDir, "pki"))
	if err != nil {
		return nil, false
	}
	l := &Lab{Config: c, PKI: pki, Kubeconfig: filepath.Join(c.StateDir, "kubeconfig"), Reused: true}
	if l.RESTConfig, err = clientcmd.BuildConfigFromFlags("", l.Kubeconfig); err != nil {
		return nil, false
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.healthy(hctx); err != nil {
		return nil, false
	}
	// A lab from before node2 is not this lab.
	if kube, err := kubernetes.NewForConfig(l.RESTConfig); err != nil {
		return nil, false
	} else if _, err := kube.CoreV1().Nodes().Get(hctx, Node2Name, metav1.GetOptions{}); err != nil {
		return nil, false
	}
	return l, true
}

func (l *Lab) healthy(ctx context.Context) error {
	kube, err := kubernetes.NewForConfig(l.RESTConfig)
	if err != nil {
		return err
	}
	if _, err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	return istiodReady(ctx)
}

func istiodReady(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/ready", IstiodHTTP), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("istiod not ready: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("istiod not ready: HTTP %d", resp.StatusCode)
	}
	return nil
}

func checkPortsFree() error { return portsFree(labPorts) }

func portsFree(ports []int) error {
	var busy []string
	for _, p := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			busy = append(busy, fmt.Sprint(p))
			continue
		}
		ln.Close()
	}
	if len(busy) > 0 {
		return fmt.Errorf("ports %s on 127.0.0.1 are in use by something that is not this lab; stop it (ss -ltnp shows which process) and retry", strings.Join(busy, ", "))
	}
	return nil
}

func bringUp(ctx context.Context, c Config) (*Lab, error) {
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return nil, err
	}
	t0 := time.Now()
	pki, err := generatePKI(filepath.Join(c.StateDir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generating PKI: %w", err)
	}
	l := &Lab{Config: c, PKI: pki}
	if err := l.writeKubeconfigs(); err != nil {
		return nil, err
	}
	step := func(format string, args ...any) {
		c.logf("lab: [%5.1fs] %s", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
	}

	// etcd
	if _, err := (process{Name: "etcd", Bin: c.bin("etcd", EtcdVersion), Args: []string{
		"--name=main", "--data-dir=" + filepath.Join(c.StateDir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=main=http://127.0.0.1:2380", "--listen-metrics-urls=http://127.0.0.1:2381",
		"--unsafe-no-fsync", "--log-level=warn",
	}}).start(c.StateDir); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://127.0.0.1:2379/health", nil, 30*time.Second); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	step("etcd ready")

	// kube-apiserver
	ap := pki.Cert("apiserver")
	kc := pki.Cert("kubelet-client")
	if _, err := (process{Name: "kube-apiserver", Bin: c.bin("kube-apiserver", KubeVersion), Args: []string{
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--tls-cert-file=" + ap.CertFile, "--tls-private-key-file=" + ap.KeyFile,
		"--client-ca-file=" + pki.CA.CertFile,
		"--kubelet-client-certificate=" + kc.CertFile, "--kubelet-client-key=" + kc.KeyFile,
		"--kubelet-preferred-address-types=InternalDNS,InternalIP", // InternalDNS: localhost (KWOK), InternalIP: podnet's node
		"--service-account-key-file=" + pki.ServiceAccountPub, "--service-account-signing-key-file=" + pki.ServiceAccountKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca",
		"--service-cluster-ip-range=10.0.0.0/24", "--service-node-port-range=30000-32767",
		"--authorization-mode=Node,RBAC", "--allow-privileged", "--endpoint-reconciler-type=none",
		"--profiling=false", "--v=0",
	}}).start(c.StateDir); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/readyz", APIServerPort), l.adminTLS(), 60*time.Second); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	step("kube-apiserver ready")
	kube, err := kubernetes.NewForConfig(l.RESTConfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(l.RESTConfig)
	if err != nil {
		return nil, err
	}

	// controller-manager, scheduler
	if _, err := (process{Name: "kube-controller-manager", Bin: c.bin("kube-controller-manager", KubeVersion), Args: []string{
		"--kubeconfig=" + filepath.Join(c.StateDir, "controller-manager.kubeconfig"),
		"--leader-elect=false", "--secure-port=10257", "--bind-address=127.0.0.1",
		"--service-account-private-key-file=" + pki.ServiceAccountKey, "--root-ca-file=" + pki.CA.CertFile,
		"--cluster-signing-cert-file=" + pki.CA.CertFile, "--cluster-signing-key-file=" + caKeyFile(pki),
		"--use-service-account-credentials=true",
		"--controllers=*,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller",
		"--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20",
		"--kube-api-qps=200", "--kube-api-burst=400",
	}}).start(c.StateDir); err != nil {
		return nil, err
	}
	if _, err := (process{Name: "kube-scheduler", Bin: c.bin("kube-scheduler", KubeVersion), Args: []string{
		"--kubeconfig=" + filepath.Join(c.StateDir, "scheduler.kubeconfig"),
		"--leader-elect=false", "--secure-port=10259", "--bind-address=127.0.0.1",
		"--kube-api-qps=200", "--kube-api-burst=400",
	}}).start(c.StateDir); err != nil {
		return nil, err
	}

	// CRDs: Istio's (rendered from its base chart), Gateway API's, KWOK's.
	istioDir, err := moduleDir(IstioModule)
	if err != nil {
		return nil, err
	}
	kwokDir, err := moduleDir(KwokModule)
	if err != nil {
		return nil, err
	}
	gwDir, err := moduleDir(GatewayAPIModule)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(pki.CA.CertFile)
	if err != nil {
		return nil, err
	}
	istioCRDs, istioRest, err := istioManifests(istioDir, caPEM)
	if err != nil {
		return nil, err
	}
	gwFiles, _ := filepath.Glob(filepath.Join(gwDir, "config/crd/standard/gateway.networking.k8s.io_*.yaml"))
	kwokFiles, _ := filepath.Glob(filepath.Join(kwokDir, "kustomize/crd/bases/kwok.x-k8s.io_*.yaml"))
	others, err := decodeFiles(append(gwFiles, kwokFiles...)...)
	if err != nil {
		return nil, err
	}
	crds := append(istioCRDs, keepKinds(others, "CustomResourceDefinition")...)
	ap2 := newApplier(kube, dyn)
	if err := ap2.applyParallel(ctx, crds); err != nil {
		return nil, fmt.Errorf("installing CRDs: %w", err)
	}
	var crdNames []string
	for _, o := range crds {
		crdNames = append(crdNames, o.GetName())
	}
	if err := waitCRDsEstablished(ctx, dyn, crdNames); err != nil {
		return nil, fmt.Errorf("waiting for %d CRDs to be established: %w", len(crdNames), err)
	}
	step("%d CRDs established (Istio, Gateway API, KWOK)", len(crdNames))
	// Gateway API's ValidatingAdmissionPolicies (safe-upgrade checks).
	if err := ap2.apply(ctx, keepKinds(others, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")); err != nil {
		return nil, err
	}

	// KWOK and its node.
	kwokStages := []string{
		filepath.Join(kwokDir, "kustomize/stage/node/fast/node-initialize.yaml"),
		filepath.Join(kwokDir, "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"),
		filepath.Join(kwokDir, "kustomize/stage/pod/fast/pod-ready.yaml"),
		filepath.Join(kwokDir, "kustomize/stage/pod/fast/pod-complete.yaml"),
		filepath.Join(kwokDir, "kustomize/stage/pod/fast/pod-delete.yaml"),
	}
	kwokArgs := []string{
		"--kubeconfig=" + filepath.Join(c.StateDir, "kwok.kubeconfig"),
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.0/16", "--node-ip=127.0.0.1",
		fmt.Sprintf("--node-port=%d", KwokPort), fmt.Sprintf("--server-address=127.0.0.1:%d", KwokPort),
		"--tls-cert-file=" + pki.Cert("kwok-server").CertFile, "--tls-private-key-file=" + pki.Cert("kwok-server").KeyFile,
		"--enable-crds=PortForward,ClusterPortForward,Exec,ClusterExec,Logs,ClusterLogs,Attach,ClusterAttach",
		// Without leases the node controller sees no heartbeat for minutes,
		// marks the node unreachable and its pods NotReady.
		"--node-lease-duration-seconds=40",
	}
	for _, s := range kwokStages {
		kwokArgs = append(kwokArgs, "--config="+s)
	}
	if _, err := (process{Name: "kwok", Bin: c.bin("kwok", KwokVersion), Args: kwokArgs}).start(c.StateDir); err != nil {
		return nil, err
	}
	n2, err := node2YAML()
	if err != nil {
		return nil, err
	}
	nodes, err := decodeYAML([]byte(nodeYAML + "\n---\n" + n2))
	if err != nil {
		return nil, err
	}
	if err := ap2.apply(ctx, nodes); err != nil {
		return nil, err
	}
	for _, n := range NodeNames() {
		if err := waitNodeReady(ctx, kube, n); err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
	}
	step("KWOK nodes %s ready", strings.Join(NodeNames(), ", "))

	// istiod: its namespace, mesh config, webhooks, then the process.
	if err := ensureNamespace(ctx, kube, "istio-system"); err != nil {
		return nil, err
	}
	if err := ap2.apply(ctx, istioRest); err != nil {
		return nil, fmt.Errorf("applying istiod's chart: %w", err)
	}
	is := pki.Cert("istiod")
	if _, err := (process{Name: "istiod", Bin: c.bin("pilot-discovery", IstioVersion), Dir: c.StateDir, Args: []string{
		"discovery", "--kubeconfig=" + filepath.Join(c.StateDir, "istiod.kubeconfig"),
		fmt.Sprintf("--httpAddr=127.0.0.1:%d", IstiodHTTP), "--grpcAddr=127.0.0.1:15010", "--secureGRPCAddr=127.0.0.1:15012",
		"--monitoringAddr=127.0.0.1:15014", fmt.Sprintf("--httpsAddr=127.0.0.1:%d", IstiodWebhook),
		"--tlsCertFile=" + is.CertFile, "--tlsKeyFile=" + is.KeyFile, "--caCertFile=" + pki.CA.CertFile,
		"--domain=cluster.local", "--log_output_level=default:warn",
	}, Env: []string{
		"POD_NAMESPACE=istio-system", "POD_NAME=istiod-lab", "REVISION=default", "CLUSTER_ID=Kubernetes",
		"PILOT_CERT_PROVIDER=istiod", "INJECTION_WEBHOOK_CONFIG_NAME=istio-sidecar-injector",
		"VALIDATION_WEBHOOK_CONFIG_NAME=", "ENABLE_LEADER_ELECTION=false", "ISTIOD_CUSTOM_HOST=127.0.0.1",
		// Ambient on, and with it the gateway controller (on by default):
		// istiod deploys and programs waypoints and Gateway API gateways
		// (Deployment, Service, ServiceAccount), which KWOK runs.
		"PILOT_ENABLE_AMBIENT=true",
	}}).start(c.StateDir); err != nil {
		return nil, err
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		return istiodReady(ctx) == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("istiod did not become ready: %w", err)
	}
	step("istiod ready (injection and validation webhooks on 127.0.0.1:%d)", IstiodWebhook)

	// The workshop app and the ingress gateway.
	app, err := decodeYAML([]byte(WorkshopYAML + "\n---\n" + ingressGatewayYAML))
	if err != nil {
		return nil, err
	}
	if err := waitServiceAccount(ctx, kube, "default", "default"); err != nil {
		return nil, err
	}
	if err := ap2.apply(ctx, app); err != nil {
		return nil, fmt.Errorf("deploying the workshop app: %w", err)
	}
	for _, d := range []struct{ ns, name string }{{"default", "frontend-app"}, {"default", "backend-app"}, {"istio-system", "istio-ingressgateway"}} {
		if err := WaitDeploymentReady(ctx, kube, d.ns, d.name, 60*time.Second); err != nil {
			return nil, err
		}
	}
	step("workshop app running in default")
	if err := startPodnet(ctx, c, pki); err != nil {
		return nil, err
	}
	if plan, err := podnet.Plan(NodeNames()...); err == nil && os.Geteuid() == 0 {
		for _, n := range plan {
			step("pod network: node %s at %s (pods on %s, namespace %s)", n.Name, n.IP, n.PodCIDR, n.NS)
		}
		step("workshop pods carry traffic, across the nodes' LAN between nodes")
	}
	if os.Geteuid() == 0 {
		if err := l.EnsureNodeExec(ctx); err != nil {
			return nil, err
		}
		step("exec into capture pods runs in their node's network namespace (%s)", strings.Join(NodeNames(), ", "))
	}
	if err := os.WriteFile(filepath.Join(c.StateDir, "ready"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return l, nil
}

func caKeyFile(p *PKI) string { return p.CA.KeyFile }

func (l *Lab) adminTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(l.PKI.CA.Cert)
	admin := l.PKI.Cert("admin")
	cert, _ := tls.LoadX509KeyPair(admin.CertFile, admin.KeyFile)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}
}

// writeKubeconfigs writes one kubeconfig per client identity.
func (l *Lab) writeKubeconfigs() error {
	for name, cert := range map[string]string{
		"kubeconfig": "admin", "controller-manager.kubeconfig": "controller-manager", "scheduler.kubeconfig": "scheduler",
		"kwok.kubeconfig": "kwok", "istiod.kubeconfig": "istiod",
	} {
		kp := l.PKI.Cert(cert)
		path := filepath.Join(l.StateDir, name)
		if err := WriteKubeconfig(path, l.PKI.CA.CertFile, kp.CertFile, kp.KeyFile, "lab-"+cert); err != nil {
			return err
		}
	}
	l.Kubeconfig = filepath.Join(l.StateDir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	l.RESTConfig = cfg
	return nil
}

// WriteKubeconfig writes a kubeconfig for the lab's API server with a client
// certificate; context "kubectl-mesh-lab", namespace default.
func WriteKubeconfig(path, caFile, certFile, keyFile, user string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ContextName] = &clientcmdapi.Cluster{Server: fmt.Sprintf("https://127.0.0.1:%d", APIServerPort), CertificateAuthority: caFile}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: certFile, ClientKey: keyFile}
	cfg.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = ContextName
	return clientcmd.WriteToFile(*cfg, path)
}

func waitHTTP(ctx context.Context, url string, tlsCfg *tls.Config, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		resp, err := client.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func waitNodeReady(ctx context.Context, kube kubernetes.Interface, name string) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

func waitServiceAccount(ctx context.Context, kube kubernetes.Interface, ns, name string) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil, nil
	})
}

func ensureNamespace(ctx context.Context, kube kubernetes.Interface, name string) error {
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// WaitDeploymentReady waits until a Deployment's rollout is complete and all
// its replicas are available.
func WaitDeploymentReady(ctx context.Context, kube kubernetes.Interface, ns, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil {
				last = err.Error()
			}
			return false, nil
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		last = fmt.Sprintf("updated %d, available %d, total %d of %d", s.UpdatedReplicas, s.AvailableReplicas, s.Replicas, want)
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not ready after %s (%s): %w", ns, name, timeout, last, err)
	}
	return nil
}

// Down stops every process the lab started (by PID) and removes its state.
func Down(c Config) error {
	if err := stopAll(c); err != nil {
		return err
	}
	// The pod network's names are host-wide: only a state dir that ran
	// podnet may remove them, or Down on another state dir (a test's) would
	// tear the network out from under the running lab. podnet also cleans
	// up at start, so nothing a killed one left survives the next lab up.
	if _, err := os.Stat(c.PodnetDir()); err == nil {
		if err := podnet.Cleanup(); err != nil {
			return fmt.Errorf("removing the pod network: %w", err)
		}
	}
	if err := os.RemoveAll(c.StateDir); err != nil {
		return fmt.Errorf("removing lab state %s: %w", c.StateDir, err)
	}
	return nil
}

// stopAll stops the recorded processes in reverse start order.
func stopAll(c Config) error {
	procs, err := readPIDs(c.StateDir)
	if err != nil {
		return err
	}
	order := map[string]int{}
	for i, d := range daemons {
		order[d] = i
	}
	for i := len(daemons) - 1; i >= 0; i-- {
		for _, p := range procs {
			if p.Name == daemons[i] {
				p.stop(5 * time.Second)
			}
		}
	}
	// Anything recorded that is not a known daemon (a newer lab's extras).
	for _, p := range procs {
		if _, known := order[p.Name]; !known {
			p.stop(5 * time.Second)
		}
	}
	return nil
}

// Running says whether a healthy lab is up.
func Running(ctx context.Context, c Config) bool {
	_, ok := reuse(ctx, c)
	return ok
}

// The pod network (podnet): network namespaces, sshd and the workshop's
// traffic for the KWOK pods. It needs root; without it the lab runs without
// pod traffic.

// wantDaemons lists the daemons a healthy lab runs.
func wantDaemons() []string {
	if os.Geteuid() == 0 {
		return daemons
	}
	return daemons[:len(daemons)-1]
}

// PodnetDir holds podnet's SSH files (ssh/config for `kubectl mesh sniff
// --ssh-config`) and the pods' log files.
func (c Config) PodnetDir() string { return filepath.Join(c.StateDir, "podnet") }

// startPodnet builds podnet from this source tree (cached by go build),
// starts it and waits until the running workshop pods have a network.
func startPodnet(ctx context.Context, c Config, pki *PKI) error {
	if os.Geteuid() != 0 {
		c.logf("lab: not root: the workshop pods get no network and carry no traffic (podnet needs root)")
		return nil
	}
	bin, err := buildPodnet(ctx, c)
	if err != nil {
		return err
	}
	return runPodnet(ctx, c, pki, bin)
}
