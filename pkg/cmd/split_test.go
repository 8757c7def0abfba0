package cmd

import (
	"context"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/options/fake"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// trafficFake is fake options whose dynamic client can list Istio and
// Gateway API objects and whose discovery serves them (unless noAPIs).
func trafficFake(kubeObjs []runtime.Object, noAPIs bool, dynObjs ...runtime.Object) (*fake.Options, *dynamicfake.FakeDynamicClient) {
	f := fake.New(kubeObjs, nil)
	if !noAPIs {
		f.Kube.Resources = []*metav1.APIResourceList{
			{GroupVersion: "networking.istio.io/v1", APIResources: []metav1.APIResource{
				{Name: "virtualservices", Kind: "VirtualService", Namespaced: true},
				{Name: "destinationrules", Kind: "DestinationRule", Namespaced: true},
				{Name: "gateways", Kind: "Gateway", Namespaced: true},
			}},
			{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: []metav1.APIResource{
				{Name: "httproutes", Kind: "HTTPRoute", Namespaced: true},
				{Name: "gateways", Kind: "Gateway", Namespaced: true},
			}},
		}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		traffic.VirtualServices:  "VirtualServiceList",
		traffic.DestinationRules: "DestinationRuleList",
		traffic.IstioGateways:    "GatewayList",
		traffic.HTTPRoutes:       "HTTPRouteList",
		traffic.Gateways:         "GatewayList",
	}, dynObjs...)
	// The fake's tracker would store dry-run writes; the API server does not.
	dyn.PrependReactor("create", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		c := a.(clienttesting.CreateActionImpl)
		return len(c.CreateOptions.DryRun) > 0, c.Object, nil
	})
	dyn.PrependReactor("update", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		u := a.(clienttesting.UpdateActionImpl)
		return len(u.UpdateOptions.DryRun) > 0, u.Object, nil
	})
	dyn.PrependReactor("delete", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		d := a.(clienttesting.DeleteActionImpl)
		return len(d.DeleteOptions.DryRun) > 0, nil, nil
	})
	f.Dynamic = dyn
	f.SetClients(options.Clients{Kube: f.Kube, Istio: f.Istio, Dynamic: dyn, Discovery: memory.NewMemCacheClient(f.Kube.Discovery())})
	f.ConfigFlags.Namespace = ptr("shop")
	return f, dyn
}

func ptr(s string) *string { return &s }

