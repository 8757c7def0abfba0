package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/verify"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab"
	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

// TestAmbientHBONE enrols a copy of the workshop in ambient mode on the
// lab (enable-injection --ambient with a ztunnel DaemonSet), where podnet's ztunnel stand-in carries the frontend's calls as
// real HBONE. sniff of the backend then says ENCRYPTED (Istio HBONE): flows
// to its 15008, its app port absent; tshark reads the same capture. A
// client of the namespace that calls the app port around ztunnel is named
// as a mesh bypass.
func TestAmbientHBONE(t *testing.T) {
	env := labtest.Get(t)
	if _, err := os.Stat(podnet.ReadyFile(env.Lab.PodnetDir())); err != nil {
		t.Fatalf("the lab's pod network is not running (%v): the lab must be started as root; see %s/logs/podnet.log", err, env.Lab.StateDir)
	}
	sshConfig := podnet.SSHConfigFile(env.Lab.PodnetDir())
	ctx := context.Background()

	// ztunnel: a DaemonSet whose pod podnet runs on the node.
	ztunnelNS := env.Namespace(t, nil)
	ztunnelDaemonSet(t, env, ztunnelNS)

	// The workshop in a namespace of its own, then enrolled.
	ns := env.Namespace(t, nil)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: podnet.BackendService},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": podnet.AppBackend},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80)}}}}
	if _, err := env.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Deployment(t, ns, podnet.AppBackend, map[string]string{"version": "v1"}, 1)
	env.Deployment(t, ns, podnet.AppFrontend, map[string]string{"version": "v1"}, 1)
	backend := podOf(t, env, ns, "app="+podnet.AppBackend)
	front := podOf(t, env, ns, "app="+podnet.AppFrontend+",version=v1")
	backendIP := netip.MustParseAddr(backend.Status.PodIP)

	// podnet gives a namespace's workshop pods a network once it is
	// enrolled (the default namespace's always have one).
	r := env.Mesh(t, "enable-injection", ns, "--ambient")
	if r.ExitCode != 0 {
		t.Fatalf("enable-injection --ambient: exit %d, %v\n%s%s", r.ExitCode, r.Err, r.Stdout, r.Stderr)
	}
	enrolled := time.Now()
	waitCalls(t, env, ns, front.Name, " hbone ", 1)
	t.Logf("first HBONE call %.1fs after enable-injection --ambient", time.Since(enrolled).Seconds())
	waitCalls(t, env, ns, front.Name, " hbone ", 5)

	sniff := func(step, duration string) (labtest.Result, string) {
		pcap := filepath.Join(t.TempDir(), step+".pcap")
		return env.Mesh(t, "sniff", "-n", ns, "deploy/"+podnet.AppBackend, "--ssh-config", sshConfig, "--duration", duration, "-o", "json", "-w", pcap), pcap
	}
	parse := func(step string, r labtest.Result) sniffReport {
		t.Helper()
		var raw any
		if err := json.Unmarshal([]byte(r.Stdout), &raw); err != nil {
			t.Fatalf("%s: sniff -o json (exit %d, %v): %v\nstdout:\n%s\nstderr:\n%s", step, r.ExitCode, r.Err, err, r.Stdout, r.Stderr)
		}
		rep := sniffReport{exit: r.ExitCode}
		rep.verdict, _ = raw.(map[string]any)["verdict"].(string)
		collectFlows(raw, "", &rep.flows)
		t.Logf("%s: exit %d, verdict %s, %d flows", step, r.ExitCode, rep.verdict, len(rep.flows))
		if r.ExitCode != 0 {
			t.Errorf("%s: sniff exit %d (%v)\nstderr:\n%s", step, r.ExitCode, r.Err, r.Stderr)
		}
		return rep
	}
	capture := func(step string) (sniffReport, string) {
		t.Helper()
		r, pcap := sniff(step, "4s")
		return parse(step, r), pcap
	}

	// 1. Enrolled: HBONE on 15008, nothing on the app port.
	rep, pcap := capture("hbone")
	if rep.verdict != "encrypted-istio" {
		t.Errorf("enrolled backend: verdict %s, want encrypted-istio\n%s", rep.verdict, rep)
	}
	hbone := 0
	for _, f := range rep.flows {
		if f.Path != "flows" {
			continue
		}
		switch f.Dst {
		case netip.AddrPortFrom(backendIP, podnet.HBONEPort).String():
			hbone++
			if f.Istio != "hbone" || f.Verdict != "encrypted-istio" || !strings.HasPrefix(f.Rule, "hbone-") {
				t.Errorf("flow to 15008: istio %q, verdict %s, rule %s; want hbone, encrypted-istio, an hbone rule", f.Istio, f.Verdict, f.Rule)
			}
		case netip.AddrPortFrom(backendIP, 80).String():
			t.Errorf("enrolled backend: application flow %s → %s (%s) on the app port", f.Src, f.Dst, f.Rule)
		}
	}
	if hbone == 0 {
		t.Errorf("no flow to the backend's 15008:\n%s", rep)
	}
	// tshark agrees: TLS on 15008, none of it on port 80; a handshake, if
	// the capture caught one, is TLS 1.3 with ALPN h2 and no SNI.
	if recs := tsharkFields(t, pcap, "tcp.port == 15008 && tls.record.content_type == 23", "frame.number"); len(recs) == 0 {
		t.Errorf("tshark: no TLS application data on port 15008")
	}
	if app := tsharkFields(t, pcap, "tcp.port == 80 && tcp.len > 0", "frame.number"); len(app) != 0 {
		t.Errorf("tshark: %d frames with payload on port 80, want none", len(app))
	}
	for _, h := range tsharkFields(t, pcap, "tcp.port == 15008 && tls.handshake.type == 1", "tls.handshake.extensions_alpn_str", "tls.handshake.extensions_server_name", "tls.handshake.extensions.supported_version") {
		if !strings.HasPrefix(h, "h2\t\t") || !strings.Contains(h, "0x0304") {
			t.Errorf("tshark: HBONE ClientHello %q, want ALPN h2, no SNI, TLS 1.3", h)
		}
	}

	// The backend's certificate comes from the ztunnel on its node (admin
	// /config_dump through the port-forward) and verifies.
	certs := env.Mesh(t, "certs", "-n", ns, backend.Name, "-o", "json")
	var it struct {
		Source   string `json:"source"`
		Identity string `json:"identity"`
		Verdict  struct {
			OK bool `json:"ok"`
		} `json:"verdict"`
	}
	if err := json.Unmarshal([]byte(certs.Stdout), &it); err != nil || certs.ExitCode != 0 {
		t.Errorf("certs of the enrolled backend: exit %d, %v, %v\n%s%s", certs.ExitCode, certs.Err, err, certs.Stdout, certs.Stderr)
	} else if id := "spiffe://cluster.local/ns/" + ns + "/sa/default"; it.Source != "ztunnel" || it.Identity != id || !it.Verdict.OK {
		t.Errorf("certs of the enrolled backend: source %s, identity %s, ok %t; want ztunnel, %s, true", it.Source, it.Identity, it.Verdict.OK, id)
	}

	// The summary names the transport it proved.
	if r := env.Mesh(t, "sniff", "-n", ns, "deploy/"+podnet.AppBackend, "--ssh-config", sshConfig, "--duration", "2s"); r.ExitCode != 0 || !strings.HasSuffix(r.Stdout, "Verdict: ENCRYPTED (Istio HBONE)\n") {
		t.Errorf("sniff of the enrolled backend: exit %d, %v\n%s%s", r.ExitCode, r.Err, r.Stdout, r.Stderr)
	}

	// verify reads the same identities from ztunnel for every ambient
	// workload of the namespace (no capture: only the identities matter here).
	vr := env.Mesh(t, "verify", ns, "--no-capture", "-o", "json")
	var vres verify.Result
	if err := json.Unmarshal([]byte(vr.Stdout), &vres); err != nil {
		t.Errorf("verify -o json (exit %d, %v): %v\n%s", vr.ExitCode, vr.Err, err, vr.Stderr)
	} else {
		var got []string
		for _, row := range vres.Identities.Rows {
			got = append(got, fmt.Sprintf("%s read=%t ok=%t %s", row.Workload, row.Read, row.OK, row.SPIFFEID))
		}
		want := []string{
			fmt.Sprintf("%s/%s read=true ok=true spiffe://cluster.local/ns/%s/sa/default", ns, podnet.AppBackend, ns),
			fmt.Sprintf("%s/%s read=true ok=true spiffe://cluster.local/ns/%s/sa/default", ns, podnet.AppFrontend, ns),
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("verify's identities of the ambient workloads:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	// A new frontend (on another node when there is one, with a ztunnel
	// there too) opens its HBONE connection while the backend is captured:
	// sniff sees ztunnel's ClientHello, and tshark reads it as TLS 1.3
	// offering exactly h2, without SNI.
	nodes, err := env.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node := ""
	for _, n := range nodes.Items {
		if n.Name != backend.Spec.NodeName && node == "" {
			node = n.Name
		}
	}
	done := make(chan struct{})
	var hr labtest.Result
	var hpcap string
	go func() {
		defer close(done)
		hr, hpcap = sniff("handshake", "20s")
	}()
	time.Sleep(8 * time.Second) // the capture is running (ssh and tcpdump take a few seconds)
	remote := extraFrontend(t, env, ns, "remote", nil, node)
	waitCalls(t, env, ns, remote.Name, " hbone ", 3)
	t.Logf("new frontend on %s → backend on %s: HBONE", remote.Spec.NodeName, backend.Spec.NodeName)
	<-done
	rep = parse("handshake", hr)
	hellos := 0
	for _, f := range rep.flows {
		if f.Rule == "hbone-hello" && strings.HasPrefix(f.Src, remote.Status.PodIP+":") && f.Dst == netip.AddrPortFrom(backendIP, podnet.HBONEPort).String() {
			hellos++
		}
	}
	if hellos != 1 {
		t.Errorf("%d hbone-hello flows from the new frontend %s, want its one pooled connection:\n%s", hellos, remote.Status.PodIP, rep)
	}
	if got := tsharkFields(t, hpcap, "tcp.port == 15008 && tls.handshake.type == 1", "ip.src", "tls.handshake.extensions_alpn_str", "tls.handshake.extensions_server_name", "tls.handshake.extensions.supported_version"); len(got) != 1 || got[0] != remote.Status.PodIP+"\th2\t\t0x0304" {
		t.Errorf("tshark: ClientHellos to 15008 %q, want one from %s offering h2, no SNI, TLS 1.3 only", got, remote.Status.PodIP)
	}
	if err := env.Kube.AppsV1().Deployments(ns).Delete(ctx, "frontend-remote", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// 2. A client of the namespace that calls the app port around ztunnel.
	bypass := extraFrontend(t, env, ns, "bypass", map[string]string{podnet.BypassAnnotation: "true"}, "")
	waitCalls(t, env, ns, bypass.Name, " plaintext ", 3)
	rep, _ = capture("bypass")
	if rep.verdict != "mixed" {
		t.Errorf("with a bypassing client: verdict %s, want mixed\n%s", rep.verdict, rep)
	}
	named := 0
	for _, f := range rep.flows {
		if f.Rule != "mesh-bypass" {
			continue
		}
		named++
		if !strings.HasPrefix(f.Src, bypass.Status.PodIP+":") || f.Dst != netip.AddrPortFrom(backendIP, 80).String() || f.Verdict != "plaintext" ||
			!strings.Contains(f.Evidence, "from enrolled pod "+ns+"/"+bypass.Name+" ("+bypass.Status.PodIP+") to the captured pod on port 80") {
			t.Errorf("bypass flow %s → %s, verdict %s, evidence %q; want from %s to the backend's port 80, plaintext, naming %s/%s",
				f.Src, f.Dst, f.Verdict, f.Evidence, bypass.Status.PodIP, ns, bypass.Name)
		}
	}
	if named == 0 {
		t.Errorf("no mesh-bypass flow:\n%s", rep)
	}

	// 3. The same from an enrolled pod of another namespace, whose Service
	// "backend" has the backend pod as its endpoint: named too, found by
	// its address.
	if err := env.Kube.AppsV1().Deployments(ns).Delete(ctx, "frontend-bypass", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	far := env.Namespace(t, map[string]string{"istio.io/dataplane-mode": "ambient"})
	farSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: far, Name: podnet.BackendService},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(80)}}}}
	if _, err := env.Kube.CoreV1().Services(far).Create(ctx, farSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready, port, proto := true, int32(80), corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: far, Name: "backend-far", Labels: map[string]string{discoveryv1.LabelServiceName: podnet.BackendService}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: &port, Protocol: &proto}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{backend.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: backend.Name}}}}
	if _, err := env.Kube.DiscoveryV1().EndpointSlices(far).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	farClient := extraFrontend(t, env, far, "bypass", map[string]string{podnet.BypassAnnotation: "true"}, "")
	waitCalls(t, env, far, farClient.Name, " plaintext ", 3)
	rep, _ = capture("bypass-far")
	named = 0
	for _, f := range rep.flows {
		if f.Rule == "mesh-bypass" && strings.HasPrefix(f.Src, farClient.Status.PodIP+":") &&
			strings.Contains(f.Evidence, "from enrolled pod "+far+"/"+farClient.Name+" ("+farClient.Status.PodIP+") to the captured pod on port 80") {
			named++
		}
	}
	if rep.verdict != "mixed" || named == 0 {
		t.Errorf("a bypassing client of namespace %s: verdict %s, %d flows naming it\n%s", far, rep.verdict, named, rep)
	}
}

