package traffic

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// GatewayPort is the port the ingress gateway listens on for exposed
// services: plain HTTP on the gateway Service's port 80.
const GatewayPort = 80

// DefaultGatewaySelector selects Istio's default ingress gateway.
var DefaultGatewaySelector = map[string]string{"istio": "ingressgateway"}

// ExposeConfig is one `kubectl mesh expose` run.
type ExposeConfig struct {
	Namespace string
	Service   string
	// Port is the Service port to send traffic to; 0 means its only port.
	Port int32
	// Host is the host name clients use; "*" accepts any.
	Host       string
	PathPrefix string
	// GatewaySelector picks the ingress gateway pods (Istio API only).
	GatewaySelector map[string]string
	API             API
	DryRun          DryRun
}

// ExposeResult is what Expose did (or would do).
type ExposeResult struct {
	Changes []Change
	Objects []*unstructured.Unstructured
	// URL is where the service can be reached, "" when not known yet.
	URL   string
	Notes []string
}

// GatewayName is the name of the Gateway expose creates for svc.
func GatewayName(svc string) string { return svc + "-gateway" }

// IngressRouteName is the name of the route expose creates for svc.
func IngressRouteName(svc string) string { return svc + "-ingress" }

// Expose makes a Service reachable through an ingress gateway. Existing
// objects are only added to (a gateway, a host, a parentRef), never
// rewritten, and writes retry on conflict from fresh reads.
func Expose(ctx context.Context, c Clients, cfg ExposeConfig) (*ExposeResult, error) {
	if cfg.Host == "" {
		cfg.Host = "*"
	}
	if cfg.PathPrefix == "" {
		cfg.PathPrefix = "/"
	}
	if cfg.API == "" {
		cfg.API = APIIstio
	}
	if cfg.DryRun == "" {
		cfg.DryRun = DryRunNone
	}
	if len(cfg.GatewaySelector) == 0 {
		cfg.GatewaySelector = DefaultGatewaySelector
	}
	if err := ValidateHost(cfg.Host); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.PathPrefix, "/") {
		return nil, fmt.Errorf("invalid --path-prefix %q: it must start with /", cfg.PathPrefix)
	}
	need := []schema.GroupVersionResource{IstioGateways, VirtualServices}
	if cfg.API == APIGateway {
		need = []schema.GroupVersionResource{Gateways, HTTPRoutes}
	}
	for _, gvr := range need {
		if err := RequireAPI(c.Discovery, gvr); err != nil {
			return nil, err
		}
	}
	svc, err := c.Kube.CoreV1().Services(cfg.Namespace).Get(ctx, cfg.Service, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("service %q not found in namespace %q; list services with: kubectl get services -n %s", cfg.Service, cfg.Namespace, cfg.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("getting service %s/%s: %w", cfg.Namespace, cfg.Service, err)
	}
	port, err := servicePort(svc, cfg.Port)
	if err != nil {
		return nil, err
	}

	res := &ExposeResult{}
	urlPath := cfg.PathPrefix
	w := writer{dyn: c.Dynamic, dryRun: cfg.DryRun}
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err = retry.OnError(retry.DefaultRetry, retriable, func() error {
		var plan []planned
		var notes []string
		var err error
		if cfg.API == APIGateway {
			plan, notes, err = planExposeGateway(ctx, c, cfg, port)
		} else {
			plan, notes, err = planExposeIstio(ctx, c, cfg, port)
		}
		if err != nil {
			return err
		}
		// The path only applies when expose writes the route itself.
		urlPath = cfg.PathPrefix
		if len(plan) == 2 && !plan[1].create {
			urlPath = "/"
			if cfg.PathPrefix != "/" {
				notes = append(notes, fmt.Sprintf("--path-prefix %s is not applied: %s %s exists and its routes are kept", cfg.PathPrefix, strings.ToLower(plan[1].obj.GetKind()), plan[1].obj.GetName()))
			}
		}
		objs, changes, err := w.apply(ctx, plan)
		if err != nil {
			return err
		}
		res.Objects, res.Changes, res.Notes = objs, changes, notes
		return nil
	})
	if err != nil {
		return nil, err
	}
	urlCfg := cfg
	urlCfg.PathPrefix = urlPath
	url, hints := ingressURL(ctx, c, urlCfg)
	res.URL = url
	res.Notes = append(res.Notes, hints...)
	return res, nil
}

// ValidateHost checks --host: "*", a DNS name, or a wildcard "*.example.com".
func ValidateHost(h string) error {
	if h == "*" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("invalid --host %q: %s; use a DNS name such as shop.example.com, or * for any host", h, errs[0])
	}
	return nil
}

func servicePort(svc *corev1.Service, want int32) (int32, error) {
	var ports []string
	for _, p := range svc.Spec.Ports {
		if want != 0 && p.Port == want {
			return want, nil
		}
		ports = append(ports, strconv.Itoa(int(p.Port)))
	}
	switch {
	case len(ports) == 0:
		return 0, fmt.Errorf("service %s/%s has no ports to expose", svc.Namespace, svc.Name)
	case want != 0:
		return 0, fmt.Errorf("service %s/%s has no port %d (ports: %s); choose one with --port", svc.Namespace, svc.Name, want, strings.Join(ports, ", "))
	case len(ports) > 1:
		return 0, fmt.Errorf("service %s/%s has several ports (%s); choose one with --port", svc.Namespace, svc.Name, strings.Join(ports, ", "))
	}
	return svc.Spec.Ports[0].Port, nil
}

func getOrNil(ctx context.Context, c Clients, gvr schema.GroupVersionResource, ns, name string) (*unstructured.Unstructured, error) {
	obj, err := c.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, mesh.Forbidden("get", qualifiedResource(gvr), " in namespace "+ns, err)
	}
	return obj, nil
}

// addString appends s to the string list at path unless present.
func addString(obj map[string]interface{}, s string, path ...string) bool {
	list, _, _ := unstructured.NestedStringSlice(obj, path...)
	for _, x := range list {
		if x == s {
			return false
		}
	}
	l, _, _ := unstructured.NestedSlice(obj, path...)
	_ = unstructured.SetNestedSlice(obj, append(l, s), path...)
	return true
}
