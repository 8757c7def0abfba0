package inject

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrNoInjector means no Istio sidecar injector webhook is installed.
var ErrNoInjector = errors.New("no Istio sidecar injector found (no MutatingWebhookConfiguration with a *.sidecar-injector.istio.io webhook); install Istio first")

// ErrNoControlPlane means no Istio control plane at all was found.
var ErrNoControlPlane = errors.New("no Istio control plane found (no sidecar injector, istiod Deployment or istio-sidecar-injector ConfigMap); install Istio first")

// ErrNoZtunnel means ambient mode was asked for where nothing would
// capture the traffic.
var ErrNoZtunnel = errors.New("ambient mode needs ztunnel, and no ztunnel DaemonSet (label app=ztunnel) was found; install Istio with the ambient profile first (istioctl install --set profile=ambient), or drop --ambient to use sidecars")

// UnknownRevisionError is --revision naming nothing installed.
type UnknownRevisionError struct {
	Revision string
	Found    []string
}

func (e *UnknownRevisionError) Error() string {
	return fmt.Sprintf("revision %q not found; revisions and tags installed: %s (pass one of them to --revision)", e.Revision, strings.Join(e.Found, ", "))
}

// LabelChange is a change to a namespace's labels, with the reasons for
// changes the user did not literally ask for.
type LabelChange struct {
	Set    map[string]string
	Remove []string
	Notes  []string
}

// Empty says whether the change does nothing.
func (c LabelChange) Empty() bool { return len(c.Set) == 0 && len(c.Remove) == 0 }

// Apply returns labels with the change applied (a copy).
func (c LabelChange) Apply(l map[string]string) map[string]string {
	out := make(map[string]string, len(l)+len(c.Set))
	for k, v := range l {
		out[k] = v
	}
	for _, k := range c.Remove {
		delete(out, k)
	}
	for k, v := range c.Set {
		out[k] = v
	}
	return out
}

// MergePatch is the JSON merge patch for the change (null removes a label).
func (c LabelChange) MergePatch() map[string]any {
	l := map[string]any{}
	for _, k := range c.Remove {
		l[k] = nil
	}
	for k, v := range c.Set {
		l[k] = v
	}
	return map[string]any{"metadata": map[string]any{"labels": l}}
}

func (c *LabelChange) remove(k, why string) {
	c.Remove = append(c.Remove, k)
	c.Notes = append(c.Notes, why)
}

// EnableRequest is what enable-injection asks for.
type EnableRequest struct {
	// Revision is a revision or tag name; "" picks the default.
	Revision string
	Ambient  bool
	// Waypoint names the waypoint the namespace uses (ambient only; "" for
	// none): it is labelled istio.io/use-waypoint=Waypoint.
	Waypoint string
}

// ErrWaypointNeedsAmbient is --waypoint without --ambient.
var ErrWaypointNeedsAmbient = errors.New("--waypoint needs --ambient: waypoints serve ambient namespaces, while sidecars route traffic themselves; add --ambient")

