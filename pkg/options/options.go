// Package options holds the state every kubectl mesh subcommand shares: the
// kubeconfig flags, the IO streams, a clock and lazily built API clients.
package options

import (
	"fmt"
	"sync"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
	"k8s.io/utils/clock"
)

// Options is created once by the root command and handed to every
// subcommand. Nothing here touches the network until a client is asked for,
// so `--help` and `version --client` stay fast and offline.
type Options struct {
	genericiooptions.IOStreams

	// ConfigFlags are kubectl's own flags (--kubeconfig, --context, -n, --as,
	// --request-timeout, …), bound to the root command's persistent flags.
	ConfigFlags *genericclioptions.ConfigFlags

	// Clock is real in the binary and fake in tests.
	Clock clock.PassiveClock

	// Color is the --color flag: auto, always or never.
	Color string

	once      sync.Once
	clientErr error
	factory   cmdutil.Factory

	kube      kubernetes.Interface
	istio     istioclient.Interface
	dynamic   dynamic.Interface
	discovery discovery.CachedDiscoveryInterface
	config    *rest.Config
}

// New returns Options bound to real clusters through kubeconfig.
func New(streams genericiooptions.IOStreams) *Options {
	flags := genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().WithDiscoveryBurst(300).WithDiscoveryQPS(50.0)
	return &Options{
		IOStreams:   streams,
		ConfigFlags: flags,
		Clock:       clock.RealClock{},
		Color:       "auto",
	}
}

// Clients are the API clients Options hands out. Tests set them with
// SetClients (see options/fake); the binary builds them from kubeconfig.
type Clients struct {
	Factory   cmdutil.Factory
	Config    *rest.Config
	Kube      kubernetes.Interface
	Istio     istioclient.Interface
	Dynamic   dynamic.Interface
	Discovery discovery.CachedDiscoveryInterface
}

// SetClients replaces lazy client construction with the given clients. Nil
// clients fail with a clear error when a command asks for them.
func (o *Options) SetClients(c Clients) {
	o.once.Do(func() {})
	o.factory, o.config, o.kube, o.istio, o.dynamic, o.discovery = c.Factory, c.Config, c.Kube, c.Istio, c.Dynamic, c.Discovery
}

func (o *Options) build() error {
	o.once.Do(func() {
		o.factory = cmdutil.NewFactory(o.ConfigFlags)
		cfg, err := o.factory.ToRESTConfig()
		if err != nil {
			o.clientErr = err
			return
		}
		o.config = cfg
		if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
			o.clientErr = fmt.Errorf("building Kubernetes client: %w", err)
			return
		}
		if o.istio, err = istioclient.NewForConfig(cfg); err != nil {
			o.clientErr = fmt.Errorf("building Istio client: %w", err)
			return
		}
		if o.dynamic, err = dynamic.NewForConfig(cfg); err != nil {
			o.clientErr = fmt.Errorf("building dynamic client: %w", err)
			return
		}
		if o.discovery, err = o.factory.ToDiscoveryClient(); err != nil {
			o.clientErr = fmt.Errorf("building discovery client: %w", err)
			return
		}
	})
	return o.clientErr
}

// Factory is kubectl's factory (resource builder, RESTMapper, printers).
func (o *Options) Factory() (cmdutil.Factory, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.factory == nil {
		return nil, fmt.Errorf("no kubectl factory configured")
	}
	return o.factory, nil
}

// RESTConfig is the client configuration after all kubeconfig flags applied.
func (o *Options) RESTConfig() (*rest.Config, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.config == nil {
		return nil, fmt.Errorf("no REST config configured")
	}
	return rest.CopyConfig(o.config), nil
}

// KubeClient is the typed Kubernetes clientset.
func (o *Options) KubeClient() (kubernetes.Interface, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.kube == nil {
		return nil, fmt.Errorf("no Kubernetes client configured")
	}
	return o.kube, nil
}

// IstioClient is the typed Istio clientset.
func (o *Options) IstioClient() (istioclient.Interface, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.istio == nil {
		return nil, fmt.Errorf("no Istio client configured")
	}
	return o.istio, nil
}

// DynamicClient works with any resource, including Gateway API objects.
func (o *Options) DynamicClient() (dynamic.Interface, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.dynamic == nil {
		return nil, fmt.Errorf("no dynamic client configured")
	}
	return o.dynamic, nil
}

// DiscoveryClient tells which APIs (Istio CRDs, Gateway API) the cluster serves.
func (o *Options) DiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	if err := o.build(); err != nil {
		return nil, err
	}
	if o.discovery == nil {
		return nil, fmt.Errorf("no discovery client configured")
	}
	return o.discovery, nil
}

// Namespace is the namespace from -n or the kubeconfig context, and whether
// it was given explicitly.
func (o *Options) Namespace() (string, bool, error) {
	if o.factory != nil {
		return o.factory.ToRawKubeConfigLoader().Namespace()
	}
	return o.ConfigFlags.ToRawKubeConfigLoader().Namespace()
}
