package inject

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/traffic"
)

// Waypoints are Gateway API Gateways of Istio's class istio-waypoint, as
// `istioctl waypoint apply` writes them; istiod's gateway controller then
// deploys a Deployment and a Service of the Gateway's name.
const (
	LabelUseWaypoint    = mesh.LabelUseWaypoint
	LabelWaypointFor    = "istio.io/waypoint-for"
	WaypointClass       = mesh.WaypointClass
	DefaultWaypointName = "waypoint"
	// LabelGatewayName is the label istiod puts on the pods it deploys
	// for a Gateway.
	LabelGatewayName = mesh.LabelGatewayName
	// AnnotationCreatedBy marks a waypoint Gateway that enable-injection
	// created, so disable-injection deletes only those.
	AnnotationCreatedBy = "inject.kubectl-mesh.io/created-by"
	createdBy           = "kubectl-mesh enable-injection"
)

// ValidateWaypointName checks a --waypoint value without the cluster.
func ValidateWaypointName(name string) error {
	if name == "none" {
		return errors.New(`--waypoint "none" is reserved by Istio (istio.io/use-waypoint=none opts out of a waypoint); choose another name`)
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("--waypoint %q is not a valid name: %s", name, errs[0])
	}
	return nil
}

// NewWaypoint is the waypoint Gateway for namespace ns: one HBONE listener
// on 15008, serving traffic to Services, marked as created by us.
func NewWaypoint(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "Gateway",
		"metadata": map[string]any{
			"name":        name,
			"namespace":   ns,
			"labels":      map[string]any{LabelWaypointFor: "service"},
			"annotations": map[string]any{AnnotationCreatedBy: createdBy},
		},
		"spec": map[string]any{
			"gatewayClassName": WaypointClass,
			"listeners": []any{map[string]any{
				"name": "mesh", "port": int64(15008), "protocol": "HBONE",
			}},
		},
	}}
}

// CreatedByUs says whether enable-injection created the Gateway.
func CreatedByUs(gw *unstructured.Unstructured) bool {
	return gw.GetAnnotations()[AnnotationCreatedBy] == createdBy
}

// WaypointPlan is the waypoint a namespace gets: Gateway is the object to
// create, or the waypoint already there when Create is false.
type WaypointPlan struct {
	Namespace, Name string
	Gateway         *unstructured.Unstructured
	Create          bool
}

// GatewayForbiddenError is a verb on Gateways the user may not use.
type GatewayForbiddenError struct {
	Verb, Namespace, Name string
	// User is who was refused ("" when unknown).
	User string
	Err  error
}

func (e *GatewayForbiddenError) Error() string {
	user := e.User
	if user == "" {
		user = "USER"
	}
	return fmt.Sprintf("cannot %[1]s gateway %[2]s/%[3]s: %[1]s on gateways.gateway.networking.k8s.io in namespace %[2]s is forbidden, so nothing was changed; "+
		"ask an admin of %[2]s to grant get, create and delete on them:\n"+
		"  kubectl create role waypoints -n %[2]s --verb=get,create,delete --resource=gateways.gateway.networking.k8s.io\n"+
		"  kubectl create rolebinding waypoints -n %[2]s --role=waypoints --user=%[4]s\n(%[5]v)",
		e.Verb, e.Namespace, e.Name, user, e.Err)
}

func (e *GatewayForbiddenError) Unwrap() error { return e.Err }

func gatewayErr(verb, ns, name string, err error) error {
	if apierrors.IsForbidden(err) {
		return &GatewayForbiddenError{Verb: verb, Namespace: ns, Name: name, Err: err}
	}
	return fmt.Errorf("%s gateway %s/%s: %w", verb, ns, name, err)
}