// PlanEnable works out the labels that make new pods in namespace ns get
// the requested data plane, fixing labels that would override it.
func (r *Rules) PlanEnable(ns string, nsLabels map[string]string, req EnableRequest) (LabelChange, error) {
	c := LabelChange{Set: map[string]string{}}
	has := func(k string) (string, bool) { v, ok := nsLabels[k]; return v, ok }
	if req.Waypoint != "" && !req.Ambient {
		return c, ErrWaypointNeedsAmbient
	}
	if req.Ambient {
		if len(r.inv.ControlPlanes) == 0 && len(r.inv.Unchecked) == 0 {
			return c, ErrNoControlPlane
		}
		if req.Revision != "" {
			return c, errors.New("--ambient and --revision cannot be combined: ambient namespaces are not injected")
		}
		switch {
		case r.inv.ZtunnelUnknown:
			c.Notes = append(c.Notes, "could not check for ztunnel (listing daemonsets is forbidden); ambient traffic is captured only where it runs")
		case len(r.inv.Ztunnels) == 0:
			return c, ErrNoZtunnel
		}
		for _, z := range r.inv.Ztunnels {
			if z.Ready == 0 {
				c.Notes = append(c.Notes, fmt.Sprintf("ztunnel %s/%s has %d of %d pods ready; ambient traffic is not captured until it has (kubectl -n %s get pods -l app=ztunnel)",
					z.Namespace, z.Name, z.Ready, z.Desired, z.Namespace))
			}
		}
		if v, ok := has(LabelInjection); ok && v == "enabled" {
			c.remove(LabelInjection, fmt.Sprintf("removing %s=%s: pods with a sidecar are not captured by ambient", LabelInjection, v))
		}
		if v, ok := has(LabelRev); ok {
			c.remove(LabelRev, fmt.Sprintf("removing %s=%s: it would still inject sidecars, which ambient does not capture", LabelRev, v))
		}
		if nsLabels[LabelDataplaneMode] != DataplaneAmbient {
			c.Set[LabelDataplaneMode] = DataplaneAmbient
		}
		if v, ok := has(LabelUseWaypoint); req.Waypoint != "" && v != req.Waypoint {
			c.Set[LabelUseWaypoint] = req.Waypoint
			if ok {
				c.Notes = append(c.Notes, fmt.Sprintf("replacing %s=%s: the namespace's Services now use waypoint %s", LabelUseWaypoint, v, req.Waypoint))
			}
		}
		return c, nil
	}
	if !r.inv.HasInjector() && !r.inv.WebhooksUnknown {
		return c, ErrNoInjector
	}
	if v, ok := has(LabelDataplaneMode); ok && v == DataplaneAmbient {
		c.remove(LabelDataplaneMode, fmt.Sprintf("removing %s=%s: sidecar pods are not captured by ambient", LabelDataplaneMode, v))
	}
	rev := req.Revision
	if rev == "" {
		// The default labels work when some webhook injects a plain pod of a
		// namespace labelled istio-injection=enabled (the default revision or
		// a "default" tag).
		probe := map[string]string{LabelInjection: "enabled"}
		if !r.Evaluate(ns, probe, metav1.ObjectMeta{}, nil).Inject {
			found := r.Revisions()
			if len(found) != 1 {
				return c, fmt.Errorf("no default revision is installed; choose one with --revision: %s", strings.Join(found, ", "))
			}
			rev = found[0]
			c.Notes = append(c.Notes, fmt.Sprintf("no default revision is installed; using revision %s", rev))
		}
	} else if _, ok := r.inv.Find(rev); !ok {
		if !r.inv.WebhooksUnknown {
			return c, &UnknownRevisionError{Revision: rev, Found: r.Revisions()}
		}
		c.Notes = append(c.Notes, fmt.Sprintf("could not check that revision %s is installed; pods get no sidecar if it is not", rev))
	}
	if rev == "" {
		if v, ok := has(LabelRev); ok {
			c.remove(LabelRev, fmt.Sprintf("removing %s=%s: %s=enabled takes precedence over it", LabelRev, v, LabelInjection))
		}
		if nsLabels[LabelInjection] != "enabled" {
			c.Set[LabelInjection] = "enabled"
		}
		return c, nil
	}
	if v, ok := has(LabelInjection); ok {
		c.remove(LabelInjection, fmt.Sprintf("removing %s=%s: it takes precedence over %s", LabelInjection, v, LabelRev))
	}
	if nsLabels[LabelRev] != rev {
		c.Set[LabelRev] = rev
	}
	return c, nil
}

