package cmd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
)

func certsPod(name, sa string, labels map[string]string, proxy bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if proxy {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy"})
	}
	return p
}

// golden compares got with testdata/certs/NAME.golden; UPDATE_GOLDEN=1
// rewrites the file (review the diff before committing).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "certs", name+".golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
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

func TestCerts(t *testing.T) {
	app := map[string]string{"app": "web"}
	pods := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		certsPod("web-1", "", app, true),
		certsPod("web-2", "default", app, true),
		certsPod("cart-1", "cart", map[string]string{"app": "cart"}, true),
		certsPod("plain-1", "", nil, false),
	}
	strict := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "default"},
		Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}},
	}
	portLevel := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: securityv1beta1.PeerAuthentication{
			Selector:      &typev1beta1.WorkloadSelector{MatchLabels: app},
			PortLevelMtls: map[uint32]*securityv1beta1.PeerAuthentication_MutualTLS{8080: {Mode: securityv1beta1.PeerAuthentication_MutualTLS_PERMISSIVE}},
		},
	}
	good := "testdata/certs/good"
	tests := []struct {
		name       string
		args       []string
		golden     string // stdout golden file, when stdout is long
		wantOut    string
		wantErrOut string
		wantErr    string
		wantCode   int
	}{
		{name: "files alone", args: []string{"--file", good}, golden: "files"},
		{name: "pod with files and mtls", args: []string{"web-1", "--file", good + "/cert-chain.pem", "--file", good + "/root-cert.pem"}, golden: "pod"},
		{name: "wide", args: []string{"web-1", "--file", good, "-o", "wide"}, golden: "wide"},
		{name: "selector", args: []string{"-l", "app=web", "--file", good}, golden: "selector"},
		{
			name: "expiring warns", args: []string{"web-1", "--file", "testdata/certs/expiring"}, golden: "expiring",
			wantErrOut: "Warning: default/web-1: leaf certificate spiffe://cluster.local/ns/default/sa/default expires in 4h (not after 2026-01-02T07:04:05Z)\n",
		},
		{
			name: "expired", args: []string{"web-1", "--file", "testdata/certs/expired"}, golden: "expired", wantCode: 2,
			wantErr: "certificate verdict failed for default/web-1: leaf certificate spiffe://cluster.local/ns/default/sa/default expired 6h ago (not after 2026-01-01T21:04:05Z); the proxy is not rotating it: check the istio-proxy logs and istiod",
		},
		{
			name: "not yet valid", args: []string{"web-1", "--file", "testdata/certs/not-yet-valid", "-o", "yaml"}, golden: "not-yet-valid.yaml", wantCode: 2,
			wantErr: "certificate verdict failed for default/web-1: leaf certificate spiffe://cluster.local/ns/default/sa/default is not valid until 2026-01-02T06:04:05Z (in 3h); check the clocks of the node and istiod",
		},
		{
			name: "wrong root", args: []string{"web-1", "--file", "testdata/certs/wrong-root", "-o", "json"}, golden: "wrong-root.json", wantCode: 2,
			wantErr: `certificate verdict failed for default/web-1: chain does not verify to the trust root "O=cluster.local" (SHA-256 `,
		},
		{
			name: "wrong identity", args: []string{"cart-1", "--file", "testdata/certs/good"}, golden: "wrong-identity", wantCode: 2,
			wantErr: `certificate verdict failed for default/cart-1: identity spiffe://cluster.local/ns/default/sa/default does not match the pod: expected namespace "default" and service account "cart" (spiffe://cluster.local/ns/default/sa/cart); the proxy is serving another workload's certificate`,
		},
		{
			name: "pod without sidecar", args: []string{"plain-1"},
			wantErr: "pod default/plain-1 has no istio-proxy container, so it has no mesh certificate; enable sidecar injection and restart its workloads:\n  kubectl mesh enable-injection default\n  kubectl mesh restart default",
		},
		{
			name: "no such pod or workload", args: []string{"nope"},
			wantErr: "no pod, deployment, statefulset or daemonset named \"nope\" in namespace default; list pods with: kubectl get pods -n default",
		},
		{name: "selector matches nothing", args: []string{"-l", "app=none"}, wantErr: `no pods match selector "app=none" in namespace default`},
		{name: "no argument", args: nil, wantErr: "name a pod: kubectl mesh certs POD (or TYPE/NAME, or -l SELECTOR, or --file PATH)"},
		{name: "bad source", args: []string{"web-1", "--source", "sds"}, wantErr: `invalid --source "sds": use auto, envoy, legacy, ztunnel or file`},
		{name: "bad output", args: []string{"web-1", "-o", "xml"}, wantErr: `unable to match a printer suitable for the output format "xml", allowed formats are: table,wide,pem,json,yaml,go-template,go-template-file,template,templatefile,jsonpath,jsonpath-as-json,jsonpath-file`},
		{name: "jsonpath", args: []string{"web-1", "--file", "testdata/certs/wrong-root", "-o", "jsonpath={.workload.pod} {.mtls.mode}"}, wantOut: "web-1 STRICT", wantCode: 2, wantErr: "certificate verdict failed for default/web-1"},
		{name: "bad port", args: []string{"web-1", "--proxy-admin-port", "0"}, wantErr: "invalid --proxy-admin-port 0: use a port between 1 and 65535"},
		{name: "file with other source", args: []string{"web-1", "--file", good, "--source", "envoy"}, wantErr: "--file reads files, it cannot be combined with --source envoy"},
		{name: "source file without files", args: []string{"--source", "file"}, wantErr: "--source file needs --file PATH"},
		{name: "selector and name", args: []string{"web-1", "-l", "app=web"}, wantErr: "give either a POD or TYPE/NAME argument or -l SELECTOR, not both"},
		{name: "compare with files", args: []string{"web-1", "--file", good, "--compare", "cart-1"}, wantErr: "--compare reads the other workload from the cluster; it cannot be combined with --file"},
		{
			name: "leaf without a root", args: []string{"--file", "testdata/certs/good/cert-chain.pem"}, golden: "leaf-only", wantCode: 2,
			wantErr: "certificate verdict failed for file testdata/certs/good/cert-chain.pem: no trust root to verify the chain against; give the root certificate too (e.g. --file root-cert.pem)",
		},
		{name: "missing file", args: []string{"--file", "testdata/certs/none.pem"}, wantErr: "reading --file testdata/certs/none.pem: stat testdata/certs/none.pem: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(pods, []runtime.Object{strict, portLevel})
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(append([]string{"certs", "-n", "default"}, tt.args...))
			err := cmd.Execute()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("error = %v\nwant %s", err, tt.wantErr)
			}
			var ec exitCoder
			code := 0
			if errors.As(err, &ec) {
				code = ec.ExitCode()
			}
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if tt.golden != "" {
				golden(t, tt.golden, f.Out.String())
			} else if f.Out.String() != tt.wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", f.Out.String(), tt.wantOut)
			}
			if f.ErrOut.String() != tt.wantErrOut {
				t.Errorf("stderr:\n%q\nwant:\n%q", f.ErrOut.String(), tt.wantErrOut)
			}
		})
	}
}