// ztunnelDaemonSet creates a ztunnel DaemonSet (app=ztunnel) in ns and
// waits until its pod is ready.
func ztunnelDaemonSet(t *testing.T, env *labtest.Env, ns string) {
	t.Helper()
	zero := int64(0)
	z := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ztunnel", Labels: map[string]string{"app": podnet.AppZtunnel}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": podnet.AppZtunnel}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": podnet.AppZtunnel}},
				// As Istio's chart: on every node, tainted ones too.
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{Name: "istio-proxy", Image: "istio/ztunnel"}}}}}}
	if _, err := env.Kube.AppsV1().DaemonSets(ns).Create(context.Background(), z, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Gone, with its pods, before the next test: a namespace being deleted
	// still lists its DaemonSet, and tests that want no ztunnel would see it.
	t.Cleanup(func() {
		ctx := context.Background()
		fg := metav1.DeletePropagationForeground
		_ = env.Kube.AppsV1().DaemonSets(ns).Delete(ctx, "ztunnel", metav1.DeleteOptions{PropagationPolicy: &fg})
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := env.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + podnet.AppZtunnel})
			if err != nil || len(pods.Items) > 0 {
				return false, nil
			}
			_, err = env.Kube.AppsV1().DaemonSets(ns).Get(ctx, "ztunnel", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			t.Errorf("the ztunnel DaemonSet in %s is still there after a minute: %v", ns, err)
		}
	})
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := env.Kube.AppsV1().DaemonSets(ns).Get(ctx, "ztunnel", metav1.GetOptions{})
		return err == nil && d.Status.NumberReady > 0 && d.Status.NumberReady == d.Status.DesiredNumberScheduled, err
	}); err != nil {
		t.Fatal("ztunnel never ready:", err)
	}
}

