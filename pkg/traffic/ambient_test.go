package traffic

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

func namespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
}

// waypoint is a Gateway of class istio-waypoint with the HBONE listener;
// from sets allowedRoutes.namespaces.from, addressed a status address.
func waypoint(ns, name string, lbls map[string]string, from string, addressed bool) *unstructured.Unstructured {
	l := map[string]interface{}{"name": "mesh", "port": int64(15008), "protocol": "HBONE"}
	if from != "" {
		l["allowedRoutes"] = map[string]interface{}{"namespaces": map[string]interface{}{"from": from}}
	}
	gw := newObject(Gateways, ns, name)
	gw.SetLabels(lbls)
	gw.Object["spec"] = map[string]interface{}{"gatewayClassName": mesh.WaypointClass, "listeners": []interface{}{l}}
	gw.SetGeneration(1)
	programmed := map[string]interface{}{"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": int64(1)}
	gw.Object["status"] = map[string]interface{}{"conditions": []interface{}{programmed}}
	if addressed {
		gw.Object["status"].(map[string]interface{})["addresses"] = []interface{}{map[string]interface{}{"type": "IPAddress", "value": "10.96.0.50"}}
	}
	return gw
}

func gatewayClass(name string, lbls map[string]string) *unstructured.Unstructured {
	gc := &unstructured.Unstructured{Object: map[string]interface{}{}}
	gc.SetAPIVersion("gateway.networking.k8s.io/v1")
	gc.SetKind("GatewayClass")
	gc.SetName(name)
	gc.SetLabels(lbls)
	return gc
}

// ambientBackend is shopBackend in namespace shop labelled nsLabels, with
// the Service labelled svcLabels.
func ambientBackend(nsLabels, svcLabels map[string]string) []runtime.Object {
	objs := append(shopBackend(), namespace("shop", nsLabels))
	objs[0].(*corev1.Service).Labels = svcLabels
	return objs
}

func withSidecars(objs []runtime.Object) []runtime.Object {
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "app"}, corev1.Container{Name: "istio-proxy"})
		}
	}
	return objs
}

func forbidden(gr schema.GroupResource) clienttesting.ReactionFunc {
	return func(a clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(gr, "x", nil)
	}
}

