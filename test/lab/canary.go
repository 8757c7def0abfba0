package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// The canary control plane: a second istiod, revision "canary", started on
// demand by the tests that need two revisions. Its ports are the default
// istiod's plus 100 so both run side by side on 127.0.0.1.
const (
	CanaryRevision = "canary"
	CanaryWebhook  = IstiodWebhook + 100
	CanaryHTTP     = IstiodHTTP + 100
	// CanarySecureGRPC is its XDS and CA port (the default's is 15012).
	CanarySecureGRPC = 15112

	canaryGRPC       = 15110
	canaryMonitoring = 15114
	canaryCtrlz      = 9976 // the default istiod's ControlZ is on 9876

	canaryProcess = "istiod-canary"
)

var canaryPorts = []int{CanaryWebhook, CanaryHTTP, canaryGRPC, CanarySecureGRPC, canaryMonitoring, canaryCtrlz}

// Canary is a running second istiod with its ConfigMaps and injector
// webhook configuration.
type Canary struct {
	Revision string
	PID      int
	// Injector is its MutatingWebhookConfiguration.
	Injector string
	// Objects are what StartCanary applied (ConfigMaps, the webhook
	// configuration); Stop deletes them.
	Objects []*unstructured.Unstructured

	lab *Lab
}

// StartCanary starts istiod for revision canary and applies what the
// istiod chart renders for that revision (mesh, injector and values ConfigMaps,
// the injector webhook calling 127.0.0.1:CanaryWebhook). Its serving
// certificate comes from the lab's CA, like the default istiod's, and it
// finds the default istiod's CA secret in istio-system, so both revisions
// issue workload certificates under one root. A canary left running by a
// killed test is stopped first; `lab down` stops one too (its PID is
// recorded with the lab's daemons).
func (l *Lab) StartCanary(ctx context.Context) (*Canary, error) {
	if err := l.stopRecorded(canaryProcess); err != nil {
		return nil, err
	}
	if err := portsFree(canaryPorts); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(l.RESTConfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(l.RESTConfig)
	if err != nil {
		return nil, err
	}
	istioDir, err := moduleDir(IstioModule)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(l.PKI.CA.CertFile)
	if err != nil {
		return nil, err
	}
	rendered, err := renderIstiod(istioDir, CanaryRevision, CanaryWebhook, caPEM)
	if err != nil {
		return nil, err
	}
	c := &Canary{Revision: CanaryRevision, Injector: "istio-sidecar-injector-" + CanaryRevision, lab: l,
		Objects: keepKinds(rendered, "ConfigMap", "MutatingWebhookConfiguration")}

	// Its own identity, from the lab's CA: a serving certificate valid for
	// 127.0.0.1 and the istiod-canary Service name the injected proxies
	// are told to dial, and a kubeconfig for the API server.
	dir := filepath.Join(l.StateDir, canaryProcess)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cert, err := l.PKI.CA.sign(dir, certSpec{name: canaryProcess, cn: canaryProcess, orgs: []string{"system:masters"},
		server: true, client: true, ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		dnsNames: []string{"localhost", "istiod-canary.istio-system.svc", "istiod-canary.istio-system.svc.cluster.local"}})
	if err != nil {
		return nil, fmt.Errorf("issuing the canary istiod's certificate: %w", err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(kubeconfig, l.PKI.CA.CertFile, cert.CertFile, cert.KeyFile, "lab-"+canaryProcess); err != nil {
		return nil, err
	}

	// ConfigMaps before the process: istiod reads its mesh config and
	// injection template at start and skips injection without them.
	ap := newApplier(kube, dyn)
	if err := ap.apply(ctx, c.Objects); err != nil {
		_ = ap.delete(context.Background(), c.Objects)
		return nil, fmt.Errorf("applying the canary's chart: %w", err)
	}
	c.PID, err = (process{Name: canaryProcess, Bin: l.bin("pilot-discovery", IstioVersion), Dir: dir, Args: []string{
		"discovery", "--kubeconfig=" + kubeconfig,
		fmt.Sprintf("--httpAddr=127.0.0.1:%d", CanaryHTTP), fmt.Sprintf("--grpcAddr=127.0.0.1:%d", canaryGRPC),
		fmt.Sprintf("--secureGRPCAddr=127.0.0.1:%d", CanarySecureGRPC), fmt.Sprintf("--monitoringAddr=127.0.0.1:%d", canaryMonitoring),
		fmt.Sprintf("--httpsAddr=127.0.0.1:%d", CanaryWebhook), fmt.Sprintf("--ctrlz_port=%d", canaryCtrlz),
		"--tlsCertFile=" + cert.CertFile, "--tlsKeyFile=" + cert.KeyFile, "--caCertFile=" + l.PKI.CA.CertFile,
		"--domain=cluster.local", "--log_output_level=default:warn",
	}, Env: []string{
		"POD_NAMESPACE=istio-system", "POD_NAME=istiod-canary-lab", "REVISION=" + CanaryRevision, "CLUSTER_ID=Kubernetes",
		"PILOT_CERT_PROVIDER=istiod", "INJECTION_WEBHOOK_CONFIG_NAME=" + c.Injector,
		"VALIDATION_WEBHOOK_CONFIG_NAME=", "ENABLE_LEADER_ELECTION=false", "ISTIOD_CUSTOM_HOST=127.0.0.1",
		"PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER=false",
	}}).start(l.StateDir)
	if err != nil {
		_ = ap.delete(context.Background(), c.Objects)
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/ready", CanaryHTTP), nil, 90*time.Second); err != nil {
		_ = c.Stop(context.Background())
		return nil, fmt.Errorf("the canary istiod did not become ready (log: %s): %w", filepath.Join(l.StateDir, "logs", canaryProcess+".log"), err)
	}
	// Ready covers discovery. The API server must also call the canary's
	// webhook, which it does once its informer has the new configuration:
	// a dry-run pod asking for the revision shows who injects it.
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last, err = InjectedRevision(ctx, kube, "istio-system", map[string]string{"istio.io/rev": CanaryRevision})
		if err != nil {
			last = err.Error()
		}
		return last == CanaryRevision, nil
	})
	if err != nil {
		_ = c.Stop(context.Background())
		return nil, fmt.Errorf("pods asking for revision %s are not injected by the canary istiod (last: %s): %w", CanaryRevision, last, err)
	}
	return c, nil
}

// Stop stops the canary istiod by its PID and deletes its objects.
func (c *Canary) Stop(ctx context.Context) error {
	stopErr := c.lab.stopRecorded(canaryProcess)
	kube, err := kubernetes.NewForConfig(c.lab.RESTConfig)
	if err != nil {
		return errors.Join(stopErr, err)
	}
	dyn, err := dynamic.NewForConfig(c.lab.RESTConfig)
	if err != nil {
		return errors.Join(stopErr, err)
	}
	return errors.Join(stopErr, newApplier(kube, dyn).delete(ctx, c.Objects))
}

// stopRecorded stops the recorded process name, if it runs, and forgets it.
func (l *Lab) stopRecorded(name string) error {
	procs, err := readPIDs(l.StateDir)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Name == name {
			p.stop(5 * time.Second)
		}
	}
	if err := os.Remove(pidFile(l.StateDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// delete removes objects, ignoring those already gone.
func (a *applier) delete(ctx context.Context, objs []*unstructured.Unstructured) error {
	var errs []error
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		if err := ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// InjectedRevision creates a pod with labels in namespace ns as a
// server-side dry run, so the API server calls the injection webhooks but
// stores nothing, and returns the revision of the istiod that injected it
// ("" when none did).
func InjectedRevision(ctx context.Context, kube kubernetes.Interface, ns string, labels map[string]string) (string, error) {
	zero := int64(0)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "injection-probe-", Labels: labels},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Containers: []corev1.Container{{Name: "probe", Image: "kubectl-mesh-lab/probe"}}}}
	got, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "", err
	}
	raw, ok := got.Annotations["sidecar.istio.io/status"]
	if !ok {
		return "", nil
	}
	var st struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return "", fmt.Errorf("pod annotation sidecar.istio.io/status: %w", err)
	}
	return st.Revision, nil
}
