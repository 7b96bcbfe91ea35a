#!/usr/bin/env bash
# Installs the Debian 12 packages the gateway needs to build, run and test (with --run:
# only to build and run it).
# Idempotent: skips apt when everything is already present.
set -euo pipefail
# What building and running need (scripts/run.sh passes --run and stops here) ...
PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost1.81-all-dev libboost-url1.81-dev libssl-dev libyaml-cpp-dev nlohmann-json3-dev
  prometheus-cpp-dev doctest-dev libhiredis-dev
  openssl curl python3
)
# ... and what the tests add: the real peers they start, the browser, the fuzzers' compiler.
if [ "${1:-}" != "--run" ]; then
  PKGS+=(
    redis-server prometheus nginx haproxy wrk
    clang-format chromium chromium-driver python3-yaml slowhttptest
    clang libclang-rt-14-dev
  )
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
