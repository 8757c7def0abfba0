package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestSplitThroughWaypoint is the ambient trap and its way out on the lab,
// with the ingress gateway in front (expose):
// in an ambient namespace without a waypoint ztunnel ignores a route
// written with split --force (calls still reach v1 at 0/100); once
// enable-injection --waypoint has istiod deploy the waypoint, the
// frontend's calls go as HBONE to it, it applies the route (0/100 → v2
// only, 100/0 → v1 only, 50/50 → both about equally); sniff of the
// frontend sees only HBONE, to the waypoint and from the gateway; verify
// proves gateway → frontend → waypoint → backends; an HTTPRoute split
// (--api gateway) is applied by the waypoint too.
func TestSplitThroughWaypoint(t *testing.T) {
	env := labtest.Get(t)
	ztunnelDaemonSet(t, env, env.Namespace(t, nil))
	ns := env.Namespace(t, nil)
	trService(t, env, ns, podnet.BackendService, map[string]string{"app": podnet.AppBackend})
	env.Deployment(t, ns, "backend-v1", map[string]string{"app": podnet.AppBackend, "version": "v1"}, 1)
	env.Deployment(t, ns, "backend-v2", map[string]string{"app": podnet.AppBackend, "version": "v2"}, 1)
	env.Deployment(t, ns, podnet.AppFrontend, map[string]string{"version": "v1"}, 1)
	trService(t, env, ns, "frontend", map[string]string{"app": podnet.AppFrontend})
	front := podOf(t, env, ns, "app="+podnet.AppFrontend)

	mustRun := func(args ...string) labtest.Result {
		t.Helper()
		r := env.Mesh(t, append(args, "-n", ns)...)
		if r.ExitCode != 0 {
			t.Fatalf("%s: exit %d, %v\n%s%s", strings.Join(args, " "), r.ExitCode, r.Err, r.Stdout, r.Stderr)
		}
		return r
	}
	mustRun("enable-injection", ns, "--ambient")
	waitCalls(t, env, ns, front.Name, " hbone ", 3)

	// No waypoint: split refuses; forced, its route is ignored by ztunnel.
	if r := env.Mesh(t, "split", podnet.BackendService, "0/100", "-n", ns); r.ExitCode != 1 {
		t.Fatalf("split without a waypoint: exit %d, want 1\n%s", r.ExitCode, r.Stderr)
	}
	mustRun("split", podnet.BackendService, "0/100", "--force")
	calls := callsAfter(t, env, ns, front.Name, 30, " hbone ")
	if calls["v1"] == 0 {
		t.Fatalf("without a waypoint, a 0/100 route must not be applied (ztunnel is L4), yet 30 calls reached only %v", calls)
	}
	t.Logf("0/100 without a waypoint (ignored): %v", calls)

	// The waypoint: istiod deploys it, podnet runs its stand-in.
	r := mustRun("enable-injection", ns, "--ambient", "--waypoint")
	if !strings.Contains(r.Stderr, "istiod has programmed the Gateway") {
		t.Fatalf("enable-injection --waypoint:\n%s", r.Stderr)
	}
	calls = callsAfter(t, env, ns, front.Name, 30, " hbone-waypoint ")
	if calls["v1"] != 0 || calls["v2"] != 30 {
		t.Fatalf("0/100 through the waypoint: %v, want all 30 calls on v2", calls)
	}
	mustRun("split", podnet.BackendService, "100/0")
	if calls = callsAfter(t, env, ns, front.Name, 30, " hbone-waypoint "); calls["v1"] != 30 {
		t.Fatalf("100/0 through the waypoint: %v, want all 30 calls on v1", calls)
	}
	mustRun("split", podnet.BackendService, "50/50")
	calls = callsAfter(t, env, ns, front.Name, 200, " hbone-waypoint ")
	// Binomial(200, 0.5): 4 standard deviations either side.
	if calls["v1"] < 72 || calls["v2"] < 72 {
		t.Fatalf("50/50 through the waypoint: %v of 200 calls", calls)
	}
	t.Logf("50/50 through the waypoint: %v", calls)

	// The ingress gateway in front: expose, then a client calling through
	// it for the rest of the test. The gateway's Envoy sends HBONE to the
	// frontend, which ztunnel carries.
	url := strings.TrimSpace(mustRun("expose", "frontend").Stdout)
	workshopGet(t, url, `"frontend":"`+front.Name+`"`)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if resp, err := client.Get(url); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	gw := podOf(t, env, "istio-system", "istio=ingressgateway")

	// On the frontend's wire: HBONE to the waypoint's 15008 and from the
	// gateway to the frontend's, nothing on the app port.
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	pcap := filepath.Join(t.TempDir(), "front.pcap")
	res := env.Mesh(t, "sniff", "-n", ns, front.Name, "--ssh-config", sshConfig, "--duration", "3s", "-o", "json", "-w", pcap)
	var raw any
	if err := json.Unmarshal([]byte(res.Stdout), &raw); err != nil || res.ExitCode != 0 {
		t.Fatalf("sniff: exit %d, %v, %v\n%s", res.ExitCode, res.Err, err, res.Stderr)
	}
	rep := sniffReport{exit: res.ExitCode}
	rep.verdict, _ = raw.(map[string]any)["verdict"].(string)
	collectFlows(raw, "", &rep.flows)
	wp := podOf(t, env, ns, "gateway.networking.k8s.io/gateway-name=waypoint")
	toWaypoint := 0
	for _, f := range rep.flows {
		if strings.HasPrefix(f.Dst, wp.Status.PodIP+":15008") || strings.HasPrefix(f.Src, wp.Status.PodIP+":15008") {
			toWaypoint++
			if f.Verdict != "encrypted-istio" || f.Istio != "hbone" {
				t.Errorf("flow %s → %s: %s %s", f.Src, f.Dst, f.Verdict, f.Istio)
			}
		}
	}
	fromGateway := 0
	for _, f := range rep.flows {
		if strings.HasPrefix(f.Src, gw.Status.PodIP+":") && f.Dst == front.Status.PodIP+":15008" && f.Verdict == "encrypted-istio" && f.Istio == "hbone" {
			fromGateway++
		}
		if f.Dst == front.Status.PodIP+":80" {
			t.Errorf("a flow to the frontend's app port: %s → %s %s", f.Src, f.Dst, f.Verdict)
		}
	}
	if rep.verdict != "encrypted-istio" || toWaypoint == 0 || fromGateway == 0 {
		t.Errorf("sniff of the frontend: verdict %s, %d flows with the waypoint %s:15008, %d HBONE flows from the gateway %s\n%s",
			rep.verdict, toWaypoint, wp.Status.PodIP, fromGateway, gw.Status.PodIP, rep)
	}

	// verify proves the whole path: the waypoint's identity from its
	// Envoy, every edge Istio HBONE, the Service ports inside it.
	vr := env.Mesh(t, "verify", ns, "--ssh-config", sshConfig, "--duration", "3s", "-o", "json")
	var vres struct {
		Verdict string `json:"verdict"`
		Wire    struct {
			Edges []struct{ Src, Dst, Verdict string } `json:"edges"`
		} `json:"wire"`
	}
	if err := json.Unmarshal([]byte(vr.Stdout), &vres); err != nil {
		t.Fatalf("verify -o json: exit %d, %v, %v\n%s", vr.ExitCode, vr.Err, err, vr.Stderr)
	}
	var edges []string
	for _, e := range vres.Wire.Edges {
		edges = append(edges, strings.ReplaceAll(fmt.Sprintf("%s → %s %s", e.Src, e.Dst, e.Verdict), ns+"/", ""))
	}
	want := "istio-system/istio-ingressgateway → frontend-app encrypted-istio\n" +
		"frontend-app → waypoint encrypted-istio\nwaypoint → backend-v1 encrypted-istio\nwaypoint → backend-v2 encrypted-istio"
	if vr.ExitCode != 0 || strings.Join(edges, "\n") != want {
		t.Errorf("verify: exit %d, verdict %s, edges:\n%s\nwant:\n%s\n%s", vr.ExitCode, vres.Verdict, strings.Join(edges, "\n"), want, vr.Stderr)
	}

	// The Gateway API way: an HTTPRoute whose parent is the Service (GAMMA),
	// which the waypoint applies just the same.
	mustRun("split", podnet.BackendService, "--undo")
	mustRun("split", podnet.BackendService, "0/100", "--api", "gateway", "--create-services")
	if calls = callsAfter(t, env, ns, front.Name, 30, " hbone-waypoint "); calls["v2"] != 30 {
		t.Fatalf("0/100 by HTTPRoute through the waypoint: %v, want all 30 calls on v2", calls)
	}
	mustRun("split", podnet.BackendService, "100/0", "--api", "gateway")
	if calls = callsAfter(t, env, ns, front.Name, 30, " hbone-waypoint "); calls["v1"] != 30 {
		t.Fatalf("100/0 by HTTPRoute through the waypoint: %v, want all 30 calls on v1", calls)
	}
}