// extraFrontend runs another frontend in ns, labelled version, with the
// pod annotations given, on node (any for "") and returns its pod.
func extraFrontend(t *testing.T, env *labtest.Env, ns, version string, annotations map[string]string, node string) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": podnet.AppFrontend, "version": version}
	one, zero := int32(1), int64(0)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "frontend-" + version, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &zero, NodeName: node,
					Containers: []corev1.Container{{Name: "app", Image: "kubectl-mesh-lab/frontend-app:" + version}}}}}}
	ctx := context.Background()
	if _, err := env.Kube.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitDeploymentReady(ctx, env.Kube, ns, d.Name, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return podOf(t, env, ns, "app="+podnet.AppFrontend+",version="+version)
}

func podOf(t *testing.T, env *labtest.Env, ns, selector string) *corev1.Pod {
	t.Helper()
	pods, err := env.Kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %s in %s: %v (%d found), want one", selector, ns, err, len(pods.Items))
	}
	return &pods.Items[0]
}

// waitCalls waits until pod's app log holds n successful calls of the
// backend that travelled as mode (" hbone ", " plaintext ").
func waitCalls(t *testing.T, env *labtest.Env, ns, pod, mode string, n int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		b, err := env.Kube.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: podnet.AppContainer}).DoRaw(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		calls := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "call backend: 200 ") && strings.Contains(line, mode) {
				calls++
			}
		}
		last = string(b)
		return calls >= n, nil
	})
	if err != nil {
		if len(last) > 2000 {
			last = last[len(last)-2000:]
		}
		t.Fatalf("%s/%s: fewer than %d calls over%s: %v\n%s", ns, pod, n, strings.TrimRight(mode, " "), err, last)
	}
}

