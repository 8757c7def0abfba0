package inject

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/controlplane"
)

func expr(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func hook(name string, ns, obj []metav1.LabelSelectorRequirement) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name:              name,
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: ns},
		ObjectSelector:    &metav1.LabelSelector{MatchExpressions: obj},
	}
}

// injectorMWC is the injector webhook configuration Istio's chart renders
// for a revision ("" is the default revision) or for a tag of it.
func injectorMWC(revision, tag string) *admissionregistrationv1.MutatingWebhookConfiguration {
	selRev := revision
	if selRev == "" {
		selRev = "default"
	}
	name := "istio-sidecar-injector"
	if revision != "" {
		name += "-" + revision
	}
	lbl := map[string]string{"istio.io/rev": selRev}
	if tag != "" {
		selRev, name = tag, "istio-revision-tag-"+tag
		lbl["istio.io/tag"] = tag
	}
	notFalse := expr(LabelSidecarInject, metav1.LabelSelectorOpNotIn, "false")
	c := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("rev.namespace.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(LabelRev, metav1.LabelSelectorOpIn, selRev), expr(LabelInjection, metav1.LabelSelectorOpDoesNotExist)},
				[]metav1.LabelSelectorRequirement{notFalse}),
			hook("rev.object.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(LabelRev, metav1.LabelSelectorOpDoesNotExist), expr(LabelInjection, metav1.LabelSelectorOpDoesNotExist)},
				[]metav1.LabelSelectorRequirement{notFalse, expr(LabelRev, metav1.LabelSelectorOpIn, selRev)}),
		},
	}
	if (revision == "" && tag == "") || tag == "default" {
		c.Webhooks = append(c.Webhooks,
			hook("namespace.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(LabelInjection, metav1.LabelSelectorOpIn, "enabled")},
				[]metav1.LabelSelectorRequirement{notFalse}),
			hook("object.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(LabelInjection, metav1.LabelSelectorOpDoesNotExist), expr(LabelRev, metav1.LabelSelectorOpDoesNotExist)},
				[]metav1.LabelSelectorRequirement{expr(LabelSidecarInject, metav1.LabelSelectorOpIn, "true"), expr(LabelRev, metav1.LabelSelectorOpDoesNotExist)}))
	}
	return c
}

// injectorCM is the injector ConfigMap with its values and config.
func injectorCM(revision, version, config string) *corev1.ConfigMap {
	name, rev := "istio-sidecar-injector", "default"
	if revision != "" {
		name, rev = name+"-"+revision, revision
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system", Labels: map[string]string{"istio.io/rev": rev}},
		Data: map[string]string{
			"values": `{"revision":"` + revision + `","global":{"tag":"` + version + `"}}`,
			"config": config,
		},
	}
}

// ztunnel is ambient mode's node proxy DaemonSet with ready of desired
// pods, labelled as Istio's ztunnel chart does: app=ztunnel is on the pods
// only.
func ztunnel(ready, desired int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "ztunnel",
		Labels: map[string]string{"app.kubernetes.io/name": "ztunnel", "app.kubernetes.io/part-of": "istio"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ztunnel"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ztunnel", "sidecar.istio.io/inject": "false"}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: desired, NumberReady: ready}}
}

// kubeProxy is a DaemonSet that is not ztunnel.
func kubeProxy() *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-proxy", Labels: map[string]string{"k8s-app": "kube-proxy"}},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"k8s-app": "kube-proxy"}}}}}
}

func inventory(t *testing.T, objs ...runtime.Object) controlplane.Inventory {
	t.Helper()
	inv, err := controlplane.Discover(context.Background(), kubefake.NewClientset(objs...))
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func deployment(ns, name string, replicas int32, tmplLabels, tmplAnnotations map[string]string) *appsv1.Deployment {
	l := map[string]string{"app": name}
	for k, v := range tmplLabels {
		l[k] = v
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: l, Annotations: tmplAnnotations},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
			},
		},
	}
}

// pod is a pod of deployment d (owned through ReplicaSet NAME-abc12), with
// a sidecar of the given revision and version when rev is not "".
func pod(d *appsv1.Deployment, i int, rev, version string) *corev1.Pod {
	l := map[string]string{appsv1.DefaultDeploymentUniqueLabelKey: "abc12"}
	for k, v := range d.Spec.Template.Labels {
		l[k] = v
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: d.Namespace, Name: d.Name + "-abc12-" + string(rune('a'+i)), Labels: l,
			Annotations: map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: d.Name + "-abc12",
				Controller: ptr(true)}},
		},
		Spec: *d.Spec.Template.Spec.DeepCopy(),
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if rev != "" {
		p.Labels[LabelRev] = rev
		p.Annotations[AnnotationSidecarStatus] = `{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"` + rev + `"}`
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ProxyContainer, Image: "docker.io/istio/proxyv2:" + version})
	}
	return p
}

func ptr[T any](v T) *T { return &v }
