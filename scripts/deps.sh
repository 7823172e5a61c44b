#!/usr/bin/env bash
# Installs the Debian 12 packages attnedit needs to build and test (only those missing).
# --fuzz: also clang with libFuzzer and the sanitizer runtimes, and clang's OpenMP (scripts/fuzz.sh).
set -euo pipefail
pkgs=(gcc make cmake pkg-config libopenblas-openmp-dev libcjson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libmicrohttpd-dev)
if [ "${1:-}" = "--fuzz" ]; then pkgs+=(clang-14 libclang-rt-14-dev libomp-14-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
