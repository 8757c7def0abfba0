#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only when missing.
# Add a package here (with the command that proves it is there) rather than
# asking anyone to install it by hand.
set -euo pipefail

need=()
check() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
check tcpdump tcpdump
check sshd openssh-server
check ssh openssh-client
check tshark tshark
check openssl openssl
check ip iproute2
check hyperfine hyperfine
check jq jq
check curl curl
check sudo sudo
check dot graphviz

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
