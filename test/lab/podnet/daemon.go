package podnet

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	istiolisters "istio.io/client-go/pkg/listers/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubectl-mesh/kubectl-mesh/test/istioca"
)

// Apps podnet runs, by the pods' app label.
const (
	AppFrontend = "frontend-app"
	AppBackend  = "backend-app"
	AppGateway  = "istio-ingressgateway"
)

type daemon struct {
	cfg  Config
	node *node
	kube kubernetes.Interface
	dyn  dynamic.Interface
	ca   *istioca.Client

	pods      corelisters.PodLister
	slices    discoverylisters.EndpointSliceLister
	services  corelisters.ServiceLister
	vss       istiolisters.VirtualServiceLister
	drs       istiolisters.DestinationRuleLister
	gateways  istiolisters.GatewayLister
	kick      chan struct{}
	running   map[string]*pod // by UID
	failures  map[string]int
	starters  []starter
	synced    []cache.InformerSynced
	nodePorts map[int32]*nodePort
	dns       *dnsServer
	rndMu     sync.Mutex
	rnd       *rand.Rand
	readyOnce sync.Once
	amb       *ambient // the ztunnel stand-in (ztunnel.go)
	// hbonePools are every HBONE pool of this node's pods (dropPeer).
	hbonePools sync.Map

	// endpointPods are the workshop's pods on every node: the labels and
	// service accounts of the endpoints a proxy routes to.
	endpointPods corelisters.PodLister
	// onReady is called once every pod that was Running at the start has
	// its network.
	onReady func()
}

func newDaemon(cfg Config, n *node) (*daemon, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	rc.QPS, rc.Burst = 50, 100
	d := &daemon{cfg: cfg, node: n, kick: make(chan struct{}, 1), running: map[string]*pod{}, failures: map[string]int{},
		rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
	if d.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	if d.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return nil, err
	}
	ic, err := istioclient.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	pemBytes, err := os.ReadFile(cfg.IstiodCA)
	if err != nil {
		return nil, fmt.Errorf("reading istiod's serving CA: %w", err)
	}
	istiodRoots := x509.NewCertPool()
	if !istiodRoots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s has no PEM certificate", cfg.IstiodCA)
	}
	d.ca = &istioca.Client{Kube: d.kube, Roots: istiodRoots}

	// Pods of the workshop apps on our node only; Services, EndpointSlices
	// and Istio's routing everywhere (they are few).
	appSel, _ := labels.NewRequirement("app", selection.In, []string{AppFrontend, AppBackend, AppGateway, AppZtunnel})
	podF := informers.NewSharedInformerFactoryWithOptions(d.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = appSel.String()
		o.FieldSelector = "spec.nodeName=" + cfg.Node
	}))
	kf := informers.NewSharedInformerFactory(d.kube, 0)
	isf := istioinformers.NewSharedInformerFactory(ic, 0)
	podInf := podF.Core().V1().Pods()
	d.pods = podInf.Lister()
	allF := informers.NewSharedInformerFactoryWithOptions(d.kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = appSel.String()
	}))
	d.endpointPods = allF.Core().V1().Pods().Lister()
	d.slices = kf.Discovery().V1().EndpointSlices().Lister()
	d.services = kf.Core().V1().Services().Lister()
	d.vss = isf.Networking().V1().VirtualServices().Lister()
	d.drs = isf.Networking().V1().DestinationRules().Lister()
	d.gateways = isf.Networking().V1().Gateways().Lister()
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { d.trigger() },
		UpdateFunc: func(any, any) { d.trigger() },
		DeleteFunc: func(any) { d.trigger() },
	}
	if _, err := podInf.Informer().AddEventHandler(h); err != nil {
		return nil, err
	}
	// Routing reads the other listers on every request; their informers
	// only need to exist before Start.
	for _, inf := range []cache.SharedIndexInformer{podInf.Informer(), allF.Core().V1().Pods().Informer(), kf.Discovery().V1().EndpointSlices().Informer(),
		kf.Core().V1().Services().Informer(), isf.Networking().V1().VirtualServices().Informer(),
		isf.Networking().V1().DestinationRules().Informer(), isf.Networking().V1().Gateways().Informer()} {
		d.synced = append(d.synced, inf.HasSynced)
	}
	// Services: the node's NodePorts follow them.
	if _, err := kf.Core().V1().Services().Informer().AddEventHandler(h); err != nil {
		return nil, err
	}
	if err := d.initAmbient(kf, h); err != nil {
		return nil, err
	}
	if _, err := allF.Core().V1().Pods().Informer().AddEventHandler(d.peerGone()); err != nil {
		return nil, err
	}
	wf, err := d.initWaypoints(h)
	if err != nil {
		return nil, err
	}
	d.starters = append([]starter{podF, allF, kf, isf}, wf...)
	return d, nil
}

type starter interface{ Start(<-chan struct{}) }