// PlanWaypoint reads the Gateway called name in ns: absent, it is to be
// created; present, it must be a waypoint (class istio-waypoint).
func PlanWaypoint(ctx context.Context, dyn dynamic.Interface, ns, name string) (WaypointPlan, error) {
	p := WaypointPlan{Namespace: ns, Name: name}
	gw, err := dyn.Resource(traffic.Gateways).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		p.Gateway, p.Create = NewWaypoint(ns, name), true
		return p, nil
	case err != nil:
		return p, gatewayErr("get", ns, name, err)
	}
	if class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName"); class != WaypointClass {
		return p, fmt.Errorf("gateway %s/%s exists with gatewayClassName %q, not %s, so it is no waypoint; choose another name with --waypoint NAME", ns, name, class, WaypointClass)
	}
	p.Gateway = gw
	return p, nil
}

// CreateWaypoint creates the planned Gateway (server-side dry run if asked).
func CreateWaypoint(ctx context.Context, dyn dynamic.Interface, p WaypointPlan, dryRun bool) (*unstructured.Unstructured, error) {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	gw, err := dyn.Resource(traffic.Gateways).Namespace(p.Namespace).Create(ctx, p.Gateway, opts)
	if err != nil {
		return nil, gatewayErr("create", p.Namespace, p.Name, err)
	}
	return gw, nil
}

// DeleteWaypoint deletes a Gateway (server-side dry run if asked).
func DeleteWaypoint(ctx context.Context, dyn dynamic.Interface, ns, name string, dryRun bool) error {
	opts := metav1.DeleteOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	err := dyn.Resource(traffic.Gateways).Namespace(ns).Delete(ctx, name, opts)
	if err != nil && !apierrors.IsNotFound(err) {
		return gatewayErr("delete", ns, name, err)
	}
	return nil
}

// WaypointRemoval is what disable-injection does with the waypoint a
// namespace uses: delete it when we created it, keep it otherwise.
type WaypointRemoval struct {
	Delete *unstructured.Unstructured
	Notes  []string
}

// PlanWaypointRemoval looks at the waypoint named by the namespace's
// istio.io/use-waypoint label.
func PlanWaypointRemoval(ctx context.Context, dyn dynamic.Interface, ns string, nsLabels map[string]string) (WaypointRemoval, error) {
	var r WaypointRemoval
	name, ok := nsLabels[LabelUseWaypoint]
	if !ok || name == "" || name == "none" {
		return r, nil
	}
	gw, err := dyn.Resource(traffic.Gateways).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return r, nil
	case apierrors.IsForbidden(err):
		r.Notes = append(r.Notes, fmt.Sprintf("kept gateway %s/%s if it exists: reading it is forbidden; delete it yourself if kubectl mesh created it", ns, name))
		return r, nil
	case err != nil:
		return r, gatewayErr("get", ns, name, err)
	}
	if !CreatedByUs(gw) {
		r.Notes = append(r.Notes, fmt.Sprintf("kept gateway %s/%s: kubectl mesh did not create it (no %s annotation); delete it yourself when nothing uses it", ns, name, AnnotationCreatedBy))
		return r, nil
	}
	r.Delete = gw
	return r, nil
}

// WaypointNotReadyError says which part of a waypoint is missing after
// the wait.
type WaypointNotReadyError struct {
	Namespace, Name string
	Timeout         time.Duration
	// Deployment is nil when istiod never created it.
	Deployment *appsv1.Deployment
	// Unprogrammed is set when the Deployment became available but istiod
	// did not program the Gateway: why not, as mesh.WaypointProgrammed says.
	Unprogrammed string
	// Conditions are the Gateway's status conditions, as text.
	Conditions string
}

func (e *WaypointNotReadyError) Error() string {
	var what string
	switch {
	case e.Unprogrammed != "":
		what = fmt.Sprintf("deployment %s/%s is available, but istiod has not programmed the Gateway after %s (%s), so ztunnel does not send it traffic; "+
			"check the Gateway's conditions (kubectl get gateway %s -n %s -o yaml) and istiod's log, or wait longer with --timeout",
			e.Namespace, e.Deployment.Name, e.Timeout, e.Unprogrammed, e.Name, e.Namespace)
	case e.Deployment == nil:
		what = fmt.Sprintf("no Deployment %s in %s after %s: is istiod's gateway controller running? check the Gateway's status conditions: kubectl get gateway %[1]s -n %[2]s -o yaml",
			e.Name, e.Namespace, e.Timeout)
	default:
		d := e.Deployment
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		what = fmt.Sprintf("deployment %s/%s has %d of %d replicas available after %s; check its pods: kubectl -n %s get pods -l %s=%s",
			d.Namespace, d.Name, d.Status.AvailableReplicas, want, e.Timeout, d.Namespace, LabelGatewayName, e.Name)
	}
	return fmt.Sprintf("waypoint %s/%s is not ready: %s (gateway status: %s); the Gateway and the namespace label are in place",
		e.Namespace, e.Name, what, e.Conditions)
}

