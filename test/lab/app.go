package lab

import (
	"fmt"

	"github.com/kubectl-mesh/kubectl-mesh/test/lab/podnet"
)

// NodeName is the lab's KWOK node, named after the workshop's Vagrant node.
const NodeName = "node1"

// nodeYAML is a KWOK-managed node with room for the benchmarks' thousands of
// pods.
const nodeYAML = `
apiVersion: v1
kind: Node
metadata:
  name: ` + NodeName + `
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: ` + NodeName + `
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node-role.kubernetes.io/worker: ""
    type: kwok
status:
  # InternalIP is podnet's node namespace (SSH, tcpdump); the API server
  # reaches KWOK's kubelet server through InternalDNS.
  addresses:
  - {type: InternalIP, address: "` + podnet.NodeIP + `"}
  - {type: InternalDNS, address: localhost}
  - {type: Hostname, address: ` + NodeName + `}
  allocatable: {cpu: "4000", memory: 16Ti, pods: "20000"}
  capacity: {cpu: "4000", memory: 16Ti, pods: "20000"}
`

// workloadYAML is one workshop Deployment. Images are never pulled (KWOK
// runs no containers); the names say what the pods stand for.
func workloadYAML(app, version, sa string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s%[4]s
  namespace: default
  labels: {app: %[1]s, version: %[2]s}
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s, version: %[2]s}
  template:
    metadata:
      labels: {app: %[1]s, version: %[2]s}
    spec:
      serviceAccountName: %[3]s
      terminationGracePeriodSeconds: 0
      containers:
      - name: app
        image: kubectl-mesh-lab/%[1]s:%[2]s
        ports:
        - {name: http, containerPort: 80}
        # As a real app has them. After injection istiod rewrites both to
        # pilot-agent's /app-health/app/readyz|livez on 15020; podnet's
        # kubelet runs them from the node either way.
        readinessProbe:
          httpGet: {path: %[5]s, port: http}
          periodSeconds: 3
        livenessProbe:
          tcpSocket: {port: http}
          periodSeconds: 10
`, app, version, sa, suffix(version), podnet.HealthPath)
}

// The v1 Deployments keep the workshop's names (frontend-app, backend-app);
// later versions get a suffix (backend-app-v2).
func suffix(version string) string {
	if version == "v1" {
		return ""
	}
	return "-" + version
}

// WorkshopYAML is the workshop app in default: frontend and backend v1, their
// Services and ServiceAccounts.
var WorkshopYAML = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: backend, namespace: default}
---
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: default, labels: {app: frontend-app}}
spec:
  selector: {app: frontend-app}
  ports:
  - {name: http, port: 80, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default, labels: {app: backend-app}}
spec:
  selector: {app: backend-app}
  ports:
  - {name: http, port: 80, targetPort: 80}
---` + workloadYAML("frontend-app", "v1", "frontend") + `---` + workloadYAML("backend-app", "v1", "backend")

// BackendV2YAML is the workshop's second backend version, deployed by the
// demo before splitting traffic. It runs on node2, so the calls the
// frontend (on node1) sends it cross nodes.
var BackendV2YAML = onNode2(workloadYAML("backend-app", "v2", "backend"))

// ingressGatewayYAML stands for Istio's ingress gateway: a Service of type
// LoadBalancer (no load-balancer controller runs, so its address stays
// pending and NodePorts are the way in) and a Deployment of gateway pods.
const ingressGatewayYAML = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: istio-ingressgateway, namespace: istio-system}
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  type: LoadBalancer
  selector: {app: istio-ingressgateway, istio: ingressgateway}
  ports:
  - {name: status-port, port: 15021, targetPort: 15021, nodePort: 31021}
  - {name: http2, port: 80, targetPort: 8080, nodePort: 31080}
  - {name: https, port: 443, targetPort: 8443, nodePort: 31443}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istio-ingressgateway
  namespace: istio-system
  labels: {app: istio-ingressgateway, istio: ingressgateway}
spec:
  replicas: 1
  selector:
    matchLabels: {app: istio-ingressgateway, istio: ingressgateway}
  template:
    metadata:
      labels: {app: istio-ingressgateway, istio: ingressgateway, sidecar.istio.io/inject: "false"}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "15020", prometheus.io/path: /stats/prometheus}
    spec:
      serviceAccountName: istio-ingressgateway
      terminationGracePeriodSeconds: 0
      containers:
      - name: istio-proxy
        image: docker.io/istio/proxyv2:` + IstioVersion + `
        args: [proxy, router]
        ports:
        - {containerPort: 8080}
        - {containerPort: 8443}
        - {name: status-port, containerPort: 15021}
        - {name: http-envoy-prom, containerPort: 15090}
        # The gateway chart's probe of Envoy's health listener.
        readinessProbe:
          httpGet: {path: /healthz/ready, port: 15021}
          periodSeconds: 2
          failureThreshold: 30
`