func backendObjects() []runtime.Object {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "backend"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "backend"}, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}
	pod := func(name, version string, ready corev1.ConditionStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"app": "backend", "version": version}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}},
		}
	}
	return []runtime.Object{svc, pod("b1", "v1", corev1.ConditionTrue), pod("b2", "v2", corev1.ConditionTrue), pod("b3", "v2", corev1.ConditionFalse)}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		noAPIs     bool
		stdout     string
		stderr     string
		err        string
		wantWrites bool
	}{
		{
			name:   "show without routes",
			args:   []string{"split", "backend"},
			stdout: "ROUTE    SUBSET   WEIGHT   READY PODS\n<none>   v1       -        1/1\n<none>   v2       -        1/2\n",
			stderr: "no VirtualService routes service shop/backend: traffic goes to all its pods; set a split with: kubectl mesh split backend 50/50\n",
		},
		{
			name:       "slash weights",
			args:       []string{"split", "backend", "50/50"},
			stdout:     "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/2\n",
			stderr:     "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\n",
			wantWrites: true,
		},
		{
			name:       "subset flags between other flags",
			args:       []string{"split", "--v1", "30", "backend", "-n", "shop", "--v2=70", "--subset-label", "version"},
			stdout:     "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       30       1/1\nhttp[0]   v2       70       1/2\n",
			stderr:     "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\n",
			wantWrites: true,
		},
		{
			name:   "named weights dry run",
			args:   []string{"split", "backend", "v1=100,v2=0", "--dry-run=client"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       100      1/1\nhttp[0]   v2       0        1/2\n",
			stderr: "destinationrule.networking.istio.io/backend created (dry run)\nvirtualservice.networking.istio.io/backend created (dry run)\n",
		},
		{
			name: "yaml output",
			args: []string{"split", "backend", "v2=100", "--dry-run", "-o", "yaml"}, // bare --dry-run is client, as in kubectl
			stdout: `apiVersion: v1
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata:
    name: backend
    namespace: shop
  spec:
    host: backend
    subsets:
    - labels:
        version: v1
      name: v1
    - labels:
        version: v2
      name: v2
- apiVersion: networking.istio.io/v1
  kind: VirtualService
  metadata:
    annotations:
      traffic.kubectl-mesh.io/previous-split: '{"route":"http[0]","added":true,"written":[{"destination":{"host":"backend","subset":"v2"},"weight":100}],"created":["virtualservice/backend","destinationrule/backend"]}'
    name: backend
    namespace: shop
  spec:
    hosts:
    - backend
    http:
    - route:
      - destination:
          host: backend
          subset: v2
        weight: 100
kind: List
metadata:
  resourceVersion: ""
`,
			stderr: "destinationrule.networking.istio.io/backend created (dry run)\nvirtualservice.networking.istio.io/backend created (dry run)\n",
		},
		{name: "negative weights", args: []string{"split", "backend", "-5/105"}, err: `invalid weights "-5/105": weight -5 is out of range; weights are whole numbers 0-100`},
		{name: "sum too big", args: []string{"split", "backend", "60/60"}, err: `invalid weights "60/60": weights must add up to 100, got 120`},
		{name: "not numbers", args: []string{"split", "backend", "a/b"}, err: `invalid weights "a/b": "a" is not a whole number; weights are whole numbers 0-100`},
		{name: "sum too small", args: []string{"split", "backend", "v1=50"}, err: `invalid weights "v1=50": weights must add up to 100, got 50`},
		{name: "flag sum", args: []string{"split", "backend", "--v1", "50"}, err: `invalid weights "--v1 50": weights must add up to 100, got 50`},
		{name: "flag without value", args: []string{"split", "backend", "--v1"}, err: `--v1 needs a weight, e.g. --v1 50 (if --v1 is not a subset, it is an unknown flag; see --help)`},
		{name: "typo flag", args: []string{"split", "backend", "--dryrun=client"}, err: `invalid weight for --dryrun: "client" is not a whole number; weights are whole numbers 0-100 (if --dryrun is not a subset, it is an unknown flag)`},
		{name: "both forms", args: []string{"split", "backend", "50/50", "--v1", "50"}, err: `weights given twice ("50/50" and --v1 ...): use either WEIGHTS or --SUBSET flags`},
		{name: "undo with weights", args: []string{"split", "backend", "50/50", "--undo"}, err: `--undo restores the previous weights; do not give weights with it`},
		{name: "no service", args: []string{"split"}, err: `name the service: kubectl mesh split SERVICE [WEIGHTS]`},
		{name: "extra args", args: []string{"split", "backend", "50", "50"}, err: `too many arguments "50 50": give WEIGHTS as one argument, like 50/50 or v1=50,v2=50`},
		{name: "bad dry run", args: []string{"split", "backend", "50/50", "--dry-run=maybe"}, err: `Invalid dry-run value (maybe). Must be "none", "server", or "client".`},
		// As in kubectl, a bare --dry-run is client and its value needs "=".
		{name: "dry run value without =", args: []string{"split", "backend", "50/50", "--dry-run", "server"}, err: "--dry-run takes its value with '=': use --dry-run=server"},
		{name: "bad api", args: []string{"split", "backend", "50/50", "--api", "smi"}, err: `invalid --api "smi": use istio or gateway`},
		{name: "bad color", args: []string{"split", "backend", "--color", "pink"}, err: `invalid --color "pink": use auto, always or never`},
		{name: "unknown shorthand", args: []string{"split", "backend", "-x"}, err: `unknown shorthand flag: 'x' in -x`},
		{name: "output without weights", args: []string{"split", "backend", "-o", "yaml"}, err: `--dry-run and --output apply when changing the split; give weights or --undo`},
		{name: "unknown subset", args: []string{"split", "backend", "v1=50,v3=50"}, err: `subset "v3" not found: no pods behind service shop/backend have version=v3 (versions found: v1, v2); deploy it first or pass --allow-empty`},
		{name: "missing service", args: []string{"split", "frontend", "50/50"}, err: `service "frontend" not found in namespace "shop"; list services with: kubectl get services -n shop`},
		{name: "istio absent", args: []string{"split", "backend", "50/50"}, noAPIs: true, err: `istio CRDs are not installed in this cluster (no networking.istio.io/v1 VirtualService); install Istio first`},
		{name: "undo without history", args: []string{"split", "backend", "--undo"}, err: `nothing to undo for service shop/backend: no VirtualService routes it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, dyn := trafficFake(backendObjects(), tt.noAPIs)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(context.Background())
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.Out.String(); got != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.stdout)
			}
			if got := f.ErrOut.String(); got != tt.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tt.stderr)
			}
			writes := 0
			for _, a := range dyn.Actions() {
				if a.GetVerb() == "create" || a.GetVerb() == "update" {
					writes++
				}
			}
			if (writes > 0) != tt.wantWrites {
				t.Errorf("%d writes, want writes: %v", writes, tt.wantWrites)
			}
		})
	}
}

func TestSplitHelp(t *testing.T) {
	f, _ := trafficFake(nil, false)
	cmd := NewCmdMesh(f.Options)
	cmd.SetArgs([]string{"split", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	out := f.Out.String()
	for _, want := range []string{"Usage:\n  kubectl mesh split SERVICE [WEIGHTS | --SUBSET WEIGHT ...]", "--v1 80 --v2 20", "--subset-label string", "--dry-run string"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

func TestTakeSubsetFlags(t *testing.T) {
	f, _ := trafficFake(nil, false)
	root := NewCmdMesh(f.Options)
	split, _, err := root.Find([]string{"split"})
	if err != nil {
		t.Fatal(err)
	}
	split.InheritedFlags()
	tests := []struct {
		args []string
		rest string
		subs string
	}{
		{args: []string{"backend", "--v1", "50", "--v2=50"}, rest: "-- backend", subs: "v1=50 v2=50"},
		{args: []string{"-n", "x", "backend", "-5/105"}, rest: "-n x -- backend -5/105"},
		{args: []string{"--namespace=x", "--route", "main", "backend", "--undo"}, rest: "--namespace=x --route main --undo -- backend"},
		{args: []string{"backend", "-oyaml", "--", "--v1"}, rest: "-oyaml -- backend --v1"},
		{args: []string{"--v10", "0", "backend", "--canary", "100"}, rest: "-- backend", subs: "v10=0 canary=100"},
	}
	for _, tt := range tests {
		rest, subs, err := takeSubsetFlags(split.Flags(), tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		var s []string
		for _, sw := range subs {
			s = append(s, sw.Subset+"="+strconv.Itoa(sw.Weight))
		}
		if got := strings.Join(rest, " "); got != tt.rest {
			t.Errorf("%v: rest %q, want %q", tt.args, got, tt.rest)
		}
		if got := strings.Join(s, " "); got != tt.subs {
			t.Errorf("%v: subsets %q, want %q", tt.args, got, tt.subs)
		}
	}
}

func splitVS(route string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	j, _ := yaml.YAMLToJSON([]byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend]
  http:
  - route:
` + route))
	_ = u.UnmarshalJSON(j)
	return u
}

