package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// wholeDump is a sidecar's whole admin config_dump, shortened, written out
// by hand in the shape Envoy prints: sections of every type (one with an
// extension type nothing here knows), the workload secret with its key
// redacted, the root, and a secret still warming.
const wholeDump = `{
 "configs": [
  {
   "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
   "bootstrap": {
    "node": {"id": "sidecar~10.244.0.7~%[1]s.%[2]s~%[2]s.svc.cluster.local", "cluster": "web.%[2]s"},
    "static_resources": {"listeners": [{"name": "0.0.0.0_15090", "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
     "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
     "http_filters": [{"name": "istio.stats", "typed_config": {"@type": "type.googleapis.com/stats.PluginConfig"}}]}}]}]}]}
   },
   "last_updated": "2026-01-02T02:04:00.512Z"
  },
  {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "version_info": "2026-01-02T02:04:01Z/12"},
  {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": "2026-01-02T02:04:01Z/12"},
  {"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump"},
  {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"},
  {
   "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
   "dynamic_active_secrets": [
    {"name": "default", "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717", "last_updated": "2026-01-02T02:04:05.134Z",
     "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "default",
      "tls_certificate": {"certificate_chain": {"inline_bytes": "%[3]s"}, "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}}}},
    {"name": "ROOTCA", "version_info": "2026-01-02 02:04:05.133279416 +0000 UTC m=+1.019543717", "last_updated": "2026-01-02T02:04:05.133Z",
     "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "ROOTCA",
      "validation_context": {"trusted_ca": {"inline_bytes": "%[4]s"}}}}
   ],
   "dynamic_warming_secrets": [
    {"name": "file-root:/etc/certs/extra.pem", "version_info": "uninitialized", "last_updated": "2026-01-02T02:04:05.140Z",
     "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "file-root:/etc/certs/extra.pem"}}
   ]
  }
 ]
}`

// TestCertsDumpFile saves a whole config_dump holding a certificate the
// lab's istiod issued, and reads it back offline and against its pod: the
// certificates and checks are those of the live pod.
func TestCertsDumpFile(t *testing.T) {
	env := labtest.Get(t)
	ns, pod := injectedWorkload(t, env)
	_, cert := serveIssued(t, env, ns, pod)
	root := cert.Chain[len(cert.Chain)-1]
	b64 := base64.StdEncoding.EncodeToString
	path := filepath.Join(t.TempDir(), "config_dump.json")
	dump := fmt.Sprintf(wholeDump, pod.Name, ns, b64(cert.ChainPEM), b64(pemOf(root)))
	if err := os.WriteFile(path, []byte(dump), 0o600); err != nil {
		t.Fatal(err)
	}
	id := istioca.SPIFFEID(ns, "default")

	t.Run("offline", func(t *testing.T) {
		r := env.Mesh(t, "certs", "--file", path)
		if r.ExitCode != 0 {
			t.Fatalf("exit %d: %v\n%s", r.ExitCode, r.Err, r.Stderr)
		}
		for _, want := range []string{
			"Source:    file " + path + " (Envoy config_dump)",
			"Secrets:   default ACTIVE, ROOTCA ACTIVE, file-root:/etc/certs/extra.pem WARMING",
			"leaf   -   ",
			id,
			"Verdict:  OK",
			"skip  identity: no pod to compare; the leaf is " + id + " (namespace " + ns + ", service account default)",
		} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
			}
		}
	})

	t.Run("same report as the live pod", func(t *testing.T) {
		read := func(args ...string) certs.Report {
			r := env.Mesh(t, append([]string{"certs", "-n", ns, pod.Name, "-o", "json"}, args...)...)
			if r.ExitCode != 0 {
				t.Fatalf("%v: exit %d: %v\n%s", args, r.ExitCode, r.Err, r.Stderr)
			}
			var rep certs.Report
			if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
				t.Fatal(err)
			}
			return rep
		}
		live, file := read(), read("--file", path)
		if len(live.Certificates) != len(file.Certificates) {
			t.Fatalf("%d certificates live, %d from the file", len(live.Certificates), len(file.Certificates))
		}
		for i := range live.Certificates {
			if l, f := live.Certificates[i], file.Certificates[i]; l.SHA256 != f.SHA256 || l.Role != f.Role {
				t.Errorf("certificate %d: live %s %s, file %s %s", i, l.Role, l.SHA256, f.Role, f.SHA256)
			}
		}
		if fmt.Sprint(live.Verdict.Checks) != fmt.Sprint(file.Verdict.Checks) || !file.Verdict.OK {
			t.Errorf("checks differ:\nlive %+v\nfile %+v", live.Verdict.Checks, file.Verdict.Checks)
		}
	})
}

// TestCertsPeerAuthenticationsForbidden: a namespace admin may not list
// PeerAuthentications in istio-system. certs used to stop there; it carries
// on with the namespace's policy and says what it could not check.
func TestCertsPeerAuthenticationsForbidden(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns, pod := injectedWorkload(t, env)
	serveIssued(t, env, ns, pod)
	pa := &securityv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
		Spec:       securityv1beta1.PeerAuthentication{Mtls: &securityv1beta1.PeerAuthentication_MutualTLS{Mode: securityv1beta1.PeerAuthentication_MutualTLS_STRICT}},
	}
	if _, err := env.Istio.SecurityV1().PeerAuthentications(ns).Create(ctx, pa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Grant(t, ns, "certs-reader", "dana", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create", "get"}},
		{APIGroups: []string{"security.istio.io"}, Resources: []string{"peerauthentications"}, Verbs: []string{"get", "list"}},
	})
	kc := env.UserKubeconfig(t, "dana", nil)
	r := env.Mesh(t, "--kubeconfig", kc, "certs", "-n", ns, pod.Name)
	if r.ExitCode != 0 {
		t.Fatalf("exit %d: %v\n%s", r.ExitCode, r.Err, r.Stderr)
	}
	if want := "mTLS:     STRICT, from PeerAuthentication " + ns + "/default (namespace)"; !strings.Contains(r.Stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, r.Stdout)
	}
	want := "note: " + ns + "/" + pod.Name + ": could not check the mesh-wide PeerAuthentication: listing peerauthentications in namespace istio-system is forbidden (kubectl auth can-i list peerauthentications.security.istio.io -n istio-system)\n"
	if r.Stderr != want {
		t.Errorf("stderr %q\nwant %q", r.Stderr, want)
	}
}