// callsAfter waits for n more successful calls of mode in the frontend's
// log than it holds now (skipping two in flight) and counts them by the
// backend version that answered.
func callsAfter(t *testing.T, env *labtest.Env, ns, pod string, n int, mode string) map[string]int {
	t.Helper()
	lines := func(ctx context.Context) ([]string, error) {
		b, err := env.Kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: podnet.AppContainer}).DoRaw(ctx)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "call backend: ") {
				out = append(out, l)
			}
		}
		return out, nil
	}
	before, err := lines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	skip := len(before) + 2
	var counts map[string]int
	var last []string
	err = wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		all, err := lines(ctx)
		if err != nil || len(all) <= skip {
			return false, nil
		}
		counts, last = map[string]int{}, all[skip:]
		got := 0
		for _, l := range last {
			// call backend: 200 VERSION POD IP MODE BODY
			f := strings.Fields(l[strings.Index(l, "call backend: "):])
			if len(f) < 7 || f[2] != "200" || !strings.Contains(l, mode) {
				continue
			}
			if got++; got > n {
				break
			}
			counts[f[3]]++
		}
		return got >= n, nil
	})
	if err != nil {
		if len(last) > 20 {
			last = last[len(last)-20:]
		}
		t.Fatalf("fewer than %d calls over%s after the change: %v\n%s", n, strings.TrimRight(mode, " "), fmt.Sprint(counts), strings.Join(last, "\n"))
	}
	return counts
}