// GatewayConditions renders the Accepted and Programmed conditions (and
// any others) of a Gateway's status.
func GatewayConditions(gw *unstructured.Unstructured) string {
	if gw == nil {
		return "gateway not found"
	}
	conds, _, _ := unstructured.NestedSlice(gw.Object, "status", "conditions")
	var parts []string
	pending := true
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["reason"] != "Pending" {
			pending = false
		}
		s := fmt.Sprintf("%v=%v", m["type"], m["status"])
		if r, _ := m["reason"].(string); r != "" {
			s += " (" + r
			if msg, _ := m["message"].(string); msg != "" {
				s += ": " + msg
			}
			s += ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "no conditions, so no controller has accepted it"
	}
	if pending {
		// The Gateway CRD's default status: no controller wrote one.
		parts = append(parts, "so no controller has accepted it")
	}
	return strings.Join(parts, ", ")
}

func available(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			return c.Status == "True" && d.Status.AvailableReplicas > 0
		}
	}
	return false
}

// WaitWaypoint watches for the waypoint's Deployment (named like the
// Gateway) to exist and be available, for at most timeout.
func WaitWaypoint(ctx context.Context, kube kubernetes.Interface, dyn dynamic.Interface, ns, name string, timeout time.Duration) (*appsv1.Deployment, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	deps := kube.AppsV1().Deployments(ns)
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return deps.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return deps.Watch(ctx, o)
		},
	}, kube)
	var last *appsv1.Deployment
	_, err := watchtools.UntilWithSync(wctx, lw, &appsv1.Deployment{}, nil, func(ev watch.Event) (bool, error) {
		d, ok := ev.Object.(*appsv1.Deployment)
		if !ok || d.Name != name {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			last = nil
			return false, nil
		}
		last = d
		return available(d), nil
	})
	if err == nil {
		// Available is not enough: ztunnels route to a waypoint once istiod
		// has programmed its Gateway (given it an address), for its spec.
		why := "the Gateway could not be read before the timeout"
		var gw *unstructured.Unstructured // the last one read
		perr := wait.PollUntilContextCancel(wctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			got, gerr := dyn.Resource(traffic.Gateways).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case gerr != nil && ctx.Err() != nil:
				return false, nil // the deadline, reported below
			case gerr != nil:
				return false, gatewayErr("get", ns, name, gerr)
			}
			gw = got
			var ok bool
			ok, why = mesh.WaypointProgrammed(gw)
			return ok, nil
		})
		switch {
		case perr == nil:
			return last, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case !wait.Interrupted(perr):
			return nil, perr
		}
		return nil, &WaypointNotReadyError{Namespace: ns, Name: name, Timeout: timeout, Deployment: last, Unprogrammed: why, Conditions: GatewayConditions(gw)}
	}
	if apierrors.IsForbidden(err) {
		return nil, mesh.Forbidden("watch", "deployments", " in namespace "+ns, err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !wait.Interrupted(err) && !errors.Is(err, watchtools.ErrWatchClosed) {
		return nil, fmt.Errorf("waiting for deployment %s/%s: %w", ns, name, err)
	}
	gw, gerr := dyn.Resource(traffic.Gateways).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	conds := GatewayConditions(gw)
	if gerr != nil {
		conds = fmt.Sprintf("could not read the gateway: %v", gerr)
	}
	return nil, &WaypointNotReadyError{Namespace: ns, Name: name, Timeout: timeout, Deployment: last, Conditions: conds}
}
