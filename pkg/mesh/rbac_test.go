package mesh

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestForbidden(t *testing.T) {
	refused := apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "web", errors.New(`User "alice" cannot patch`))
	tests := []struct {
		err       error
		want      string
		forbidden bool
	}{
		{err: refused, forbidden: true,
			want: `cannot patch deployments in namespace shop: forbidden; ask a cluster admin to grant "patch" on deployments: deployments.apps "web" is forbidden: User "alice" cannot patch`},
		{err: fmt.Errorf("wrapped: %w", refused), forbidden: true,
			want: `cannot patch deployments in namespace shop: forbidden; ask a cluster admin to grant "patch" on deployments: wrapped: deployments.apps "web" is forbidden: User "alice" cannot patch`},
		{err: errors.New("connection refused"), want: `patch deployments in namespace shop: connection refused`},
	}
	for _, tt := range tests {
		err := Forbidden("patch", "deployments", " in namespace shop", tt.err)
		if err.Error() != tt.want || !errors.Is(err, tt.err) || apierrors.IsForbidden(err) != tt.forbidden {
			t.Errorf("Forbidden(%v) = %q (forbidden %v), want %q (forbidden %v)", tt.err, err, apierrors.IsForbidden(err), tt.want, tt.forbidden)
		}
	}
}