// TestSplitCommandKeepsOtherHosts: a destination to another host survives
// split with its weight, shown in the table and in a note; when the
// service has no share, split fails and writes nothing.
func TestSplitCommandKeepsOtherHosts(t *testing.T) {
	legacy := "    - destination: {host: legacy.other.svc.cluster.local}\n      weight: 10\n"
	tests := []struct {
		name           string
		route          string
		args           []string
		stdout, stderr string
		err            string
	}{
		{
			name:   "show",
			route:  "    - destination: {host: backend}\n      weight: 90\n" + legacy,
			args:   []string{"split", "backend"},
			stdout: "ROUTE     SUBSET                           WEIGHT   READY PODS\nhttp[0]   (all)                            90       2/3\nhttp[0]   legacy.other.svc.cluster.local   10       -\n",
		},
		{
			name:   "keep",
			route:  "    - destination: {host: backend}\n      weight: 90\n" + legacy,
			args:   []string{"split", "backend", "50/50"},
			stdout: "ROUTE     SUBSET                           WEIGHT   READY PODS\nhttp[0]   legacy.other.svc.cluster.local   10       -\nhttp[0]   v1                               45       1/1\nhttp[0]   v2                               45       1/2\n",
			stderr: "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend configured\nroute http[0] of virtualservice backend keeps legacy.other.svc.cluster.local (weight 10): the weights given divide the 90 of 100 that goes to service shop/backend (v1=45, v2=45)\n",
		},
		{
			name:  "refuse",
			route: "    - destination: {host: legacy.other.svc.cluster.local}\n",
			args:  []string{"split", "backend", "50/50"},
			err:   "route http[0] of virtualservice backend sends no traffic to service shop/backend: all of it goes to legacy.other.svc.cluster.local (weight 100); split divides only the service's own share, so give the service a weight in that route by hand (kubectl edit), or choose another route with --route",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, dyn := trafficFake(backendObjects(), false, splitVS(tt.route))
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(context.Background())
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
				for _, a := range dyn.Actions() {
					if v := a.GetVerb(); v != "list" && v != "get" {
						t.Errorf("unexpected %s %s", v, a.GetResource().Resource)
					}
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.Out.String(); got != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.stdout)
			}
			if got := f.ErrOut.String(); got != tt.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tt.stderr)
			}
		})
	}
}

