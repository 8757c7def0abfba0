package traffic

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestExposeBindsExistingMeshVirtualService(t *testing.T) {
	vs := readYAML(t, "testdata/complex-vs.yaml")
	unstructured.RemoveNestedField(vs.Object, "spec", "gateways")
	f := newFakes(shopBackend(), vs.DeepCopy())

	_, err := Expose(context.Background(), f.Clients, ExposeConfig{Namespace: "shop", Service: "backend"})
	want := "virtualservice backend-routes already routes service shop/backend inside the mesh, and Istio does not allow host * on a VirtualService bound to the mesh; pass --host (e.g. --host backend.example.com) to bind it to the gateway under that name"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got: %v\nwant: %s", err, want)
	}

	res, err := Expose(context.Background(), f.Clients, ExposeConfig{Namespace: "shop", Service: "backend", Host: "api.example.com", PathPrefix: "/api"})
	if err != nil {
		t.Fatal(err)
	}
	got := get(t, f, VirtualServices, "shop", "backend-routes")
	wantVS := vs.DeepCopy()
	_ = unstructured.SetNestedStringSlice(wantVS.Object, []string{"mesh", "backend-gateway"}, "spec", "gateways")
	_ = unstructured.SetNestedStringSlice(wantVS.Object, []string{"backend.shop.svc.cluster.local", "backend-alias.example.com", "api.example.com"}, "spec", "hosts")
	if g, w := toYAML(t, got.Object), toYAML(t, wantVS.Object); g != w {
		t.Errorf("virtual service:\n%s\nwant:\n%s", g, w)
	}
	wantNotes := []string{
		"--path-prefix /api is not applied: virtualservice backend-routes exists and its routes are kept",
		"no ingress gateway Service has label istio=ingressgateway, so the URL is unknown; is the ingress gateway installed? (see --gateway-selector)",
	}
	if toYAML(t, res.Notes) != toYAML(t, wantNotes) {
		t.Errorf("notes:\n%s", toYAML(t, res.Notes))
	}

	// A wildcard covering a host already there would be a duplicate host.
	_, err = Expose(context.Background(), f.Clients, ExposeConfig{Namespace: "shop", Service: "backend", Host: "*.example.com"})
	want = "virtualservice backend-routes already has host backend-alias.example.com, which --host *.example.com would duplicate; pass a --host that does not cover it"
	if err == nil || err.Error() != want {
		t.Fatalf("error:\n got: %v\nwant: %s", err, want)
	}
}

func TestHostCovered(t *testing.T) {
	for _, tt := range []struct {
		hosts []string
		h     string
		want  bool
	}{
		{[]string{"*"}, "shop.example.com", true},
		{[]string{"*.example.com"}, "shop.example.com", true},
		{[]string{"*.example.com"}, "example.com", false},
		{[]string{"shop.example.com"}, "shop.example.com", true},
		{[]string{"shop.example.com"}, "*", false},
		{nil, "*", false},
	} {
		if got := hostCovered(tt.hosts, tt.h); got != tt.want {
			t.Errorf("hostCovered(%v, %q) = %v", tt.hosts, tt.h, got)
		}
	}
}
