package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/inject"
	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestCanaryRevision moves a namespace from the default control plane to a
// real second istiod, revision canary, and back: enable-injection
// --revision, restart, and the new pods' sidecars come from the canary
// (injected by its webhook, pointed at istiod-canary), which status and
// version report.
func TestCanaryRevision(t *testing.T) {
	env := labtest.Get(t)
	ns := env.Namespace(t, map[string]string{"istio-injection": "enabled"})
	env.Deployment(t, ns, "web", nil, 2)
	assertSidecarRevision(t, env, ns, "web", "default")
	env.CanaryIstiod(t)

	// Both revisions issue workload certificates under one root.
	defaultCA := labCAClient(t, env)
	canaryCA := labCAClient(t, env)
	canaryCA.Addr, canaryCA.ServerName = fmt.Sprintf("127.0.0.1:%d", lab.CanarySecureGRPC), "istiod-canary.istio-system.svc"
	var roots [][]byte
	for _, c := range []*istioca.Client{defaultCA, canaryCA} {
		cert, err := c.Issue(context.Background(), ns, "default", time.Hour)
		if err != nil {
			t.Fatalf("CA at %s: %v", c.Addr, err)
		}
		roots = append(roots, cert.Chain[len(cert.Chain)-1].Raw)
	}
	if !bytes.Equal(roots[0], roots[1]) {
		t.Fatal("the canary istiod issues certificates under a different root than the default one")
	}

	res := env.Mesh(t, "version")
	if wantEnd := "Istio Control Plane: 1.31.0 (revision canary; injector istio-sidecar-injector-canary)\n" +
		"Istio Control Plane: 1.31.0 (revision default; injector istio-sidecar-injector)\n"; res.ExitCode != 0 || !strings.HasSuffix(res.Stdout, wantEnd) {
		t.Fatalf("version: exit %d\n%s\nwant it to end with\n%s", res.ExitCode, res.Stdout, wantEnd)
	}

	need := fmt.Sprintf("1 workload needs a restart: deployment/web — run: kubectl mesh restart %s\n", ns)
	expect(t, "enable --revision canary", env.Mesh(t, "enable-injection", ns, "--revision", "canary"), "namespace/"+ns+" labeled\n",
		"note: namespace/"+ns+": removing istio-injection=enabled: it takes precedence over istio.io/rev\n"+need, 0)
	if got := meshLabels(t, env, ns); got != "istio.io/rev=canary" {
		t.Fatalf("labels = %q", got)
	}
	plan := env.Mesh(t, "restart", ns, "--dry-run")
	if got, want := fmt.Sprint(tableRows(t, plan.Stdout)), fmt.Sprint([][]string{
		strings.Fields(ns + "/deployment/web 2 2/2 sidecar from revision default, new pods get canary")}); got != want {
		t.Fatalf("dry run rows = %s, want %s", got, want)
	}
	res = env.Mesh(t, "restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{{ns + "/deployment/web", "2", "2", "2/2", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart to canary: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, ns, "web", true)
	assertSidecarRevision(t, env, ns, "web", "canary")

	res = env.Mesh(t, "status", "-n", ns)
	wantStatus := [][]string{
		strings.Fields("REVISION TAGS VERSION INJECTOR ISTIOD"),
		strings.Fields("canary - 1.31.0 istio-sidecar-injector-canary -"),
		strings.Fields("default - 1.31.0 istio-sidecar-injector -"),
		nil,
		strings.Fields("NAMESPACE INJECTION WORKLOADS WITH SIDECAR PODS NEEDING RESTART SIDECAR VERSIONS MTLS"),
		strings.Fields(ns + " revision canary 1/1 0 1.31.0 PERMISSIVE"),
	}
	if got := fieldsOfLines(res.Stdout); res.ExitCode != 0 || fmt.Sprint(got) != fmt.Sprint(wantStatus) {
		t.Fatalf("status: exit %d\n%s\nwant (as fields) %v", res.ExitCode, res.Stdout, wantStatus)
	}
	res = env.Mesh(t, "status", "-n", ns, "-o", "json")
	var rep inject.Report
	if err := json.Unmarshal([]byte(res.Stdout), &rep); res.ExitCode != 0 || err != nil || len(rep.Namespaces) != 1 {
		t.Fatalf("status -o json: exit %d, %v\n%s", res.ExitCode, err, res.Stdout)
	}
	gotCP, _ := json.Marshal(rep.ControlPlanes)
	if want := `[{"revision":"canary","version":"1.31.0","namespace":"istio-system","injector":"istio-sidecar-injector-canary"},` +
		`{"revision":"default","version":"1.31.0","namespace":"istio-system","injector":"istio-sidecar-injector"}]`; string(gotCP) != want {
		t.Errorf("control planes =\n%s\nwant\n%s", gotCP, want)
	}
	gotNS, _ := json.Marshal(rep.Namespaces[0])
	if want := fmt.Sprintf(`{"name":%q,"injection":"revision canary","revision":"canary","workloads":1,"workloadsWithSidecar":1,"pods":2,"podsWithSidecar":2,"podsNeedingRestart":0,"sidecarVersions":["1.31.0"],"versionSkew":false,"mtls":"PERMISSIVE (default)"}`, ns); string(gotNS) != want {
		t.Errorf("namespace status =\n%s\nwant\n%s", gotNS, want)
	}
	expect(t, "restart again", env.Mesh(t, "restart", ns), "",
		"nothing to restart: every pod already matches what Istio injects now (use --all to restart anyway)\n", 0)

	// Back to the default revision.
	expect(t, "enable (default)", env.Mesh(t, "enable-injection", ns), "namespace/"+ns+" labeled\n",
		"note: namespace/"+ns+": removing istio.io/rev=canary: istio-injection=enabled takes precedence over it\n"+need, 0)
	if got := meshLabels(t, env, ns); got != "istio-injection=enabled" {
		t.Fatalf("labels = %q", got)
	}
	res = env.Mesh(t, "restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{{ns + "/deployment/web", "2", "2", "2/2", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart to default: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertPods(t, env, ns, "web", true)
	assertSidecarRevision(t, env, ns, "web", "default")
}

// TestCanaryWebhookAtWrongIstiod: the canary's webhook configuration is
// pointed at the default istiod, a real misconfiguration (a hand-edited or
// half-upgraded webhook). Pods of a canary namespace then get a sidecar, but
// from revision default, and restart reports exactly that mismatch instead
// of claiming success. Pointing the webhook back at the canary fixes it.
func TestCanaryWebhookAtWrongIstiod(t *testing.T) {
	env := labtest.Get(t)
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	env.Deployment(t, ns, "web", nil, 1)
	canary := env.CanaryIstiod(t)

	setURL := func(port int) {
		t.Helper()
		hooks := env.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
		c, err := hooks.Get(ctx, canary.Injector, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("https://127.0.0.1:%d/inject", port)
		for i := range c.Webhooks {
			c.Webhooks[i].ClientConfig.URL = &url
		}
		if _, err := hooks.Update(ctx, c, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setURL(lab.IstiodWebhook)

	expect(t, "enable --revision canary", env.Mesh(t, "enable-injection", ns, "--revision", "canary"), "namespace/"+ns+" labeled\n",
		fmt.Sprintf("1 workload needs a restart: deployment/web — run: kubectl mesh restart %s\n", ns), 0)
	waitInjectedBy(t, env, ns, "default")
	res := env.Mesh(t, "restart", ns)
	rows := tableRows(t, res.Stdout)
	row := strings.Join(rows[0], " ")
	if res.ExitCode != 1 || len(rows) != 1 || !strings.HasPrefix(row, ns+"/deployment/web 1 1 1/1 failed: pod web-") ||
		!strings.HasSuffix(row, "has a sidecar from revision default, expected canary (does the canary webhook point at that revision's istiod?)") {
		t.Fatalf("exit %d rows %v\n%s", res.ExitCode, rows, res.Stderr)
	}
	assertSidecarRevision(t, env, ns, "web", "default")

	setURL(lab.CanaryWebhook)
	waitInjectedBy(t, env, ns, "canary")
	res = env.Mesh(t, "restart", ns)
	if got, want := fmt.Sprint(tableRows(t, res.Stdout)), fmt.Sprint([][]string{{ns + "/deployment/web", "1", "1", "1/1", "restarted"}}); res.ExitCode != 0 || got != want {
		t.Fatalf("restart after the fix: exit %d rows %s, want %s\n%s", res.ExitCode, got, want, res.Stderr)
	}
	assertSidecarRevision(t, env, ns, "web", "canary")
}

// waitInjectedBy waits until a pod created in ns is injected by revision
// rev: the API server follows webhook configuration changes shortly after.
func waitInjectedBy(t *testing.T, env *labtest.Env, ns, rev string) {
	t.Helper()
	var got string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r, err := lab.InjectedRevision(ctx, env.Kube, ns, nil)
		if err != nil {
			got = err.Error()
			return false, nil
		}
		got = r
		return r == rev, nil
	})
	if err != nil {
		t.Fatalf("pods in %s are not injected by revision %s (last: %q)", ns, rev, got)
	}
}

// assertSidecarRevision checks every live pod of app was injected by rev:
// the injector's own record (sidecar.istio.io/status and the istio.io/rev
// annotation) and where the proxy was told to find its control plane.
func assertSidecarRevision(t *testing.T, env *labtest.Env, ns, app, rev string) {
	t.Helper()
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	// The injector leaves out of PROXY_CONFIG what equals the proxy's own
	// default, which is the default revision's istiod.
	istiod, proxyConfig := "istiod.istio-system.svc:15012", "{}"
	if rev != "default" {
		istiod = "istiod-" + rev + ".istio-system.svc:15012"
		proxyConfig = fmt.Sprintf(`{"discoveryAddress":%q}`, istiod)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		var st struct {
			Revision string `json:"revision"`
		}
		_ = json.Unmarshal([]byte(p.Annotations["sidecar.istio.io/status"]), &st)
		var caAddr, pc string
		for _, c := range p.Spec.Containers {
			if c.Name == "istio-proxy" {
				caAddr, pc = envValue(c, "CA_ADDR"), envValue(c, "PROXY_CONFIG")
			}
		}
		if st.Revision != rev || p.Annotations["istio.io/rev"] != rev || caAddr != istiod || strings.TrimSpace(pc) != proxyConfig {
			t.Errorf("pod %s: status revision %q, istio.io/rev %q, CA_ADDR %q, PROXY_CONFIG %q; want revision %s, CA_ADDR %s, PROXY_CONFIG %s",
				p.Name, st.Revision, p.Annotations["istio.io/rev"], caAddr, pc, rev, istiod, proxyConfig)
		}
	}
	if live == 0 {
		t.Errorf("no live pods for app=%s", app)
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// fieldsOfLines splits output into lines of whitespace-separated fields
// (an empty line is nil), so a table compares without its padding.
func fieldsOfLines(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}
