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
# verdict shows a command whose exit status is its verdict and checks it.
verdict() {
  local want=$1; shift
  printf '%s$ %s%s\n' "$dim" "$*" "$reset"
  local rc=0
  "$@" || rc=$?
  printf '%s(exit %s)%s\n' "$dim" "$rc" "$reset"
  if [ "$rc" != "$want" ]; then echo "expected exit $want" >&2; return 1; fi
}
# proven runs verify until it proves (exit 0), at most twice: a capture
# that starts inside a TLS record of a pooled connection cannot tell what
# it carries, and verify then rightly says unproven (exit 3).
proven() {
  local rc=0
  printf '%s$ %s%s\n' "$dim" "$*" "$reset"
  "$@" || rc=$?
  printf '%s(exit %s)%s\n' "$dim" "$rc" "$reset"
  if [ "$rc" = 3 ]; then
    printf '%s(unproven: capturing again)%s\n' "$dim" "$reset"
    verdict 0 "$@"
    return
  fi
  if [ "$rc" != 0 ]; then echo "expected exit 0" >&2; return 1; fi
}
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

say "Prove the whole namespace at once: identities, mesh enrolment and every edge on the wire"
verdict 2 kubectl mesh verify default --ssh-config $SSH_CONFIG --duration 4s

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

say "verify again, while a client calls the frontend through the gateway: every workload meshed, every certificate verified, every edge Istio mTLS"
# Without a caller the frontend's Service would carry no packet during the
# capture, and verify would rightly call that edge unproven (exit 3).
( for _ in $(seq 60); do curl -s --max-time 1 -o /dev/null "$url" || true; sleep 0.2; done ) &
caller=$!
proven kubectl mesh verify default --ssh-config $SSH_CONFIG --duration 4s
say "The same proof as a graph, for a Markdown page (-o dot for graphviz)"
proven kubectl mesh verify default --ssh-config $SSH_CONFIG --duration 3s -o mermaid
kill "$caller" 2>/dev/null || true
wait "$caller" 2>/dev/null || true

say "Deploy version 2 of the backend, on the second node"
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
      nodeSelector: {kubernetes.io/hostname: node2}
      tolerations:
      - {key: lab.kubectl-mesh.io/node2, operator: Exists, effect: NoSchedule}
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

say "Ambient mode: no sidecars; ztunnel on every node carries the pods' traffic as HBONE"
run kubectl apply -f hack/demo/ztunnel.yaml
run kubectl rollout status daemonset/ztunnel -n istio-system --timeout=60s
run kubectl apply -f hack/demo/shop.yaml
run kubectl rollout status deploy/backend-app deploy/backend-app-v2 deploy/frontend-app -n shop --timeout=60s
run kubectl mesh enable-injection shop --ambient
until kubectl logs deploy/frontend-app -n shop --tail=1 2>/dev/null | grep -q ' hbone '; do sleep 0.5; done
run kubectl logs deploy/frontend-app -n shop --tail=2
run kubectl mesh status -n shop

say "On the wire: HBONE (mTLS on 15008, ALPN h2), nothing on the app port"
runsh "kubectl mesh sniff deploy/backend-app -n shop --ssh-config $SSH_CONFIG --duration 4s --grep 'Hi TGN meetup' --expect istio-mtls | tail -n 5"

say "The backend's workload certificate, read from the ztunnel on its node"
retry kubectl mesh certs deploy/backend-app -n shop

say "Routes in ambient mode: ztunnel is L4, only a waypoint applies them"
verdict 1 kubectl mesh split backend 100/0 -n shop
run kubectl mesh enable-injection shop --ambient --waypoint
run kubectl mesh split backend 100/0 -n shop
sleep 3
printf '%s(3 seconds later)%s\n' "$dim" "$reset"
runsh "kubectl logs deploy/frontend-app -n shop --since=2s | awk '{print \$3, \$4, \$7}' | sort | uniq -c"
run kubectl mesh split backend 50/50 -n shop
sleep 5
printf '%s(5 seconds later)%s\n' "$dim" "$reset"
runsh "kubectl logs deploy/frontend-app -n shop --since=4s | awk '{print \$3, \$4, \$7}' | sort | uniq -c"
run kubectl mesh status -n shop

say "Proven end to end: frontend → waypoint → both backends, Istio HBONE all the way"
proven kubectl mesh verify shop --ssh-config "$SSH_CONFIG" --duration 3s

say "Done. Keep exploring:"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  export PATH=$PWD/_output/bin:$PWD/_output/lab-bin/shims:\$PATH
  kubectl mesh --help
  kubectl logs -f deploy/frontend-app              # every call: status, version, pod, mtls or plaintext
  curl $url                       # through the ingress gateway
  kubectl mesh split backend 90/10                 # and watch the logs follow
  kubectl mesh sniff deploy/backend-app --ssh-config $SSH_CONFIG -w backend.pcap --duration 10s
  kubectl mesh verify default --ssh-config $SSH_CONFIG -o dot | dot -Tsvg > mesh.svg
  ssh -F $SSH_CONFIG node1                  # the node: ip netns, bridge fdb, tcpdump (node2 too)
The lab keeps running (make lab-up reuses it); stop it with: make lab-down
MSG