func TestSplitCommandAmbient(t *testing.T) {
	const noWaypoint = "neither the service nor namespace shop has the label istio.io/use-waypoint"
	const create = "Create one with: kubectl mesh enable-injection shop --ambient --waypoint (or: istioctl waypoint apply -n shop --enroll-namespace)"
	tests := []struct {
		name       string
		args       []string
		stdout     string
		stderr     string
		err        string
		wantWrites bool
	}{
		{
			name: "refused without a waypoint",
			args: []string{"split", "backend", "50/50"},
			err: "service shop/backend is in ambient mode (namespace shop has istio.io/dataplane-mode=ambient and pod b1 has no sidecar), where only a waypoint applies L7 routes, and no waypoint serves it: " +
				noWaypoint + "; Istio would ignore this split. " + create + ", then split again; or pass --force to write the route anyway",
		},
		{
			name:   "forced",
			args:   []string{"split", "backend", "50/50", "--force"},
			stdout: "ROUTE     SUBSET   WEIGHT   READY PODS\nhttp[0]   v1       50       1/1\nhttp[0]   v2       50       1/2\n",
			stderr: "destinationrule.networking.istio.io/backend created\nvirtualservice.networking.istio.io/backend created\n" +
				"warning: service shop/backend is in ambient mode and no waypoint serves it (" + noWaypoint + "): Istio ignores this route until one does. " + create + "\n",
			wantWrites: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}
			f, dyn := trafficFake(append(backendObjects(), ns), false)
			cmd := NewCmdMesh(f.Options)
			cmd.SetArgs(tt.args)
			err := cmd.ExecuteContext(context.Background())
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got: %v\nwant: %s", err, tt.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := f.Out.String(); got != tt.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, tt.stdout)
			}
			if got := f.ErrOut.String(); got != tt.stderr {
				t.Errorf("stderr:\n%s\nwant:\n%s", got, tt.stderr)
			}
			writes := 0
			for _, a := range dyn.Actions() {
				if v := a.GetVerb(); v == "create" || v == "update" || v == "delete" {
					writes++
				}
			}
			if (writes > 0) != tt.wantWrites {
				t.Errorf("%d writes, want writes: %v", writes, tt.wantWrites)
			}
		})
	}
}
