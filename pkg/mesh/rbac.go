package mesh

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Forbidden wraps the error of a request to verb resource (where is "" or,
// e.g., " in namespace shop"): an RBAC refusal (anywhere in err's chain)
// names the permission to ask for; other errors get the same context
// without the advice. It is the one wording of RBAC advice for every engine.
func Forbidden(verb, resource, where string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("cannot %s %s%s: forbidden; ask a cluster admin to grant %q on %s: %w", verb, resource, where, verb, resource, err)
	}
	return fmt.Errorf("%s %s%s: %w", verb, resource, where, err)
}