// TestAmbientProbe: the kubelet's probe of an ambient pod arrives from
// istio-cni's probe address 169.254.7.127, as on a real node; sniff sets
// it apart as a probe, so the pod, which otherwise speaks only HBONE, is
// ENCRYPTED and not MIXED.
func TestAmbientProbe(t *testing.T) {
	env := labtest.Get(t)
	ztunnelDaemonSet(t, env, env.Namespace(t, nil))
	ns := env.Namespace(t, nil)
	ctx := context.Background()
	trService(t, env, ns, podnet.BackendService, map[string]string{"app": podnet.AppBackend})
	one, zero := int32(1), int64(0)
	labels := map[string]string{"app": podnet.AppBackend, "version": "v1"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: podnet.AppBackend, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/" + podnet.AppBackend, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
					ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/greetings", Port: intstr.FromInt32(80)}}}}}}}}}
	if _, err := env.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitDeploymentReady(ctx, env.Kube, ns, podnet.AppBackend, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	env.Deployment(t, ns, podnet.AppFrontend, map[string]string{"version": "v1"}, 1)
	front := podOf(t, env, ns, "app="+podnet.AppFrontend)
	if r := env.Mesh(t, "enable-injection", ns, "--ambient"); r.ExitCode != 0 {
		t.Fatalf("enable-injection --ambient: exit %d\n%s", r.ExitCode, r.Stderr)
	}
	waitCalls(t, env, ns, front.Name, " hbone ", 3)

	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	backend := podOf(t, env, ns, "app="+podnet.AppBackend)
	res := env.Mesh(t, "sniff", "-n", ns, backend.Name, "--ssh-config", sshConfig, "--duration", "3s", "-o", "json")
	var rep struct {
		Verdict string `json:"verdict"`
		Flows   []struct{ Src, Dst, Verdict string }
		Infra   []struct{ Src, Dst, Infra string }
	}
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("sniff: exit %d, %v, %v\n%s", res.ExitCode, res.Err, err, res.Stderr)
	}
	probes := 0
	for _, f := range rep.Infra {
		if strings.HasPrefix(f.Src, podnet.AmbientProbeSource.String()+":") && f.Infra == "kubelet-probe" {
			probes++
		}
	}
	if res.ExitCode != 0 || rep.Verdict != "encrypted-istio" || probes == 0 {
		t.Errorf("sniff of an ambient pod with a readiness probe: exit %d, verdict %s, %d probes from %s apart\nflows %+v\ninfra %+v\n%s",
			res.ExitCode, rep.Verdict, probes, podnet.AmbientProbeSource, rep.Flows, rep.Infra, res.Stderr)
	}
}
