package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

var kwokPortForwards = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "portforwards"}

// certsWorkload is an injected pod whose Envoy admin port (15000) KWOK
// forwards to a local stand-in serving a config_dump.
type certsWorkload struct {
	ns    string
	pod   *corev1.Pod
	admin *istioca.AdminServer
}

// injectedWorkload deploys "web" in a fresh namespace with sidecar injection
// on, so istiod's real webhook adds istio-proxy.
func injectedWorkload(t *testing.T, env *labtest.Env) (string, *corev1.Pod) {
	t.Helper()
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	env.Deployment(t, ns, "web", nil, 1)
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("listing the web pod: %v (%d pods)", err, len(pods.Items))
	}
	pod := &pods.Items[0]
	if !certs.HasProxy(pod) {
		t.Fatalf("pod %s/%s has no istio-proxy: injection did not happen", ns, pod.Name)
	}
	return ns, pod
}

// forwardAdmin makes KWOK's kubelet forward the pod's port 15000 to
// 127.0.0.1:port, and waits until KWOK knows about it.
func forwardAdmin(t *testing.T, env *labtest.Env, ns, pod string, port int) {
	t.Helper()
	ctx := context.Background()
	pf := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "PortForward",
		"metadata":   map[string]any{"name": pod, "namespace": ns},
		"spec": map[string]any{"forwards": []any{map[string]any{
			"ports":  []any{int64(certs.DefaultAdminPort)},
			"target": map[string]any{"address": "127.0.0.1", "port": int64(port)},
		}}},
	}}
	if _, err := env.Dynamic.Resource(kwokPortForwards).Namespace(ns).Create(ctx, pf, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the KWOK PortForward for %s/%s: %v", ns, pod, err)
	}
	t.Cleanup(func() {
		_ = env.Dynamic.Resource(kwokPortForwards).Namespace(ns).Delete(context.Background(), pod, metav1.DeleteOptions{})
	})
	// KWOK reads PortForwards from an informer; until it has seen this one
	// it answers "no forward found".
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := env.Mesh(t, "certs", "-n", ns, pod, "--source", "envoy")
		if strings.Contains(r.Stderr, "no preferred addresses found") {
			// The API server reaches KWOK's kubelet through the node's
			// InternalIP; without one no port-forward can work.
			t.Fatalf("lab node has no InternalIP in status.addresses, so the API server cannot reach KWOK's kubelet: %s", r.Stderr)
		}
		if !strings.Contains(r.Stderr, "forward found") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("KWOK never picked up the PortForward for %s/%s: %s", ns, pod, r.Stderr)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func labCAClient(t *testing.T, env *labtest.Env) *istioca.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(env.Lab.PKI.CA.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("lab CA file has no certificate")
	}
	return &istioca.Client{Kube: env.Kube, Roots: roots}
}

