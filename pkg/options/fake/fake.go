// Package fake is the test twin of options.Options: fake clientsets, buffers
// for the IO streams and a fake clock. For unit tests of pure logic only;
// behaviour is tested against the lab's real API server.
package fake

import (
	"bytes"
	"time"

	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery/cached/memory"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	testclock "k8s.io/utils/clock/testing"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/options"
)

// Options is options.Options wired to fakes, with its streams' buffers.
type Options struct {
	*options.Options
	In, Out, ErrOut *bytes.Buffer
	Kube            *kubefake.Clientset
	Istio           *istiofake.Clientset
	Dynamic         *dynamicfake.FakeDynamicClient
	Clock           *testclock.FakeClock
}

// Now is the fake clock's start: fixed so output with ages is stable.
var Now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// New returns fake options holding kubeObjects in the Kubernetes clientset and
// istioObjects in the Istio clientset.
func New(kubeObjects []runtime.Object, istioObjects []runtime.Object) *Options {
	in, out, errOut := &bytes.Buffer{}, &bytes.Buffer{}, &bytes.Buffer{}
	kube := kubefake.NewClientset(kubeObjects...)
	ist := istiofake.NewSimpleClientset(istioObjects...)
	dyn := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	clk := testclock.NewFakeClock(Now)
	o := options.New(genericiooptions.IOStreams{In: in, Out: out, ErrOut: errOut})
	o.Clock = clk
	o.Color = "never"
	o.SetClients(options.Clients{
		Kube:      kube,
		Istio:     ist,
		Dynamic:   dyn,
		Discovery: memory.NewMemCacheClient(kube.Discovery()),
	})
	return &Options{Options: o, In: in, Out: out, ErrOut: errOut, Kube: kube, Istio: ist, Dynamic: dyn, Clock: clk}
}
