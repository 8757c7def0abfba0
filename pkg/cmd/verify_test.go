package cmd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/verify"
)

// verifyFixture is the workshop: frontend and backend in default (with
// sidecars of proxyVersion, or none), their Services, istiod 1.31.0 with its
// injector, an ingress gateway in istio-system and a client without a
// sidecar in legacy.
func verifyFixture(proxyVersion string) []runtime.Object {
	trueVal := true
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{"istio-injection": "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod", Labels: map[string]string{"app": "istiod"}},
			Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "discovery", Image: "docker.io/istio/pilot:1.31.0"}}}}}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "istio-sidecar-injector", Labels: map[string]string{"istio.io/rev": "default"}},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "namespace.sidecar-injector.istio.io",
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"istio-injection": "enabled"}}, ObjectSelector: &metav1.LabelSelector{}}}},
	}
	app := func(ns, name, ip, sa string, sidecar string) []runtime.Object {
		labels := map[string]string{"app": name}
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}}}}
		pl := map[string]string{"app": name, "pod-template-hash": "abc12"}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-abc12-x1", Labels: pl,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-abc12", Controller: &trueVal}}},
			Spec: corev1.PodSpec{NodeName: "node1", ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "10.243.0.2",
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		if sidecar != "" {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "docker.io/istio/proxyv2:" + sidecar})
			p.Annotations = map[string]string{"sidecar.istio.io/status": `{"revision":"default"}`}
		}
		return []runtime.Object{d, p}
	}
	objs = append(objs, app("default", "backend-app", "10.244.0.6", "default", proxyVersion)...)
	objs = append(objs, app("default", "frontend-app", "10.244.0.5", "default", proxyVersion)...)
	objs = append(objs, app("legacy", "legacy-cron", "10.244.0.9", "default", "")...)
	svc := func(name, app string, target intstr.IntOrString, ip string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: target, Protocol: corev1.ProtocolTCP}}}}
	}
	return append(objs, svc("backend", "backend-app", intstr.FromInt32(80), "10.96.0.20"), svc("frontend", "frontend-app", intstr.FromString("http"), "10.96.0.30"))
}

// fakeCerts serves each pod's certificates from a testdata/certs directory
// as Istio ≤ 1.4's files (the admin port is unreachable), or refuses.
type fakeCerts struct {
	dirs   map[string]string // pod name → directory
	forbid bool
}

func (f *fakeCerts) Get(_ context.Context, pod *corev1.Pod, port int, _ string) ([]byte, error) {
	if f.forbid {
		return nil, &certs.ForbiddenError{Namespace: pod.Namespace, Pod: pod.Name, Subresource: "portforward", Err: errors.New("forbidden")}
	}
	return nil, &certs.UnreachableError{Namespace: pod.Namespace, Pod: pod.Name, Port: port, Err: errors.New("connection refused")}
}

func (f *fakeCerts) Exec(_ context.Context, pod *corev1.Pod, _ string, cmd []string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", "certs", f.dirs[pod.Name], filepath.Base(cmd[1])))
}

func flow(src, dst, proto string, v sniff.Verdict, packets int, evidence string) sniff.FlowSummary {
	return sniff.FlowSummary{Src: src, Dst: dst, Transport: "tcp", Protocol: proto, Verdict: v, Packets: packets, Bytes: packets * 100, Evidence: evidence}
}

func fakeCapture(flows []sniff.FlowSummary, infra []sniff.FlowSummary, err error) verify.CaptureFunc {
	return func(_ context.Context, groups []sniff.NodeGroup) []sniff.NodeCapture {
		out := make([]sniff.NodeCapture, len(groups))
		for i, g := range groups {
			out[i] = sniff.NodeCapture{Node: g.Node, Pods: g.Pods, Err: err}
			if err == nil {
				out[i].Report = &sniff.Report{Packets: 500, Flows: flows, Infra: infra}
			}
		}
		return out
	}
}

var (
	probes     = []sniff.FlowSummary{{Src: "10.243.0.2:50000", Dst: "10.244.0.6:15021", Transport: "tcp", Protocol: "HTTP/1.1", Verdict: sniff.VerdictPlaintext, Packets: 12, Infra: "kubelet probe"}}
	plainFlows = []sniff.FlowSummary{
		flow("10.244.0.5:41000", "10.244.0.6:80", "HTTP/1.1", sniff.VerdictPlaintext, 40, "HTTP/1.1 request GET /greetings"),
		flow("10.244.0.5:41002", "10.244.0.6:80", "HTTP/1.1", sniff.VerdictPlaintext, 30, "HTTP/1.1 request GET /greetings"),
	}
	mtlsFlows = []sniff.FlowSummary{
		flow("10.244.0.5:41000", "10.244.0.6:80", "TLS", sniff.VerdictEncryptedIstio, 60, "TLS records; inbound to the captured pod's sidecar"),
		flow("10.244.0.9:52000", "10.96.0.30:80", "HTTP/1.1", sniff.VerdictPlaintext, 8, "HTTP/1.1 request GET /"),
	}
	mtlsOnly = []sniff.FlowSummary{
		flow("10.244.0.5:41000", "10.244.0.6:80", "TLS", sniff.VerdictEncryptedIstio, 60, "TLS records; inbound to the captured pod's sidecar"),
		flow("10.244.0.77:52000", "10.244.0.5:8080", "TLS", sniff.VerdictEncryptedIstio, 10, "TLS handshake ALPN istio-peer-exchange"),
	}
)