// -o pem prints exactly the certificates read, leaf first, root last.
func TestCertsPEM(t *testing.T) {
	f := fake.New(nil, nil)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"certs", "--file", "testdata/certs/good", "-o", "pem"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, name := range []string{"cert-chain.pem", "root-cert.pem"} {
		b, err := os.ReadFile(filepath.Join("testdata/certs/good", name))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b...)
	}
	if f.Out.String() != string(want) {
		t.Errorf("pem output:\n%s\nwant:\n%s", f.Out.String(), want)
	}
}

// The JSON is the engine's Report, so scripts can rely on its field names.
func TestCertsJSONShape(t *testing.T) {
	f := fake.New([]runtime.Object{certsPod("web-1", "", nil, true)}, nil)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"certs", "-n", "default", "web-1", "--file", "testdata/certs/good", "-o", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var r certs.Report
	if err := json.Unmarshal(f.Out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if !r.Verdict.OK || r.Workload.Pod != "web-1" || r.MTLS.Mode != "PERMISSIVE" || len(r.Certificates) != 2 || r.Certificates[0].Identity.ServiceAccount != "default" {
		t.Errorf("report: %+v", r)
	}
}

// TestCertsDumps reads saved dumps shaped as Envoy, istioctl and ztunnel
// write them (testdata/certs/dumps, made by gen.sh with OpenSSL). Before
// --file read dumps, every one of them failed with "no PEM certificate
// found".
func TestCertsDumps(t *testing.T) {
	const dumps = "testdata/certs/dumps/"
	pods := []runtime.Object{
		certsPod("web-1", "", map[string]string{"app": "web"}, true),
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio-ingressgateway-1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "istio-ingressgateway-service-account", Containers: []corev1.Container{{Name: "istio-proxy"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "reviews-v1-1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "bookinfo-reviews", Containers: []corev1.Container{{Name: "reviews"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		},
	}
	tests := []struct {
		name       string
		args       []string
		forbid     []string // namespaces where listing PeerAuthentications is forbidden
		golden     string
		wantErrOut string
		wantErr    string
		wantCode   int
		notIn      string // must not appear in stdout
	}{
		{name: "whole envoy dump", args: []string{"--file", dumps + "envoy-full.json"}, golden: "dump-full"},
		{name: "resource=dynamic_active_secrets", args: []string{"--file", dumps + "envoy-resource-secrets.json", "-o", "json"}, golden: "dump-resource.json"},
		{name: "camelCase from istioctl", args: []string{"--file", dumps + "envoy-camelcase.json"}, golden: "dump-camelcase"},
		{name: "redacted private key is never read or shown", args: []string{"--file", dumps + "envoy-resource-secrets.json", "-o", "yaml"}, golden: "dump-resource.yaml", notIn: "redacted"},
		{
			name: "warming secret", args: []string{"--file", dumps + "envoy-warming.json"}, golden: "dump-warming", wantCode: 2,
			wantErr: `certificate verdict failed for file testdata/certs/dumps/envoy-warming.json (Envoy config_dump): secret "default" is still warming: the istio agent has not got a certificate from istiod yet; check the istio-proxy logs`,
		},
		{name: "federation: several roots in trusted_ca", args: []string{"--file", dumps + "envoy-federation.json"}, golden: "dump-federation"},
		{name: "SPIRE waypoint: roots per trust domain", args: []string{"--file", dumps + "envoy-spire-waypoint.json", "-o", "wide"}, golden: "dump-spire-waypoint"},
		{name: "gateway identity", args: []string{"--file", dumps + "envoy-gateway.json"}, golden: "dump-gateway"},
		{name: "gateway identity compared with its pod", args: []string{"istio-ingressgateway-1", "-n", "istio-system", "--file", dumps + "envoy-gateway.json"}, golden: "dump-gateway-pod"},
		{name: "ztunnel with two identities", args: []string{"--file", dumps + "ztunnel.json"}, golden: "dump-ztunnel"},
		{name: "ztunnel identity of a pod", args: []string{"reviews-v1-1", "-n", "bookinfo", "--file", dumps + "ztunnel.json"}, golden: "dump-ztunnel-pod"},
		{
			name: "ztunnel without the pod's identity", args: []string{"web-1", "--file", dumps + "ztunnel.json"},
			wantErr: "the dump has no identity of pod default/web-1 (namespace default, service account default) among spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage, spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews; leave out the pod to see them all",
		},
		{
			name: "JSON that is no dump", args: []string{"--file", dumps + "not-a-dump.json"},
			wantErr: "reading --file testdata/certs/dumps/not-a-dump.json: JSON with keys [apiVersion kind metadata spec] is no dump this command reads; expected " + certs.DumpFormats,
		},
		{
			name: "truncated dump", args: []string{"--file", dumps + "truncated.json"},
			wantErr: "reading --file testdata/certs/dumps/truncated.json: not valid JSON (unexpected end of JSON input); expected " + certs.DumpFormats,
		},
		{
			name: "root namespace PeerAuthentications forbidden", args: []string{"web-1", "--file", dumps + "envoy-full.json"}, forbid: []string{"istio-system"}, golden: "dump-pod-rbac",
			wantErrOut: "note: default/web-1: could not check the mesh-wide PeerAuthentication: listing peerauthentications in namespace istio-system is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n istio-system)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fake.New(pods, nil)
			for _, ns := range tt.forbid {
				f.Istio.PrependReactor("list", "peerauthentications", func(a k8stesting.Action) (bool, runtime.Object, error) {
					if a.GetNamespace() != ns {
						return false, nil, nil
					}
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "security.istio.io", Resource: "peerauthentications"}, "", errors.New("RBAC: access denied"))
				})
			}
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(append([]string{"certs", "-n", "default"}, tt.args...))
			err := cmd.Execute()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("error = %v\nwant  %s", err, tt.wantErr)
			}
			var ec exitCoder
			code := 0
			if errors.As(err, &ec) {
				code = ec.ExitCode()
			}
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d", code, tt.wantCode)
			}
			if tt.golden != "" {
				golden(t, tt.golden, f.Out.String())
			} else if f.Out.String() != "" {
				t.Errorf("stdout:\n%s\nwant nothing", f.Out.String())
			}
			if tt.notIn != "" && strings.Contains(strings.ToLower(f.Out.String()), tt.notIn) {
				t.Errorf("stdout has %q:\n%s", tt.notIn, f.Out.String())
			}
			if f.ErrOut.String() != tt.wantErrOut {
				t.Errorf("stderr:\n%q\nwant:\n%q", f.ErrOut.String(), tt.wantErrOut)
			}
		})
	}
}