func TestSplitAmbient(t *testing.T) {
	amb := map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient}
	ambWP := map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient, mesh.LabelUseWaypoint: "waypoint"}
	createCmd := "create one with: kubectl mesh enable-injection shop --ambient --waypoint (or: istioctl waypoint apply -n shop --enroll-namespace)"
	refusal := func(ambient, reason, fix string) string {
		return "service shop/backend is in ambient mode (" + ambient + "), where only a waypoint applies L7 routes, and no waypoint serves it: " + reason +
			"; Istio would ignore this split. " + fix + ", then split again; or pass --force to write the route anyway"
	}
	nsAmbient := "namespace shop has istio.io/dataplane-mode=ambient and pod backend-v1-a has no sidecar"
	tests := []struct {
		name    string
		kube    []runtime.Object
		dyn     []runtime.Object
		force   bool
		api     API
		setup   func(f fakes)
		err     string
		notes   []string
		written []string
	}{
		{
			name:    "namespace not ambient",
			kube:    ambientBackend(nil, nil),
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name: "ambient without waypoint label",
			kube: ambientBackend(amb, nil),
			err:  refusal(nsAmbient, "neither the service nor namespace shop has the label istio.io/use-waypoint", "C"+createCmd[1:]),
		},
		{
			name:    "ambient without waypoint, forced",
			kube:    ambientBackend(amb, nil),
			force:   true,
			notes:   []string{"warning: service shop/backend is in ambient mode and no waypoint serves it (neither the service nor namespace shop has the label istio.io/use-waypoint): Istio ignores this route until one does. C" + createCmd[1:]},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name:    "namespace waypoint serves the service",
			kube:    ambientBackend(ambWP, nil),
			dyn:     []runtime.Object{waypoint("shop", "waypoint", map[string]string{LabelWaypointFor: "service"}, "", true)},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name:    "waypoint without an address yet",
			kube:    ambientBackend(ambWP, nil),
			dyn:     []runtime.Object{waypoint("shop", "waypoint", nil, "", false)},
			notes:   []string{"waypoint shop/waypoint has no address yet (status.addresses is empty): Istio routes through it once its Deployment has a ready pod (kubectl get gateway waypoint -n shop)"},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name: "waypoint not programmed: istiod rejected it",
			kube: ambientBackend(ambWP, nil),
			dyn: []runtime.Object{func() runtime.Object {
				gw := waypoint("shop", "waypoint", nil, "", false)
				gw.SetGeneration(2) // edited since: the Programmed condition below is stale
				return gw
			}()},
			notes:   []string{"waypoint shop/waypoint is not programmed yet (no Programmed condition for its current generation yet): ztunnel sends it traffic once istiod has programmed it and its Deployment has a ready pod (kubectl get gateway waypoint -n shop)"},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name: "label names a gateway that does not exist",
			kube: ambientBackend(ambWP, nil),
			err: refusal(nsAmbient, "namespace shop has istio.io/use-waypoint=waypoint, and no Gateway shop/waypoint exists",
				"Create it with: kubectl mesh enable-injection shop --ambient --waypoint=waypoint (or: istioctl waypoint apply -n shop --name waypoint)"),
		},
		{
			name: "waypoint for workloads only",
			kube: ambientBackend(amb, map[string]string{mesh.LabelUseWaypoint: "wp"}),
			dyn:  []runtime.Object{waypoint("shop", "wp", map[string]string{LabelWaypointFor: "workload"}, "", true)},
			err: refusal(nsAmbient, "service shop/backend has istio.io/use-waypoint=wp, and Gateway shop/wp sets istio.io/waypoint-for=workload, so it serves no traffic addressed to services",
				"Label it for services: kubectl label gateway wp -n shop istio.io/waypoint-for=service --overwrite"),
		},
		{
			name: "gateway class sets waypoint-for none",
			kube: ambientBackend(ambWP, nil),
			dyn:  []runtime.Object{waypoint("shop", "waypoint", nil, "", true), gatewayClass(mesh.WaypointClass, map[string]string{LabelWaypointFor: "none"})},
			err: refusal(nsAmbient, "namespace shop has istio.io/use-waypoint=waypoint, and GatewayClass istio-waypoint sets istio.io/waypoint-for=none, so it serves no traffic addressed to services",
				"Label it for services: kubectl label gateway waypoint -n shop istio.io/waypoint-for=service --overwrite"),
		},
		{
			name: "service opts out of the namespace waypoint",
			kube: ambientBackend(ambWP, map[string]string{mesh.LabelUseWaypoint: "none"}),
			dyn:  []runtime.Object{waypoint("shop", "waypoint", nil, "", true)},
			err: refusal(nsAmbient, "service shop/backend opts out of waypoints with istio.io/use-waypoint=none",
				"Remove the label (kubectl label service backend -n shop istio.io/use-waypoint-) and "+createCmd),
		},
		{
			name: "waypoint in another namespace accepts only its own",
			kube: ambientBackend(map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient, mesh.LabelUseWaypoint: "shared", mesh.LabelUseWaypointNamespace: "mesh"}, nil),
			dyn:  []runtime.Object{waypoint("mesh", "shared", nil, "", true)},
			err: refusal(nsAmbient, "namespace shop has istio.io/use-waypoint=shared, and the HBONE listener of Gateway mesh/shared accepts only routes from its own namespace mesh (allowedRoutes from Same)",
				"Allow namespace shop in the listener's allowedRoutes, or use a waypoint in namespace shop"),
		},
		{
			name:    "waypoint in another namespace accepting all",
			kube:    ambientBackend(map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient, mesh.LabelUseWaypoint: "shared", mesh.LabelUseWaypointNamespace: "mesh"}, nil),
			dyn:     []runtime.Object{waypoint("mesh", "shared", nil, "All", true)},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name:    "every pod has a sidecar",
			kube:    withSidecars(ambientBackend(amb, nil)),
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name: "every pod opts out",
			kube: func() []runtime.Object {
				objs := ambientBackend(amb, nil)
				for _, o := range objs {
					if p, ok := o.(*corev1.Pod); ok {
						p.Labels[mesh.LabelDataplaneMode] = "none"
					}
				}
				return objs
			}(),
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name: "namespace may not be read, pod enrolled by its label",
			kube: ambientBackend(nil, nil),
			setup: func(f fakes) {
				f.kube.PrependReactor("get", "namespaces", forbidden(corev1.Resource("namespaces")))
				p, _ := f.kube.CoreV1().Pods("shop").Get(context.Background(), "backend-v2-a", metav1.GetOptions{})
				p.Labels[mesh.LabelDataplaneMode] = mesh.DataplaneAmbient
				if _, err := f.kube.CoreV1().Pods("shop").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
					panic(err)
				}
			},
			err: refusal("pod backend-v2-a has istio.io/dataplane-mode=ambient",
				"service shop/backend has no istio.io/use-waypoint label, and namespace shop could not be read (forbidden) to see whether it names one",
				`Ask a cluster admin for "get" on namespaces, or `+createCmd),
		},
		{
			name:  "gateway may not be read",
			kube:  ambientBackend(ambWP, nil),
			setup: func(f fakes) { f.dyn.PrependReactor("get", "gateways", forbidden(Gateways.GroupResource())) },
			err: refusal(nsAmbient, "namespace shop has istio.io/use-waypoint=waypoint, and Gateway shop/waypoint could not be read to check that it exists and serves services (forbidden)",
				`Ask a cluster admin for "get" on gateways.gateway.networking.k8s.io in namespace shop`),
		},
		{
			name:    "namespace may not be read",
			kube:    ambientBackend(amb, nil),
			setup:   func(f fakes) { f.kube.PrependReactor("get", "namespaces", forbidden(corev1.Resource("namespaces"))) },
			notes:   []string{`could not read namespace shop (forbidden) to check whether it is in ambient mode; if it is, this route takes effect only through a waypoint (ask a cluster admin for "get" on namespaces to have it checked)`},
			written: []string{"destinationrule.networking.istio.io/backend created", "virtualservice.networking.istio.io/backend created"},
		},
		{
			name:    "gateway API route through the waypoint",
			kube:    append(ambientBackend(ambWP, nil), service("shop", "backend-v1", nil, 8080), service("shop", "backend-v2", nil, 8080)),
			dyn:     []runtime.Object{waypoint("shop", "waypoint", nil, "", true)},
			api:     APIGateway,
			written: []string{"httproute.gateway.networking.k8s.io/backend created"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes(tt.kube)
			// Created rather than seeded: the fake files seeded objects
			// by kind, and Istio's Gateway shares the kind.
			for _, o := range tt.dyn {
				u := o.(*unstructured.Unstructured)
				gvr := Gateways
				if u.GetKind() == "GatewayClass" {
					gvr = GatewayClasses
				}
				if _, err := f.dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if tt.setup != nil {
				tt.setup(f)
			}
			res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend", Weights: mustWeights(t, "50/50"), Force: tt.force, API: tt.api})
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v\nwant %s", err, tt.err)
				}
				for _, a := range f.dyn.Actions()[len(tt.dyn):] {
					if v := a.GetVerb(); v != "get" && v != "list" {
						t.Errorf("refused split wrote: %s %s", v, a.GetResource().Resource)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var written []string
			for _, c := range res.Changes {
				written = append(written, c.String())
			}
			if !reflect.DeepEqual(written, tt.written) {
				t.Errorf("written = %q, want %q", written, tt.written)
			}
			if !reflect.DeepEqual(res.Notes, tt.notes) {
				t.Errorf("notes = %q\nwant %q", res.Notes, tt.notes)
			}
			if tt.api == APIGateway {
				refs, _, _ := unstructured.NestedSlice(get(t, f, HTTPRoutes, "shop", "backend").Object, "spec", "parentRefs")
				want := []interface{}{map[string]interface{}{"group": "", "kind": "Service", "name": "backend"}}
				if !reflect.DeepEqual(refs, want) {
					t.Errorf("parentRefs = %v, want %v (the Service, which the waypoint serves)", refs, want)
				}
			}
		})
	}
}

func TestSplitAmbientShowNotes(t *testing.T) {
	f := newFakes(ambientBackend(map[string]string{mesh.LabelDataplaneMode: mesh.DataplaneAmbient}, nil))
	res, err := Split(context.Background(), f.Clients, SplitConfig{Namespace: "shop", Service: "backend"})
	if err != nil {
		t.Fatal(err)
	}
	want := "service shop/backend is in ambient mode (namespace shop has istio.io/dataplane-mode=ambient and pod backend-v1-a has no sidecar) and no waypoint serves it: " +
		"neither the service nor namespace shop has the label istio.io/use-waypoint; Istio ignores its routes until one does. " +
		"Create one with: kubectl mesh enable-injection shop --ambient --waypoint (or: istioctl waypoint apply -n shop --enroll-namespace)"
	if n := res.Notes; len(n) != 2 || n[1] != want {
		t.Errorf("notes = %q\nwant [<no routes note> %q]", n, want)
	}
	if !strings.HasPrefix(res.Notes[0], "no VirtualService routes service shop/backend") {
		t.Errorf("first note = %q", res.Notes[0])
	}
}