func TestVerify(t *testing.T) {
	strict := &securityv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"},
		Spec: securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}}}
	good := map[string]string{"backend-app-abc12-x1": "good", "frontend-app-abc12-x1": "good"}
	tests := []struct {
		name     string
		args     []string
		proxy    string
		istio    []runtime.Object
		certs    *fakeCerts
		flows    []sniff.FlowSummary
		capErr   error
		wantCode int
		wantErr  string // stderr's last line
	}{
		{name: "before-mesh", args: []string{"default"}, flows: plainFlows, wantCode: 2},
		{name: "before-mesh-dot", args: []string{"default", "-o", "dot"}, flows: plainFlows, wantCode: 2},
		{name: "before-mesh-mermaid", args: []string{"default", "-o", "mermaid"}, flows: plainFlows, wantCode: 2},
		{name: "meshed", args: []string{"default"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows, wantCode: 0},
		{name: "meshed-json", args: []string{"default", "-o", "json"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows, wantCode: 0},
		{name: "meshed-yaml", args: []string{"default", "-o", "yaml"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows, wantCode: 0},
		{name: "meshed-dot", args: []string{"default", "-o", "dot"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows, wantCode: 0},
		{name: "meshed-mermaid", args: []string{"default", "-o", "mermaid"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows, wantCode: 0},
		{name: "strict-yaml", args: []string{"default", "--strict-yaml"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsOnly, wantCode: 0},
		{name: "strict-already", args: []string{"default"}, proxy: "1.31.0", istio: []runtime.Object{strict}, certs: &fakeCerts{dirs: good}, flows: mtlsOnly, wantCode: 0},
		{name: "idle-service", args: []string{"default"}, proxy: "1.31.0", certs: &fakeCerts{dirs: good}, flows: mtlsFlows[:1], wantCode: 3},
		{name: "skew-wrong-root", args: []string{"default"}, proxy: "1.30.0", certs: &fakeCerts{dirs: map[string]string{"backend-app-abc12-x1": "good", "frontend-app-abc12-x1": "wrong-root"}}, flows: mtlsOnly, wantCode: 2},
		{name: "no-access", args: []string{"default"}, proxy: "1.31.0", certs: &fakeCerts{forbid: true}, capErr: errors.New(`no SSH settings for node node1: give --ssh-user (and --ssh-key), or set up ~/.ssh/config for it, or use --via pod`), wantCode: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fake.New(verifyFixture(tc.proxy), tc.istio)
			o := newVerifyOptions(f.Options)
			if tc.certs != nil {
				o.certsClients = &certs.Clients{Forwarder: tc.certs, Executor: tc.certs}
			}
			o.captureNodes = fakeCapture(tc.flows, probes, tc.capErr)
			cmd := newCmdVerify(o)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			cmd.SetArgs(tc.args)
			cmd.SetOut(f.Out)
			cmd.SetErr(f.ErrOut)
			err := cmd.ExecuteContext(context.Background())
			code := 0
			var ec exitCoder
			if errors.As(err, &ec) {
				code = ec.ExitCode()
			} else if err != nil {
				t.Fatalf("unexpected error: %v\nstderr:\n%s", err, f.ErrOut)
			}
			if code != tc.wantCode {
				t.Errorf("exit %d (%v), want %d\nstdout:\n%s", code, err, tc.wantCode, f.Out)
			}
			verifyGolden(t, tc.name, f.Out.String())
			if strings.HasSuffix(tc.name, "-dot") {
				checkDot(t, f.Out.String())
			}
		})
	}
}

// verifyGolden compares got with testdata/verify/NAME.golden;
// UPDATE_GOLDEN=1 rewrites it (review the diff before committing).
func verifyGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "verify", name+".golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// checkDot runs graphviz on the output when it is installed
// (hack/install-deps.sh installs it for make test).
func checkDot(t *testing.T, src string) {
	t.Helper()
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Log("dot not installed: the output was not checked by graphviz")
		return
	}
	cmd := exec.Command(dot, "-Tsvg")
	cmd.Stdin = strings.NewReader(src)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "<svg") {
		t.Errorf("dot -Tsvg rejected the output: %v\n%s", err, out)
	}
}

func TestVerifyValidate(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-A", "default"}, "give NAMESPACE arguments or -A, not both"},
		{[]string{"-o", "html"}, `invalid --output "html": use table, json, yaml, dot, mermaid`},
		{[]string{"--strict-yaml", "-o", "json"}, "--strict-yaml prints YAML on stdout: it cannot be combined with -o"},
		{[]string{"-l", "a in (b"}, `invalid --selector "a in (b": unable to parse requirement: found '', expected: ',' or ')'`},
		{[]string{"--via", "telnet"}, `--via must be auto, ssh or pod, got "telnet"`},
		{[]string{"--duration", "0s"}, "--duration must be positive: the capture on each node stops after it"},
		{[]string{"--concurrency", "0"}, "--concurrency must be at least 1"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			f := fake.New(nil, nil)
			cmd := newCmdVerify(newVerifyOptions(f.Options))
			cmd.SilenceUsage, cmd.SilenceErrors = true, true
			cmd.SetArgs(tc.args)
			cmd.SetOut(f.Out)
			cmd.SetErr(f.ErrOut)
			err := cmd.ExecuteContext(context.Background())
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
