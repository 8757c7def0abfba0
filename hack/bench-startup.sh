#!/usr/bin/env bash
# Start-up time of kubectl mesh next to kubectl's, measured in one hyperfine
# run so both see the same machine load, and the size of the binaries.
#
#   hack/bench-startup.sh KUBECTL_MESH KUBECTL [RESULTS.md]
#
# Every run is a fresh process (no daemon, no cache of ours); the OS page
# cache is warm after hyperfine's warm-up runs. Dropping it would need root
# and would slow down everything else on the machine, so we do not.
set -euo pipefail

mesh=$(readlink -f "$1")
kubectl=$(readlink -f "$2")
out=${3:-}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# kubectl as built by `make lab-bins` keeps its symbol table and DWARF; the
# release kubectl is stripped, so compare against a stripped copy as well.
strip -o "$work/kubectl-stripped" "$kubectl"

# `kubectl mesh …` as users type it: kubectl finds the plugin on PATH.
mkdir "$work/path"
ln -s "$mesh" "$work/path/kubectl-mesh"
ln -s "$work/kubectl-stripped" "$work/path/kubectl"

# Nothing here may touch a cluster; a kubeconfig that does not exist makes
# sure of it.
export KUBECONFIG=$work/no-such-kubeconfig

hyperfine -N --warmup 10 --runs 100 --style basic \
	--export-json "$work/results.json" \
	-n 'kubectl version --client' "$kubectl version --client" \
	-n 'kubectl version --client (stripped)' "$work/kubectl-stripped version --client" \
	-n 'kubectl-mesh version --client' "$mesh version --client" \
	-n 'kubectl-mesh --help' "$mesh --help" \
	-n 'kubectl mesh version --client (via kubectl)' "env PATH=$work/path kubectl mesh version --client"

size() { stat -c %s "$1" | awk '{printf "%.1f MiB (%d bytes)", $1/1048576, $1}'; }
{
	echo
	# Medians and minimums: on a shared machine the mean follows the noise.
	jq -r '
		def ms: . * 1000 | . * 10 | round / 10;
		def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
		(.results[0].times | median) as $base
		| "| command | median ms | min ms | mean ± σ ms | median vs kubectl version --client |",
		  "|:---|---:|---:|---:|---:|",
		  (.results[] | "| `\(.command)` | \(.times | median | ms) | \(.min | ms) | \(.mean | ms) ± \(.stddev | ms) | \((.times | median) / $base * 100 | round / 100)× |")
	' "$work/results.json"
	echo
	echo "| binary | size |"
	echo "|:---|---:|"
	echo "| kubectl-mesh (static, -s -w: as released) | $(size "$mesh") |"
	echo "| kubectl $(basename "$kubectl" | sed 's/^kubectl-//') as built | $(size "$kubectl") |"
	echo "| kubectl $(basename "$kubectl" | sed 's/^kubectl-//') stripped | $(size "$work/kubectl-stripped") |"
} | tee ${out:+"$out"}
