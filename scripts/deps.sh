#!/usr/bin/env bash
# Installs the Debian 12 packages attnedit needs to build and test (only those missing).
# --fuzz: also clang with libFuzzer and the sanitizer runtimes, and clang's OpenMP (scripts/fuzz.sh).
# Open MPI (mpirun groups on cpu, tests/test_comm.c's ranks) is wanted but optional: a machine
# where it cannot be installed (no network) builds without it, with a warning.
set -euo pipefail
pkgs=(gcc make cmake pkg-config libopenblas-openmp-dev libcjson-dev libpcre2-dev libutf8proc-dev libcmocka-dev libmicrohttpd-dev)
optional=(libopenmpi-dev openmpi-bin)
if [ "${1:-}" = "--fuzz" ]; then pkgs+=(clang-14 libclang-rt-14-dev libomp-14-dev); fi
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
missing_opt=()
for p in "${optional[@]}"; do installed "$p" || missing_opt+=("$p"); done
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_opt[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#missing_opt[@]} -gt 0 ]; then
  echo "installing: ${missing_opt[*]}" >&2
  if ! { { [ ${#missing[@]} -gt 0 ] || $sudo apt-get update -qq; } &&
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
           "${missing_opt[@]}" >/dev/null; }; then
    echo "warning: could not install ${missing_opt[*]}: building without MPI (no mpirun groups;" \
         "GPU groups start with --gpus N)" >&2
  fi
fi
