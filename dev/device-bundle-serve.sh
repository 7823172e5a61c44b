#!/usr/bin/env bash
# Packs what the GPU serving benchmark (bench/gpu_serve.sh) needs into .carry/ (ignored by git),
# for one device call (carry: .carry), leaving the rest of .carry alone:
#   .carry/serve.tar.xz        the CUDA attnedit built here (same nvcc as the device) and the
#                              Debian libraries it links (the device image lacks them);
#   .carry/llama-server.tar.xz llama.cpp's llama-server from a CUDA build made here (the
#                              llama.cpp vendored in PyPI's llama-cpp-python sdist, configured
#                              with -DLLAMA_BUILD_SERVER=ON) with the llama/ggml shared libraries
#                              it links (stripped) and llama.cpp's gguf-py (bench/llama_gguf.py
#                              writes the GGUF with it and a synthetic vocabulary: requests are
#                              token ids, and the tokenizer would cost 1.4 MB of the 64 MiB).
# On the device: bash dev/device-run-serve.sh
# (dev/device-bundle-infer.sh packs a slimmer attnedit, no OpenBLAS library, with llama-bench and
# llama-server in one carry: the same benchmark is then bash dev/device-run-infer.sh serve.)
# Usage: dev/device-bundle-serve.sh [LLAMA_BUILD_BIN LLAMA_SRC | keep | none]
#   (default /tmp/llama-build/bin and /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp; keep:
#   reuse the .carry/llama-server.tar.xz already there; none: attnedit only).
#   AE_BUNDLE_BUILD=DIR packs an existing CUDA build instead of building build-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-/tmp/llama-build/bin}
src=${2:-/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp}
build=${AE_BUNDLE_BUILD:-build-gpu}
mkdir -p .carry
stage=.carry/serve-stage
rm -rf "$stage" && mkdir -p "$stage/build" "$stage/lib"
if [ -z "${AE_BUNDLE_BUILD:-}" ]; then
  bash scripts/build.sh build-gpu -DAE_CUDA=ON -DAE_MPI=OFF >/dev/null # no libmpi on the device
  echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted')" > build-gpu/COMMIT
fi
cp "$build/attnedit" "$stage/build/"
[ -f "$build/COMMIT" ] && cp "$build/COMMIT" "$stage/build/"
for l in libcjson.so.1 libpcre2-8.so.0 libutf8proc.so.2 libmicrohttpd.so.12 libgfortran.so.5 \
         libquadmath.so.0 libgomp.so.1; do
  cp -L /usr/lib/x86_64-linux-gnu/$l "$stage/lib/"
done
cp -L /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 "$stage/lib/"
tar -C "$stage" -cf - . | xz -9 -T2 > .carry/serve.tar.xz
rm -rf "$stage"
ls -la .carry/serve.tar.xz
[ "$bin" = none ] && exit 0

# llama-server and exactly the libraries of the llama.cpp build it loads (ldd, resolved in $bin)
if [ "$bin" != keep ]; then
  stage=.carry/llama-stage
  rm -rf "$stage" && mkdir -p "$stage/bin"
  [ -x "$bin/llama-server" ] || { echo "no $bin/llama-server: cmake --build <llama build> --target llama-server" >&2; exit 1; }
  cp "$bin/llama-server" "$stage/bin/"
  LD_LIBRARY_PATH="$bin:/tmp/cudastub:${LD_LIBRARY_PATH:-}" ldd "$bin/llama-server" |
    awk -v d="$(cd "$bin" && pwd)/" 'index($3, d) == 1 {print $1}' | while read -r lib; do
    cp -L "$bin/$lib" "$stage/bin/$lib"
  done
  strip --strip-unneeded "$stage"/bin/*
  mkdir -p "$stage/gguf-py" && cp -r "$src/gguf-py/gguf" "$stage/gguf-py/" && rm -rf "$stage/gguf-py/gguf/scripts"
  tar -C "$stage" -cf - . | xz -9 -T2 > .carry/llama-server.tar.xz
  rm -rf "$stage"
fi
ls -la .carry/llama-server.tar.xz
# A device call carries the working tree (tracked and untracked-not-ignored files) plus the
# carried paths, 64 MiB in all: the two archives must fit beside the tree (move other bundles
# out of .carry first).
tree=$( (git ls-files -z; git ls-files -o --exclude-standard -z) | xargs -0 stat -c %s 2>/dev/null |
  awk '{ s += $1 } END { print s }')
archives=$(stat -c %s .carry/serve.tar.xz .carry/llama-server.tar.xz | awk '{ s += $1 } END { print s }')
others=$(find .carry -maxdepth 1 -type f ! -name serve.tar.xz ! -name llama-server.tar.xz -printf '%s\n' |
  awk '{ s += $1 } END { print s + 0 }')
awk -v t="$tree" -v a="$archives" -v o="$others" 'BEGIN {
  m = 1048576; printf "working tree %.1f MiB + serve and llama-server archives %.1f MiB = %.1f MiB of 64", t / m, a / m, (t + a) / m
  if (o > 0) printf "; other files in .carry: %.1f MiB (move them out for this call)", o / m
  printf "\n"; if (t + a > 64 * m) { print "too large for one device call" > "/dev/stderr"; exit 1 } }'
