#!/usr/bin/env bash
# Here: packs the Debian packages a build of attnedit needs (headers, pkg-config files and shared
# libraries of cJSON, PCRE2, utf8proc, cmocka, libmicrohttpd, OpenBLAS and their runtime
# dependencies) into .carry/sysroot.tar.xz (~6 MB), for dev/device-build.sh, which builds the
# carried tree on the GPU machine itself: its 16 cores take about a minute for the whole CUDA
# build that takes 10-15 on this machine's two, and the tree travels with every call anyway.
#   bash dev/device-sysroot.sh            # then carry [".carry/sysroot.tar.xz", ...]
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(libcjson-dev libcjson1 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libutf8proc-dev libutf8proc2 libcmocka-dev libcmocka0 libmicrohttpd-dev libmicrohttpd12
      libopenblas0-openmp libopenblas-openmp-dev libopenblas-dev libblas-dev liblapack-dev
      libgfortran5 libquadmath0 libgomp1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download "${pkgs[@]}" >/dev/null 2>&1) ||
  { echo "device-sysroot: apt-get download failed (run apt-get update?)" >&2; exit 1; }
mkdir -p "$tmp/root"
for d in "$tmp"/*.deb; do dpkg -x "$d" "$tmp/root"; done
find "$tmp/root" -name "*.a" -delete # shared libraries only: the static ones triple the size
rm -rf "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/info"
mkdir -p .carry
tar -C "$tmp/root" -cf - . | xz -T2 -9 > .carry/sysroot.tar.xz.tmp && mv .carry/sysroot.tar.xz.tmp .carry/sysroot.tar.xz
ls -la .carry/sysroot.tar.xz
