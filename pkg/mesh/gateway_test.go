package mesh

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestWaypointProgrammed reads Gateway statuses as istiod and the Gateway
// CRD write them.
func TestWaypointProgrammed(t *testing.T) {
	gw := func(generation int64, conds ...map[string]any) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{}}
		u.SetGeneration(generation)
		var list []any
		for _, c := range conds {
			list = append(list, c)
		}
		if list != nil {
			_ = unstructured.SetNestedSlice(u.Object, list, "status", "conditions")
		}
		return u
	}
	cond := func(t, status, reason, msg string, og int64) map[string]any {
		return map[string]any{"type": t, "status": status, "reason": reason, "message": msg, "observedGeneration": og}
	}
	accepted := cond("Accepted", "True", "Accepted", "Resource accepted", 1)
	tests := []struct {
		name    string
		gw      *unstructured.Unstructured
		wantOK  bool
		wantWhy string
	}{
		// What istiod 1.31 wrote in the lab for a waypoint.
		{"programmed", gw(1, accepted, cond("Programmed", "True", "Programmed", "Resource programmed, assigned to service(s) waypoint.wp1.svc.cluster.local:15008", 1)), true, ""},
		{"no status", gw(1), false, "no Programmed condition for its current generation yet"},
		{"accepted only", gw(1, accepted), false, "no Programmed condition for its current generation yet"},
		{"CRD default", gw(1, map[string]any{"type": "Programmed", "status": "Unknown", "reason": "Pending", "message": "Waiting for controller"}), false,
			"Programmed=Unknown (Pending: Waiting for controller), so no controller has taken it"},
		{"stale", gw(3, cond("Programmed", "True", "Programmed", "", 2)), false, "no Programmed condition for its current generation yet"},
		{"refused", gw(2, cond("Programmed", "False", "Invalid", "Unable to assign service", 2)), false, "Programmed=False (Invalid: Unable to assign service)"},
		{"no reason", gw(1, map[string]any{"type": "Programmed", "status": "False"}), false, "Programmed=False"},
	}
	for _, tt := range tests {
		ok, why := WaypointProgrammed(tt.gw)
		if ok != tt.wantOK || why != tt.wantWhy {
			t.Errorf("%s: WaypointProgrammed = %v, %q; want %v, %q", tt.name, ok, why, tt.wantOK, tt.wantWhy)
		}
	}
}