// serveIssued gets a certificate for ns/default from istiod's CA API and
// serves it as the pod's config_dump.
func serveIssued(t *testing.T, env *labtest.Env, ns string, pod *corev1.Pod) (*certsWorkload, *istioca.Cert) {
	t.Helper()
	cert, err := labCAClient(t, env).Issue(context.Background(), ns, "default", 24*time.Hour)
	if err != nil {
		t.Fatalf("istiod CA: %v", err)
	}
	root := cert.Chain[len(cert.Chain)-1]
	dump, err := istioca.ConfigDump(cert.ChainPEM, pemOf(root))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := istioca.ServeAdmin(dump)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	forwardAdmin(t, env, ns, pod.Name, admin.Port)
	return &certsWorkload{ns: ns, pod: pod, admin: admin}, cert
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// TestCertsIstiodIssued reads a certificate istiod's CA issued through its
// CSR API, over a real port-forward, and checks every shown field against
// openssl.
func TestCertsIstiodIssued(t *testing.T) {
	env := labtest.Get(t)
	ns, pod := injectedWorkload(t, env)
	_, cert := serveIssued(t, env, ns, pod)
	pa := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
		Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}},
	}
	if _, err := env.Istio.SecurityV1().PeerAuthentications(ns).Create(context.Background(), pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	id := istioca.SPIFFEID(ns, "default")

	t.Run("table via deployment", func(t *testing.T) {
		r := env.Mesh(t, "certs", "-n", ns, "deploy/web")
		if r.ExitCode != 0 {
			t.Fatalf("exit %d: %v\n%s", r.ExitCode, r.Err, r.Stderr)
		}
		for _, want := range []string{
			"Pod:      " + ns + "/" + pod.Name + " (service account default)",
			"Source:   envoy admin config_dump, port-forward to 15000",
			"mTLS:     STRICT, from PeerAuthentication " + ns + "/default (namespace)",
			"leaf   -                 " + id,
			"Verdict:  OK",
			"ok    identity: identity " + id + " matches the pod's namespace and service account",
		} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
			}
		}
		if r.Stderr != "" {
			t.Errorf("stderr: %s", r.Stderr)
		}
		t.Logf("kubectl mesh certs -n %s deploy/web:\n%s", ns, r.Stdout)
	})

	t.Run("bare workload name", func(t *testing.T) {
		r := env.Mesh(t, "certs", "-n", ns, "web")
		if r.ExitCode != 0 {
			t.Fatalf("exit %d: %v", r.ExitCode, r.Err)
		}
		if want := "note: no pod \"web\"; using pod " + pod.Name + " of deployment/web\n"; r.Stderr != want {
			t.Errorf("stderr %q, want %q", r.Stderr, want)
		}
	})

	t.Run("pem is what istiod issued", func(t *testing.T) {
		r := env.Mesh(t, "certs", "-n", ns, pod.Name, "-o", "pem")
		if r.ExitCode != 0 {
			t.Fatalf("exit %d: %v", r.ExitCode, r.Err)
		}
		if r.Stdout != string(pemOf(cert.Chain...)) {
			t.Errorf("-o pem:\n%s\nwant the chain from CreateCertificate:\n%s", r.Stdout, pemOf(cert.Chain...))
		}
	})

	t.Run("fields agree with openssl", func(t *testing.T) {
		r := env.Mesh(t, "certs", "-n", ns, pod.Name, "-o", "json")
		if r.ExitCode != 0 {
			t.Fatalf("exit %d: %v", r.ExitCode, r.Err)
		}
		var rep certs.Report
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Source != certs.SourceEnvoy || !rep.Verdict.OK || len(rep.Certificates) != len(cert.Chain) {
			t.Fatalf("report: %+v", rep)
		}
		if rep.Certificates[0].SPIFFEID != id || rep.Certificates[0].Subject != "" {
			t.Errorf("leaf: %+v", rep.Certificates[0])
		}
		for i, c := range cert.Chain {
			compareWithOpenSSL(t, rep.Certificates[i], c)
		}
	})

}

// compareWithOpenSSL checks the shown fields of one certificate against
// `openssl x509` on the same PEM.
func compareWithOpenSSL(t *testing.T, shown certs.Certificate, c *x509.Certificate) {
	t.Helper()
	cmd := exec.Command("openssl", "x509", "-noout", "-fingerprint", "-sha256", "-serial", "-dates", "-subject", "-issuer", "-nameopt", "RFC2253")
	cmd.Stdin = bytes.NewReader(pemOf(c))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl (installed by hack/install-deps.sh): %v", err)
	}
	o := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		o[k] = v
	}
	date := func(s string) string {
		v, err := time.Parse("Jan _2 15:04:05 2006 MST", s)
		if err != nil {
			t.Fatalf("openssl date %q: %v", s, err)
		}
		return v.UTC().Format(time.RFC3339)
	}
	for _, p := range []struct{ field, shown, openssl string }{
		{"sha256 fingerprint", shown.SHA256, o["sha256 Fingerprint"]},
		{"serial", shown.Serial, o["serial"]},
		{"subject", shown.Subject, o["subject"]},
		{"issuer", shown.Issuer, o["issuer"]},
		{"not before", shown.NotBefore.Format(time.RFC3339), date(o["notBefore"])},
		{"not after", shown.NotAfter.Format(time.RFC3339), date(o["notAfter"])},
	} {
		if p.shown != p.openssl {
			t.Errorf("%s %s: shown %q, openssl %q", shown.Role, p.field, p.shown, p.openssl)
		}
	}
}

