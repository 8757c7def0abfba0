#!/usr/bin/env bash
# The workshop, unattended and narrated, on the local lab: every command is
# printed before its output. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBECONFIG="$PWD/_output/lab/kubeconfig"
export PATH="$PWD/_output/bin:$PWD/_output/lab-bin/shims:$PATH"

bold=$'\e[1m'; dim=$'\e[2m'; reset=$'\e[0m'
if [ ! -t 1 ]; then bold=""; dim=""; reset=""; fi

say() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }

say "The lab: a real Kubernetes $(_output/lab-bin/kubectl-v1.35.0 version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) control plane and a real istiod on 127.0.0.1"
run kubectl mesh version

say "The workshop app, before the mesh: one container per pod (1/1)"
run kubectl get pods -n default -o wide

say "Done. Keep exploring:"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  export PATH=$PWD/_output/bin:$PWD/_output/lab-bin/shims:\$PATH
  kubectl mesh --help
The lab keeps running; stop it with: make lab-down
MSG
