// Package mesh holds the facts about pods and the Istio mesh that every
// engine needs: whether a pod has the sidecar, which Istio version an image
// runs, whether a pod is Ready. Each fact is computed here once, so status,
// restart, certs and sniff cannot disagree about it.
package mesh

// Names Istio gives its containers, labels and annotations.
const (
	// ProxyContainer is the sidecar's container name.
	ProxyContainer = "istio-proxy"
	// IstiodContainer is istiod's container in its Deployment.
	IstiodContainer = "discovery"
	// LabelRev is the revision label on namespaces, pods and Istio's objects.
	LabelRev = "istio.io/rev"
	// AnnotationSidecarStatus is what the injector writes on injected pods.
	AnnotationSidecarStatus = "sidecar.istio.io/status"
)