func (d *daemon) trigger() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *daemon) run(ctx context.Context) error {
	for _, s := range d.starters {
		s.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), d.synced...) {
		return fmt.Errorf("the watches did not sync: %w", context.Cause(ctx))
	}
	d.cfg.logf("watching pods of %s, %s and %s on node %s", AppFrontend, AppBackend, AppGateway, d.cfg.Node)
	dns, err := d.startDNS(ctx)
	if err != nil {
		return err
	}
	defer dns.close()
	d.dns = dns
	d.cfg.logf("cluster DNS: %s/%s answers for %s on %s (UDP) in %s", DNSNamespace, DNSService, ClusterDomain, dns.addr, d.node.net.NS)
	d.trigger()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			d.stopAll()
			return nil
		case <-d.kick:
		case <-retry.C:
		}
		if d.sync(ctx) {
			retry.Reset(time.Second)
		}
	}
}

// wanted says whether a pod should have a network now: a workshop pod (in
// default, or the ingress gateway), Running with an IP, and not on its way
// out (a kubelet would be killing its containers).
func wanted(p *corev1.Pod) bool {
	return nodePortNamespaces[p.Namespace] && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.DeletionTimestamp == nil
}

// sync brings the pod namespaces in line with the API. It returns true when
// something failed and should be retried.
func (d *daemon) sync(ctx context.Context) bool {
	all, err := d.pods.List(labels.Everything())
	if err != nil {
		d.cfg.logf("listing pods: %v", err)
		return true
	}
	all = append(all, d.localWaypoints()...)
	want := map[string]*corev1.Pod{}
	for _, p := range all {
		if wanted(p) || d.wantedAmbient(p) {
			want[string(p.UID)] = p
		}
	}
	// Removals first: KWOK hands a freed IP to the next pod.
	for uid, rp := range d.running {
		if p, ok := want[uid]; !ok || p.Status.PodIP != rp.net.IP.String() {
			d.stop(rp)
			delete(d.running, uid)
		}
	}
	failed := false
	uids := make([]string, 0, len(want))
	for uid := range want {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		if _, ok := d.running[uid]; ok {
			continue
		}
		p := want[uid]
		rp, err := d.start(ctx, p)
		if err != nil {
			d.failures[uid]++
			if d.failures[uid] <= 3 || d.failures[uid]%30 == 0 {
				d.cfg.logf("pod %s/%s: %v (retrying)", p.Namespace, p.Name, err)
			}
			failed = true
			continue
		}
		delete(d.failures, uid)
		d.running[uid] = rp
	}
	if d.syncAmbient(ctx) {
		failed = true
	}
	d.syncNodePorts(ctx)
	if !failed {
		d.readyOnce.Do(func() {
			d.cfg.logf("node %s ready: %d pods have a network", d.cfg.Node, len(d.running))
			if d.onReady != nil {
				d.onReady()
			}
		})
	}
	return failed
}

func (d *daemon) stopAll() {
	for port, np := range d.nodePorts {
		np.close()
		delete(d.nodePorts, port)
	}
	for uid, rp := range d.running {
		d.stop(rp)
		delete(d.running, uid)
	}
}

// endpoints lists the ready endpoints of a Service (by FQDN) from its
// EndpointSlices, with the pods' labels and service accounts.
func (d *daemon) endpoints(host string) []Endpoint {
	parts := strings.SplitN(host, ".", 3)
	if len(parts) < 3 || parts[2] != "svc.cluster.local" {
		return nil
	}
	name, ns := parts[0], parts[1]
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name})
	slices, err := d.slices.EndpointSlices(ns).List(sel)
	if err != nil {
		return nil
	}
	var out []Endpoint
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready || len(e.Addresses) == 0 || e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
				continue
			}
			addr, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			ep := Endpoint{Namespace: ns, Pod: e.TargetRef.Name, IP: addr}
			if p, err := d.endpointPod(ns, e.TargetRef.Name); err == nil {
				ep.Labels, ep.ServiceAccount = p.Labels, p.Spec.ServiceAccountName
			}
			out = append(out, ep)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out
}

// endpointPod finds an endpoint's pod on any node (on this node only for a
// daemon built without the all-node lister, as unit tests build it).
func (d *daemon) endpointPod(ns, name string) (*corev1.Pod, error) {
	if d.endpointPods == nil {
		return d.pods.Pods(ns).Get(name)
	}
	return d.endpointPods.Pods(ns).Get(name)
}

// routes is the routing configuration proxies see now.
func (d *daemon) routes() Routes {
	vss, _ := d.vss.List(labels.Everything())
	drs, _ := d.drs.List(labels.Everything())
	return Routes{VirtualServices: vss, DestinationRules: drs, Endpoints: d.endpoints}
}

func (d *daemon) pick(req Request, mesh bool) (Target, error) {
	d.rndMu.Lock()
	defer d.rndMu.Unlock()
	if mesh {
		return d.routes().Pick(d.rnd, req)
	}
	// Without a sidecar, kube-proxy picks any endpoint of the Service.
	return Routes{Endpoints: d.endpoints}.Pick(d.rnd, req)
}

func logFile(dir, ns, name, container string) string {
	return filepath.Join(dir, "logs", fmt.Sprintf("%s_%s_%s.log", ns, name, container))
}
