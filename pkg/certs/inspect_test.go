package certs

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type stubForwarder struct {
	body []byte
	err  error
	got  []string
}

func (s *stubForwarder) Get(_ context.Context, pod *corev1.Pod, port int, path string) ([]byte, error) {
	s.got = append(s.got, pod.Name+":"+path)
	return s.body, s.err
}

type stubExecutor map[string]string // file → content; missing → No such file

func (s stubExecutor) Exec(_ context.Context, pod *corev1.Pod, container string, command []string) ([]byte, error) {
	if c, ok := s[command[1]]; ok {
		return []byte(c), nil
	}
	return nil, &ExecError{Command: command, Stderr: "cat: " + command[1] + ": No such file or directory\n", Err: errors.New("command terminated with exit code 1")}
}

func meshPod(name string, proxy bool, phase corev1.PodPhase) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
	if proxy {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainer})
	}
	return p
}

func TestInspect(t *testing.T) {
	ca := newCA(t, "cluster.local", 1)
	leaf := ca.leaf(t, spiffeDefault, now.Add(-time.Hour), now.Add(48*time.Hour))
	dump := configDump(t, []*x509.Certificate{leaf}, []*x509.Certificate{ca.cert}, false)
	legacy := stubExecutor{LegacyChainFile: string(EncodePEM([]*x509.Certificate{leaf})), LegacyRootFile: string(EncodePEM([]*x509.Certificate{ca.cert}))}
	unreachable := &UnreachableError{Namespace: "default", Pod: "p", Port: 15000, Err: errors.New("connection refused")}
	forbidden := &ForbiddenError{Namespace: "default", Pod: "p", Subresource: "portforward", Err: errors.New("forbidden by RBAC")}

	nativeSidecar := meshPod("p", false, corev1.PodRunning)
	always := corev1.ContainerRestartPolicyAlways
	nativeSidecar.Spec.InitContainers = []corev1.Container{{Name: ProxyContainer, RestartPolicy: &always}}

	tests := []struct {
		name       string
		pod        *corev1.Pod
		source     Source
		fwd        *stubForwarder
		exec       stubExecutor
		wantSource Source
		wantErr    string
	}{
		{name: "envoy admin", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{body: dump}, wantSource: SourceEnvoy},
		{name: "native sidecar", pod: nativeSidecar, fwd: &stubForwarder{body: dump}, wantSource: SourceEnvoy},
		{name: "auto falls back to legacy files on empty dump", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{body: []byte("{}")}, exec: legacy, wantSource: SourceLegacy},
		{name: "auto falls back to legacy files when admin is unreachable", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{err: unreachable}, exec: legacy, wantSource: SourceLegacy},
		{name: "forced legacy", pod: meshPod("p", true, corev1.PodRunning), source: SourceLegacy, fwd: &stubForwarder{}, exec: legacy, wantSource: SourceLegacy},
		{
			name: "no sidecar", pod: meshPod("p", false, corev1.PodRunning), fwd: &stubForwarder{},
			wantErr: "pod default/p has no istio-proxy container, so it has no mesh certificate; enable sidecar injection and restart its workloads:\n  kubectl mesh enable-injection default\n  kubectl mesh restart default",
		},
		{
			name: "pending", pod: meshPod("p", true, ""), fwd: &stubForwarder{},
			wantErr: "pod default/p is Pending, not Running; wait for it (kubectl wait --for=condition=Ready pod/p -n default) or pick another pod",
		},
		{
			name: "forbidden is not retried", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{err: forbidden}, exec: legacy,
			wantErr: "not allowed to port-forward to pod default/p: forbidden by RBAC; ask for RBAC rights to create pods/portforward in namespace default (check with: kubectl auth can-i create pods/portforward -n default)",
		},
		{
			name: "unreachable and no legacy files", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{err: unreachable}, exec: stubExecutor{},
			wantErr: "no certificates found in pod default/p:\n  envoy admin: Envoy admin port 15000 of pod default/p is unreachable: connection refused; check that istio-proxy is running (kubectl logs p -n default -c istio-proxy) and the port (--proxy-admin-port)\n  legacy files: /etc/certs/cert-chain.pem does not exist in istio-proxy of pod default/p: since Istio 1.5 certificates come over SDS; use --source envoy",
		},
		{
			name: "forced envoy, empty dump", pod: meshPod("p", true, corev1.PodRunning), source: SourceEnvoy, fwd: &stubForwarder{body: []byte("")}, exec: legacy,
			wantErr: "reading the Envoy admin config_dump of pod default/p (port 15000): config_dump has no secrets: the response is empty",
		},
		{
			name: "malformed is not retried", pod: meshPod("p", true, corev1.PodRunning), fwd: &stubForwarder{body: []byte("[")}, exec: legacy,
			wantErr: "reading the Envoy admin config_dump of pod default/p (port 15000): malformed config_dump: ",
		},
		{name: "no pod", fwd: &stubForwarder{}, wantErr: "no pod given: name a pod, TYPE/NAME or -l SELECTOR, or read PEM files or a saved dump with --file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Source: tt.source, Now: now}
			rs, err := Inspect(context.Background(), Clients{Forwarder: tt.fwd, Executor: tt.exec}, cfg, tt.pod)
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 {
				t.Fatalf("%d reports, want 1", len(rs))
			}
			r := rs[0]
			if r.Source != tt.wantSource || !r.Verdict.OK {
				t.Errorf("source %s verdict %+v", r.Source, r.Verdict)
			}
			if r.Workload == nil || *r.Workload != (Workload{Namespace: "default", Pod: "p", ServiceAccount: "default"}) {
				t.Errorf("workload %+v", r.Workload)
			}
			if tt.source != SourceLegacy && (len(tt.fwd.got) != 1 || tt.fwd.got[0] != "p:"+ConfigDumpPath) {
				t.Errorf("forwarder calls %v", tt.fwd.got)
			}
		})
	}
}