// TestCertsVerdictFailures serves broken certificates signed by the lab's
// istiod CA (or, for the wrong root, by another CA) and expects exit 2 with
// a clear message.
func TestCertsVerdictFailures(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns, pod := injectedWorkload(t, env)
	w, good := serveIssued(t, env, ns, pod)
	ca, err := istioca.LoadCA(ctx, env.Kube)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.Equal(good.Chain[len(good.Chain)-1]) {
		t.Fatalf("istio-ca-secret is not the root istiod signs with")
	}
	other, err := istioca.NewSelfSignedCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "payments"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreignID, err := labCAClient(t, env).Issue(ctx, ns, "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := istioca.SPIFFEID(ns, "default")
	now := time.Now()
	sign := func(signer *istioca.CA, nb, na time.Time) []byte {
		c, err := signer.Sign(id, nb, na)
		if err != nil {
			t.Fatal(err)
		}
		return c.ChainPEM
	}
	tests := []struct {
		name     string
		chain    []byte
		wantErrs []string
	}{
		{"expired", sign(ca, now.Add(-48*time.Hour), now.Add(-2*time.Hour)), []string{"leaf certificate " + id + " expired ", " ago (not after ", "the proxy is not rotating it"}},
		{"not yet valid", sign(ca, now.Add(3*time.Hour), now.Add(27*time.Hour)), []string{"leaf certificate " + id + " is not valid until", "check the clocks of the node and istiod"}},
		{"wrong root", sign(other, now.Add(-time.Hour), now.Add(23*time.Hour)), []string{`chain does not verify to the trust root "O=cluster.local"`, "signed by a different CA"}},
		{"wrong SPIFFE ID", foreignID.ChainPEM, []string{"identity " + istioca.SPIFFEID(ns, "payments") + ` does not match the pod: expected namespace "` + ns + `" and service account "default"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dump, err := istioca.ConfigDump(tt.chain, ca.CertPEM)
			if err != nil {
				t.Fatal(err)
			}
			w.admin.SetBody(dump)
			r := env.Mesh(t, "certs", "-n", ns, pod.Name)
			if r.ExitCode != 2 {
				t.Fatalf("exit %d, want 2 (failed verdict): %v", r.ExitCode, r.Err)
			}
			for _, want := range append(tt.wantErrs, "error: certificate verdict failed for "+ns+"/"+pod.Name+": ") {
				if !strings.Contains(r.Stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
				}
			}
			// Each case fails for its own reason only.
			if n := strings.Count(r.Stdout, "  FAIL  "); n != 1 {
				t.Errorf("%d failed checks, want 1:\n%s", n, r.Stdout)
			}
			if !strings.Contains(r.Stdout, "Verdict:  FAILED") {
				t.Errorf("stdout:\n%s", r.Stdout)
			}
		})
	}
}

// TestCertsErrors covers what stops certs from reading anything.
func TestCertsErrors(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns, pod := injectedWorkload(t, env)
	w, _ := serveIssued(t, env, ns, pod)

	t.Run("pod without sidecar", func(t *testing.T) {
		plain := env.Namespace(t, nil)
		env.Deployment(t, plain, "web", nil, 1)
		r := env.Mesh(t, "certs", "-n", plain, "deploy/web")
		if r.ExitCode != 1 {
			t.Fatalf("exit %d", r.ExitCode)
		}
		for _, want := range []string{"has no istio-proxy container", "\n  kubectl mesh enable-injection " + plain + "\n  kubectl mesh restart " + plain + "\n"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, r.Stderr)
			}
		}
	})

	t.Run("empty config_dump", func(t *testing.T) {
		w.admin.SetBody(nil)
		r := env.Mesh(t, "certs", "-n", ns, pod.Name, "--source", "envoy")
		want := "error: reading the Envoy admin config_dump of pod " + ns + "/" + pod.Name + " (port 15000): config_dump has no secrets: the response is empty\n"
		if r.ExitCode != 1 || r.Stderr != want {
			t.Errorf("exit %d, stderr %q\nwant %q", r.ExitCode, r.Stderr, want)
		}
	})

	t.Run("malformed config_dump", func(t *testing.T) {
		w.admin.SetBody([]byte(`{"configs": [`))
		r := env.Mesh(t, "certs", "-n", ns, pod.Name)
		want := "error: reading the Envoy admin config_dump of pod " + ns + "/" + pod.Name + " (port 15000): malformed config_dump: "
		if r.ExitCode != 1 || !strings.HasPrefix(r.Stderr, want) {
			t.Errorf("exit %d, stderr %q\nwant prefix %q", r.ExitCode, r.Stderr, want)
		}
	})

	t.Run("admin port unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ns2, pod2 := injectedWorkload(t, env)
		forwardAdmin(t, env, ns2, pod2.Name, closed)
		r := env.Mesh(t, "certs", "-n", ns2, pod2.Name, "--source", "envoy")
		for _, want := range []string{"error: Envoy admin port 15000 of pod " + ns2 + "/" + pod2.Name + " is unreachable: ", "connection refused", "check that istio-proxy is running"} {
			if r.ExitCode != 1 || !strings.Contains(r.Stderr, want) {
				t.Errorf("exit %d, stderr lacks %q:\n%s", r.ExitCode, want, r.Stderr)
			}
		}
	})

	t.Run("port-forward forbidden by RBAC", func(t *testing.T) {
		role := &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "pod-reader", Namespace: ns},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}},
		}
		if _, err := env.Kube.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "alice-pod-reader", Namespace: ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "User", Name: "alice", APIGroup: "rbac.authorization.k8s.io"}},
		}
		if _, err := env.Kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kc := env.UserKubeconfig(t, "alice", nil)
		r := env.Mesh(t, "--kubeconfig", kc, "certs", "-n", ns, pod.Name)
		want := "error: not allowed to port-forward to pod " + ns + "/" + pod.Name + ": "
		tail := "; ask for RBAC rights to create pods/portforward in namespace " + ns + " (check with: kubectl auth can-i create pods/portforward -n " + ns + ")\n"
		if r.ExitCode != 1 || !strings.HasPrefix(r.Stderr, want) || !strings.HasSuffix(r.Stderr, tail) {
			t.Errorf("exit %d, stderr %q\nwant %q…%q", r.ExitCode, r.Stderr, want, tail)
		}
	})
}

// TestCertsCompare: two namespaces with certificates from the same istiod
// share a root; a workload from another CA does not.
func TestCertsCompare(t *testing.T) {
	env := labtest.Get(t)
	nsA, podA := injectedWorkload(t, env)
	serveIssued(t, env, nsA, podA)
	nsB, podB := injectedWorkload(t, env)
	serveIssued(t, env, nsB, podB)

	r := env.Mesh(t, "certs", "-n", nsA, "deploy/web", "--compare", nsB+"/deploy/web")
	if r.ExitCode != 0 {
		t.Fatalf("exit %d: %v", r.ExitCode, r.Err)
	}
	want := "Compare:  SHARED ROOT\n  " + nsA + "/" + podA.Name + " and " + nsB + "/" + podB.Name + ` share the root "O=cluster.local"`
	if !strings.Contains(r.Stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
	}

	nsC, podC := injectedWorkload(t, env)
	other, err := istioca.NewSelfSignedCA()
	if err != nil {
		t.Fatal(err)
	}
	c, err := other.Sign(istioca.SPIFFEID(nsC, "default"), time.Now().Add(-time.Hour), time.Now().Add(23*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := istioca.ConfigDump(c.ChainPEM, other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := istioca.ServeAdmin(dump)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	forwardAdmin(t, env, nsC, podC.Name, admin.Port)
	r = env.Mesh(t, "certs", "-n", nsA, podA.Name, "--compare", nsC+"/"+podC.Name)
	if r.ExitCode != 2 {
		t.Fatalf("exit %d, want 2", r.ExitCode)
	}
	if want := "error: " + nsA + "/" + podA.Name + " and " + nsC + "/" + podC.Name + " do not share a root"; !strings.HasPrefix(r.Stderr, want) {
		t.Errorf("stderr %q, want prefix %q", r.Stderr, want)
	}
}
