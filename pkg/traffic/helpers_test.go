package traffic

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

// listKinds lets the fake dynamic client LIST what the engine lists.
var listKinds = map[schema.GroupVersionResource]string{
	VirtualServices:  "VirtualServiceList",
	DestinationRules: "DestinationRuleList",
	IstioGateways:    "GatewayList",
	HTTPRoutes:       "HTTPRouteList",
	Gateways:         "GatewayList",
	Services:         "ServiceList",
}

// apiResources is what discovery reports when Istio and Gateway API are installed.
func apiResources() []*metav1.APIResourceList {
	return []*metav1.APIResourceList{
		{GroupVersion: "networking.istio.io/v1", APIResources: []metav1.APIResource{
			{Name: "virtualservices", Kind: "VirtualService", Namespaced: true},
			{Name: "destinationrules", Kind: "DestinationRule", Namespaced: true},
			{Name: "gateways", Kind: "Gateway", Namespaced: true},
		}},
		{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: []metav1.APIResource{
			{Name: "httproutes", Kind: "HTTPRoute", Namespaced: true},
			{Name: "gateways", Kind: "Gateway", Namespaced: true},
		}},
	}
}

type fakes struct {
	Clients
	kube *kubefake.Clientset
	dyn  *dynamicfake.FakeDynamicClient
}

func newFakes(kubeObjs []runtime.Object, dynObjs ...runtime.Object) fakes {
	kube := kubefake.NewClientset(kubeObjs...)
	kube.Resources = apiResources()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, dynObjs...)
	// The fake's tracker stores dry-run writes; the API server does not.
	dyn.PrependReactor("create", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		c := a.(clienttesting.CreateActionImpl)
		return len(c.CreateOptions.DryRun) > 0, c.Object, nil
	})
	dyn.PrependReactor("update", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		u := a.(clienttesting.UpdateActionImpl)
		return len(u.UpdateOptions.DryRun) > 0, u.Object, nil
	})
	dyn.PrependReactor("delete", "*", func(a clienttesting.Action) (bool, runtime.Object, error) {
		d := a.(clienttesting.DeleteActionImpl)
		return len(d.DeleteOptions.DryRun) > 0, nil, nil
	})
	return fakes{Clients: Clients{Kube: kube, Dynamic: dyn, Discovery: kube.Discovery()}, kube: kube, dyn: dyn}
}

func service(ns, name string, selector map[string]string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: selector}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http", Port: p})
	}
	return s
}

func pod(ns, name string, lbls map[string]string, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

// shopBackend is service shop/backend with two ready v1 pods and one v2 pod
// that is not ready yet.
func shopBackend() []runtime.Object {
	return []runtime.Object{
		service("shop", "backend", map[string]string{"app": "backend"}, 8080),
		pod("shop", "backend-v1-a", map[string]string{"app": "backend", "version": "v1"}, true),
		pod("shop", "backend-v1-b", map[string]string{"app": "backend", "version": "v1"}, true),
		pod("shop", "backend-v2-a", map[string]string{"app": "backend", "version": "v2"}, false),
		pod("shop", "other", map[string]string{"app": "other", "version": "v9"}, true),
	}
}

func readYAML(t *testing.T, path string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	// UnmarshalJSON keeps integers as int64, as the API server's objects have them.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

func toYAML(t *testing.T, v interface{}) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
