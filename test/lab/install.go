package lab

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

const fieldManager = "kubectl-mesh-lab"

// applier server-side-applies unstructured objects, resolving kinds through
// discovery (reset after CRDs are installed).
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(kube kubernetes.Interface, dyn dynamic.Interface) *applier {
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(kube.Discovery()))}
}

func (a *applier) apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	var errs []error
	for _, obj := range objs {
		if err := a.applyOne(ctx, obj); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyParallel applies independent objects (CRDs) concurrently: the API
// server's CRD handling is the slowest part of bring-up when done one by one.
func (a *applier) applyParallel(ctx context.Context, objs []*unstructured.Unstructured) error {
	errs := make([]error, len(objs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, obj := range objs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = a.applyOne(ctx, obj)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (a *applier) applyOne(ctx context.Context, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := obj.GetNamespace()
		if ns == "" {
			ns = "default"
			obj.SetNamespace(ns)
		}
		ri = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	data, err := runtime.Encode(unstructured.UnstructuredJSONScheme, obj)
	if err != nil {
		return err
	}
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: fieldManager, Force: ptr(true)})
	if err != nil {
		return fmt.Errorf("applying %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// decodeYAML splits a multi-document YAML stream into objects, skipping
// empty documents.
func decodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := map[string]any{}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

func decodeFiles(paths ...string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		objs, err := decodeYAML(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// renderChart renders a local chart directory with helm's Go packages,
// offline, and returns its objects in a stable order.
func renderChart(dir, release, namespace string, values map[string]any) ([]*unstructured.Unstructured, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("loading chart %s: %w", dir, err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: KubeVersion, Major: "1", Minor: "35"}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering chart %s: %w", ch.Name(), err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, name := range names {
		objs, err := decodeYAML([]byte(files[name]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// keepKinds filters objects to the given kinds.
func keepKinds(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if want[o.GetKind()] {
			out = append(out, o)
		}
	}
	return out
}

// istioManifests renders Istio's base chart (CRDs, default validator) and
// istiod's chart (mesh ConfigMaps, injector and validation webhooks, RBAC)
// for an istiod that runs out of cluster on 127.0.0.1:15017. istiod's own
// Deployment and Service are not applied: the lab runs istiod as a process.
func istioManifests(istioDir string, caPEM []byte) (crds, rest []*unstructured.Unstructured, err error) {
	caBundle := base64.StdEncoding.EncodeToString(caPEM)
	base, err := renderChart(filepath.Join(istioDir, "manifests/charts/base"), "istio-base", "istio-system", map[string]any{
		"base": map[string]any{
			"validationURL":      "https://127.0.0.1:15017/validate",
			"validationCABundle": caBundle,
		},
	})
	if err != nil {
		return nil, nil, err
	}
	istiod, err := renderIstiod(istioDir, "", IstiodWebhook, caPEM)
	if err != nil {
		return nil, nil, err
	}
	crds = keepKinds(base, "CustomResourceDefinition")
	rest = keepKinds(append(base, istiod...),
		"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap",
		"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
	return crds, rest, nil
}

// renderIstiod renders istiod's chart for one revision ("" is the default
// one) whose webhooks call an istiod process on 127.0.0.1:webhookPort.
func renderIstiod(istioDir, revision string, webhookPort int, caPEM []byte) ([]*unstructured.Unstructured, error) {
	caBundle := base64.StdEncoding.EncodeToString(caPEM)
	values := map[string]any{
		"global": map[string]any{
			"hub":            "docker.io/istio",
			"tag":            IstioVersion,
			"istioNamespace": "istio-system",
		},
		"istiodRemote": map[string]any{
			"injectionURL":      fmt.Sprintf("https://127.0.0.1:%d/inject", webhookPort),
			"injectionCABundle": caBundle,
		},
		"base": map[string]any{
			"validationURL":      fmt.Sprintf("https://127.0.0.1:%d/validate", webhookPort),
			"validationCABundle": caBundle,
		},
	}
	release := "istiod"
	if revision != "" {
		// Set only for a revision, so the default's rendering (down to its
		// values ConfigMap) is what installing without one gives.
		values["revision"] = revision
		release += "-" + revision
	}
	return renderChart(filepath.Join(istioDir, "manifests/charts/istio-control/istio-discovery"), release, "istio-system", values)
}

// waitCRDsEstablished waits until every named CRD serves.
func waitCRDsEstablished(ctx context.Context, dyn dynamic.Interface, names []string) error {
	gvr := apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			u, err := dyn.Resource(gvr).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			ok := false
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					ok = true
				}
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	})
}
