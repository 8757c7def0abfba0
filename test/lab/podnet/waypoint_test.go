package podnet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestHTTPRouteMatching(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "backend"}}
	route := func(parent map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"parentRefs": []any{parent}}}}
	}
	for _, tt := range []struct {
		parent map[string]any
		want   bool
	}{
		{map[string]any{"group": "", "kind": "Service", "name": "backend"}, true},
		{map[string]any{"group": "core", "kind": "Service", "name": "backend", "namespace": "shop"}, true},
		{map[string]any{"kind": "Service", "name": "backend", "namespace": "other"}, false},
		{map[string]any{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "backend"}, false},
		{map[string]any{"kind": "Service", "name": "frontend"}, false},
	} {
		if got := parentIsService(route(tt.parent), svc); got != tt.want {
			t.Errorf("parentIsService(%v) = %v, want %v", tt.parent, got, tt.want)
		}
	}
	match := func(typ, val string) map[string]any {
		return map[string]any{"matches": []any{map[string]any{"path": map[string]any{"type": typ, "value": val}}}}
	}
	for _, tt := range []struct {
		rule map[string]any
		path string
		want bool
	}{
		{map[string]any{}, "/anything", true},
		{match("PathPrefix", "/"), "/greetings", true},
		{match("PathPrefix", "/api"), "/api/v1", true},
		{match("PathPrefix", "/api"), "/apiary", false},
		{match("PathPrefix", "/api/"), "/api", true},
		{match("Exact", "/greetings"), "/greetings", true},
		{match("Exact", "/greetings"), "/greetings/x", false},
	} {
		if got := httpRouteMatches(tt.rule, tt.path); got != tt.want {
			t.Errorf("httpRouteMatches(%v, %q) = %v, want %v", tt.rule, tt.path, got, tt.want)
		}
	}
}
