package inject

import (
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

func TestNewWaypoint(t *testing.T) {
	got, err := yaml.Marshal(NewWaypoint("shop", "waypoint").Object)
	if err != nil {
		t.Fatal(err)
	}
	// As `istioctl waypoint generate --for service` writes it, plus our mark.
	want := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  annotations:
    inject.kubectl-mesh.io/created-by: kubectl-mesh enable-injection
  labels:
    istio.io/waypoint-for: service
  name: waypoint
  namespace: shop
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
`
	if string(got) != want {
		t.Errorf("waypoint =\n%s\nwant\n%s", got, want)
	}
	if !CreatedByUs(NewWaypoint("shop", "w")) {
		t.Error("CreatedByUs(NewWaypoint) = false")
	}
}

func TestValidateWaypointName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"waypoint", ""},
		{"shop-wp", ""},
		{"none", `--waypoint "none" is reserved by Istio (istio.io/use-waypoint=none opts out of a waypoint); choose another name`},
		{"Shop", `--waypoint "Shop" is not a valid name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`},
	}
	for _, tt := range tests {
		err := ValidateWaypointName(tt.name)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("ValidateWaypointName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestGatewayConditions(t *testing.T) {
	cond := func(kv ...string) any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name  string
		conds []any
		want  string
	}{
		{"no controller", nil, "no conditions, so no controller has accepted it"},
		{"programmed", []any{cond("type", "Accepted", "status", "True", "reason", "Accepted"), cond("type", "Programmed", "status", "True")},
			"Accepted=True (Accepted), Programmed=True"},
		{"the CRD's default", []any{cond("type", "Accepted", "status", "Unknown", "reason", "Pending", "message", "Waiting for controller"),
			cond("type", "Programmed", "status", "Unknown", "reason", "Pending", "message", "Waiting for controller")},
			"Accepted=Unknown (Pending: Waiting for controller), Programmed=Unknown (Pending: Waiting for controller), so no controller has accepted it"},
		{"refused", []any{cond("type", "Accepted", "status", "False", "reason", "InvalidParameters", "message", "no template")},
			"Accepted=False (InvalidParameters: no template)"},
	}
	for _, tt := range tests {
		gw := NewWaypoint("shop", "waypoint")
		if tt.conds != nil {
			if err := unstructured.SetNestedSlice(gw.Object, tt.conds, "status", "conditions"); err != nil {
				t.Fatal(err)
			}
		}
		if got := GatewayConditions(gw); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestPlanWaypointLabels(t *testing.T) {
	ambient := []runtime.Object{injectorMWC("", ""), ztunnel(1, 1)}
	r := NewRules(inventory(t, ambient...))
	tests := []struct {
		name     string
		nsLabels map[string]string
		req      EnableRequest
		want     LabelChange
		wantErr  string
	}{
		{name: "ambient with a waypoint", req: EnableRequest{Ambient: true, Waypoint: "waypoint"},
			want: LabelChange{Set: map[string]string{LabelDataplaneMode: "ambient", LabelUseWaypoint: "waypoint"}}},
		{name: "already using it", nsLabels: map[string]string{LabelDataplaneMode: "ambient", LabelUseWaypoint: "waypoint"},
			req: EnableRequest{Ambient: true, Waypoint: "waypoint"}, want: LabelChange{Set: map[string]string{}}},
		{name: "another one", nsLabels: map[string]string{LabelDataplaneMode: "ambient", LabelUseWaypoint: "old"},
			req: EnableRequest{Ambient: true, Waypoint: "new"},
			want: LabelChange{Set: map[string]string{LabelUseWaypoint: "new"},
				Notes: []string{"replacing istio.io/use-waypoint=old: the namespace's Services now use waypoint new"}}},
		{name: "sidecars", req: EnableRequest{Waypoint: "waypoint"},
			wantErr: "--waypoint needs --ambient: waypoints serve ambient namespaces, while sidecars route traffic themselves; add --ambient"},
	}
	for _, tt := range tests {
		got, err := r.PlanEnable("shop", tt.nsLabels, tt.req)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s: error %v, want %s", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: PlanEnable() = %#v, %v\nwant %#v", tt.name, got, err, tt.want)
		}
	}
	got := r.PlanDisable("shop", map[string]string{LabelDataplaneMode: "ambient", LabelUseWaypoint: "waypoint"})
	if want := []string{LabelDataplaneMode, LabelUseWaypoint}; !reflect.DeepEqual(got.Remove, want) {
		t.Errorf("PlanDisable removes %v, want %v", got.Remove, want)
	}
}

// TestWaitWaypoint: an available Deployment is not enough; the wait ends
// when istiod has programmed the Gateway, and otherwise says so.
func TestWaitWaypoint(t *testing.T) {
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "waypoint"},
		Status: appsv1.DeploymentStatus{AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: "True"}}}}
	gw := func(programmed string) *unstructured.Unstructured {
		u := NewWaypoint("shop", "waypoint")
		u.SetGeneration(1)
		c := map[string]any{"type": "Programmed", "status": programmed, "reason": "Pending", "message": "Waiting for controller"}
		if programmed == "True" {
			c = map[string]any{"type": "Programmed", "status": "True", "reason": "Programmed", "observedGeneration": int64(1)}
		}
		_ = unstructured.SetNestedSlice(u.Object, []any{c}, "status", "conditions")
		return u
	}
	// No Deployment at all: no gateway controller took the Gateway.
	_, err := WaitWaypoint(t.Context(), kubefake.NewClientset(), gatewayClient(gw("Unknown")), "shop", "waypoint", 300*time.Millisecond)
	if want := "waypoint shop/waypoint is not ready: no Deployment waypoint in shop after 300ms: is istiod's gateway controller running? check the Gateway's status conditions: kubectl get gateway waypoint -n shop -o yaml (gateway status: Programmed=Unknown (Pending: Waiting for controller), so no controller has accepted it); the Gateway and the namespace label are in place"; err == nil || err.Error() != want {
		t.Errorf("no deployment: error = %v\nwant %s", err, want)
	}
	for _, tt := range []struct {
		programmed string
		wantErr    string
	}{
		{"True", ""},
		{"Unknown", "waypoint shop/waypoint is not ready: deployment shop/waypoint is available, but istiod has not programmed the Gateway after 300ms (Programmed=Unknown (Pending: Waiting for controller), so no controller has taken it), so ztunnel does not send it traffic; check the Gateway's conditions (kubectl get gateway waypoint -n shop -o yaml) and istiod's log, or wait longer with --timeout (gateway status: Programmed=Unknown (Pending: Waiting for controller), so no controller has accepted it); the Gateway and the namespace label are in place"},
	} {
		dyn := gatewayClient(gw(tt.programmed))
		d, err := WaitWaypoint(t.Context(), kubefake.NewClientset(dep), dyn, "shop", "waypoint", 300*time.Millisecond)
		switch {
		case tt.wantErr == "" && (err != nil || d == nil || d.Name != "waypoint"):
			t.Errorf("Programmed=%s: WaitWaypoint = %v, %v; want the deployment", tt.programmed, d, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("Programmed=%s: error = %v\nwant %s", tt.programmed, err, tt.wantErr)
		}
	}
}