// PlanDisable removes what enrols the namespace in the mesh (sidecar and
// ambient labels, and the waypoint it uses). When the injector injects unlabelled namespaces too
// (enableNamespacesByDefault), it sets istio-injection=disabled instead.
func (r *Rules) PlanDisable(ns string, nsLabels map[string]string) LabelChange {
	c := LabelChange{Set: map[string]string{}}
	if v := nsLabels[LabelInjection]; v == "enabled" {
		c.Remove = append(c.Remove, LabelInjection)
	}
	if _, ok := nsLabels[LabelRev]; ok {
		c.Remove = append(c.Remove, LabelRev)
	}
	if nsLabels[LabelDataplaneMode] == DataplaneAmbient {
		c.Remove = append(c.Remove, LabelDataplaneMode)
	}
	if _, ok := nsLabels[LabelUseWaypoint]; ok {
		c.Remove = append(c.Remove, LabelUseWaypoint)
	}
	after := c.Apply(nsLabels)
	if r.Evaluate(ns, after, metav1.ObjectMeta{}, nil).Inject {
		c.Remove = without(c.Remove, LabelInjection)
		c.Set[LabelInjection] = "disabled"
		c.Notes = append(c.Notes, fmt.Sprintf("setting %s=disabled: the injector also injects namespaces without labels", LabelInjection))
	}
	sort.Strings(c.Remove)
	return c
}

// Mode describes a namespace's data-plane enrolment from its labels, and
// any labels that contradict each other.
func (r *Rules) Mode(ns string, nsLabels map[string]string) (mode string, conflicts []string) {
	inj, hasInj := nsLabels[LabelInjection]
	rev, hasRev := nsLabels[LabelRev]
	ambient := nsLabels[LabelDataplaneMode] == DataplaneAmbient
	switch {
	case inj == "enabled":
		mode = "sidecar"
		if hasRev {
			conflicts = append(conflicts, fmt.Sprintf("%s=enabled overrides %s=%s", LabelInjection, LabelRev, rev))
		}
	case hasRev && hasInj:
		mode = "off"
		conflicts = append(conflicts, fmt.Sprintf("%s=%s overrides %s=%s", LabelInjection, inj, LabelRev, rev))
	case hasRev:
		mode = "revision " + rev
	case ambient:
		mode = "ambient"
		if len(r.inv.Ztunnels) == 0 && !r.inv.ZtunnelUnknown {
			mode = "ambient (no ztunnel)"
		}
	default:
		mode = "off"
	}
	if ambient && (mode == "sidecar" || strings.HasPrefix(mode, "revision ")) {
		conflicts = append(conflicts, fmt.Sprintf("%s=%s with sidecar injection: sidecar pods bypass ambient", LabelDataplaneMode, DataplaneAmbient))
	}
	if mode == "off" && !ambient {
		if d := r.Evaluate(ns, nsLabels, metav1.ObjectMeta{}, nil); d.Inject {
			mode = "sidecar (injector default)"
		}
	} else if mode != "off" && !strings.HasPrefix(mode, "ambient") {
		if d := r.Evaluate(ns, nsLabels, metav1.ObjectMeta{}, nil); !d.Inject {
			mode += " (" + d.Reason + ")"
		}
	}
	return mode, conflicts
}

func without(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// LabelForbiddenError is a namespace whose labels the user may not change.
// A Namespace is a cluster-scoped object: the admin role bound inside the
// namespace does not reach it, so a namespace admin cannot label it.
type LabelForbiddenError struct {
	Namespace string
	// User is who was refused ("" when unknown).
	User string
	Err  error
}

func (e *LabelForbiddenError) Error() string {
	user := e.User
	if user == "" {
		user = "USER"
	}
	role := "label-namespace-" + e.Namespace
	return fmt.Sprintf("cannot label namespace %s: patching the Namespace object is forbidden, so nothing was changed. "+
		"A Namespace is cluster-scoped, so the admin role bound inside %[1]s does not cover it; "+
		"ask a cluster admin to grant \"patch\" on namespaces/%[1]s:\n"+
		"  kubectl create clusterrole %[2]s --verb=get,patch --resource=namespaces --resource-name=%[1]s\n"+
		"  kubectl create clusterrolebinding %[2]s --clusterrole=%[2]s --user=%[3]s\n"+
		"(%[4]v)",
		e.Namespace, role, user, e.Err)
}

func (e *LabelForbiddenError) Unwrap() error { return e.Err }
