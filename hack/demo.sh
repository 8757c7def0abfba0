#!/usr/bin/env bash
# The workshop, unattended and narrated, on the local lab: every command is
# printed before its output. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBECONFIG="$PWD/_output/lab/kubeconfig"
export PATH="$PWD/_output/bin:$PWD/_output/lab-bin/shims:$PATH"
# The lab's node: SSH user, key and known_hosts for `kubectl mesh sniff`.
SSH_CONFIG=_output/lab/podnet/ssh/config

bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
if [ ! -t 1 ]; then bold=""; dim=""; reset=""; fi

say() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }
# runsh shows and runs a pipeline.
runsh() { printf '%s$ %s%s\n' "$dim" "$1" "$reset"; bash -o pipefail -c "$1"; }
# retry shows a command and runs it until it succeeds, for the few seconds
# KWOK may take to learn about a new pod's port-forward.
retry() {
  printf '%s$ %s%s\n' "$dim" "$*" "$reset"
  local out
  for _ in $(seq 30); do
    if out=$("$@" 2>&1); then printf '%s\n' "$out"; return 0; fi
    sleep 0.5
  done
  printf '%s\n' "$out"; return 1
}

if [ ! -e _output/lab/podnet/ready ]; then
  echo "the lab's pod network is not running: start the lab as root (make lab-up); see _output/lab/logs/podnet.log" >&2
  exit 1
fi

say "The lab: a real Kubernetes $(_output/lab-bin/kubectl-v1.35.0 version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) control plane and a real istiod on 127.0.0.1"
run kubectl mesh version

say "The workshop app, before the mesh: one container per pod (1/1)"
run kubectl get pods -n default -o wide

say "The frontend calls the backend Service ten times a second"
run kubectl logs deploy/frontend-app --tail=3

say "Capture the backend's traffic on its node (tcpdump over SSH): the greeting is readable"
runsh "kubectl mesh sniff deploy/backend-app --ssh-config $SSH_CONFIG --duration 4s --grep 'Hi TGN meetup' --expect plaintext | tail -n 5"

say "Turn on sidecar injection for namespace default"
run kubectl mesh enable-injection default

say "Restart what needs a sidecar, and prove it got one"
run kubectl mesh restart default
run kubectl get pods -n default
run kubectl mesh status -n default

say "The frontend's workload certificate, issued by istiod's CA and verified"
retry kubectl mesh certs frontend-app

say "The same capture now: Istio mTLS, the greeting is gone"
runsh "kubectl mesh sniff deploy/backend-app --ssh-config $SSH_CONFIG --duration 4s --grep 'Hi TGN meetup' --expect istio-mtls | tail -n 5"

say "Expose the frontend through the ingress gateway"
run kubectl mesh expose frontend
url=$(kubectl mesh expose frontend 2>/dev/null)
run curl -s --max-time 5 "$url"

say "Deploy version 2 of the backend"
runsh "kubectl apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend-app-v2
  namespace: default
  labels: {app: backend-app, version: v2}
spec:
  replicas: 1
  selector:
    matchLabels: {app: backend-app, version: v2}
  template:
    metadata:
      labels: {app: backend-app, version: v2}
    spec:
      serviceAccountName: backend
      terminationGracePeriodSeconds: 0
      containers:
      - name: app
        image: kubectl-mesh-lab/backend-app:v2
        ports:
        - {name: http, containerPort: 80}
EOF"
run kubectl rollout status deploy/backend-app-v2 --timeout=60s

say "Send half of the traffic to v2"
run kubectl mesh split backend 50/50
sleep 11
printf '%s(10 seconds later)%s\n' "$dim" "$reset"
runsh "kubectl logs deploy/frontend-app --since=10s | awk '{print \$3, \$4}' | sort | uniq -c"
run kubectl mesh split backend

say "Done. Keep exploring:"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  export PATH=$PWD/_output/bin:$PWD/_output/lab-bin/shims:\$PATH
  kubectl mesh --help
  kubectl logs -f deploy/frontend-app              # every call: status, version, pod, mtls or plaintext
  curl $url                       # through the ingress gateway
  kubectl mesh split backend 90/10                 # and watch the logs follow
  kubectl mesh sniff deploy/backend-app --ssh-config $SSH_CONFIG -w backend.pcap --duration 10s
  ssh -F $SSH_CONFIG node1                  # the node: ip netns, bridge fdb, tcpdump
The lab keeps running (make lab-up reuses it); stop it with: make lab-down
MSG