type sniffReport struct {
	exit    int
	verdict string
	flows   []sniffFlow
}

type sniffFlow struct {
	Path                                               string
	Src, Dst, Protocol, Verdict, Rule, Istio, Evidence string
}

func (r sniffReport) String() string {
	var b strings.Builder
	for _, f := range r.flows {
		fmt.Fprintf(&b, "  [%s] %s → %s %s %s %s %q\n", f.Path, f.Src, f.Dst, f.Protocol, f.Verdict, f.Rule, f.Evidence)
	}
	return b.String()
}

// collectFlows gathers every object with src and dst strings, wherever the
// report lists it (per node, flows or infra).
func collectFlows(v any, key string, out *[]sniffFlow) {
	switch v := v.(type) {
	case map[string]any:
		src, ok1 := v["src"].(string)
		dst, ok2 := v["dst"].(string)
		if ok1 && ok2 {
			f := sniffFlow{Path: key, Src: src, Dst: dst}
			f.Protocol, _ = v["protocol"].(string)
			f.Verdict, _ = v["verdict"].(string)
			f.Rule, _ = v["rule"].(string)
			f.Istio, _ = v["istio"].(string)
			f.Evidence, _ = v["evidence"].(string)
			*out = append(*out, f)
			return
		}
		for k, c := range v {
			collectFlows(c, k, out)
		}
	case []any:
		for _, c := range v {
			collectFlows(c, key, out)
		}
	}
}

// tsharkFields reads pcap with 15008 decoded as TLS.
func tsharkFields(t *testing.T, pcap, filter string, fields ...string) []string {
	t.Helper()
	args := []string{"-r", pcap, "-d", "tcp.port==15008,tls", "-Y", filter, "-T", "fields"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark -Y %q: %v", filter, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
