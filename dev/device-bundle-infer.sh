#!/usr/bin/env bash
# The slim bundle of the one-call engine comparisons (dev/device-run-infer.sh: attnedit,
# transformers and llama.cpp on the same weights; or the serving comparison): into .carry/slim/
# (ignored by git), leaving the rest of .carry alone:
#   .carry/slim/attnedit.tar.xz  build/: bench_infer and attnedit (and COMMIT) of a CUDA build for
#                                the H200 alone (sm_90a code, no PTX) with OpenBLAS linked statically
#                                (-DAE_STATIC_OPENBLAS=ON: no 36 MB libopenblas, no libgfortran);
#                                lib/: the Debian libraries they link that the device image lacks
#                                (each one they name, NEEDED, that ldd resolves in the system's
#                                multiarch folders, but the C and C++ runtimes; their own
#                                dependencies, GnuTLS's for libmicrohttpd, are the device's)
#   .carry/slim/llama.tar.xz     llama-bench and llama-server with their libraries and gguf-py
#                                (dev/device-bundle-llama.sh)
# then unpacks both into a temporary folder and checks that every program resolves its libraries
# there (dev/device-check-bundle.sh), and that the working tree and .carry/slim fit one call.
# Usage: dev/device-bundle-infer.sh [LLAMA_BUILD_BIN [LLAMA_SRC] | keep]
#   (default: dev/device-bundle-llama.sh's; keep: reuse the .carry/slim/llama.tar.xz there)
#   AE_BUNDLE_BUILD=DIR packs an existing build configured as below instead of building
#   build-infer (configure: -DAE_CUDA=ON -DAE_MPI=OFF -DAE_STATIC_OPENBLAS=ON
#   -DCMAKE_CUDA_ARCHITECTURES=90a-real).
# The device call (the run tool): carry [".carry/slim"], command "bash dev/device-run-infer.sh"
# (or "bash dev/device-run-infer.sh serve").
set -euo pipefail
cd "$(dirname "$0")/.."
build=${AE_BUNDLE_BUILD:-build-infer}
dest=.carry/slim
mkdir -p "$dest"
if [ -z "${AE_BUNDLE_BUILD:-}" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DAE_CUDA=ON -DAE_MPI=OFF -DAE_STATIC_OPENBLAS=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a-real -DAE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target bench_infer attnedit
  echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted')" > "$build/COMMIT"
fi
stage=$dest/attnedit-stage
rm -rf "$stage" && mkdir -p "$stage/build" "$stage/lib"
for p in bench_infer attnedit; do
  if readelf -d "$build/$p" | grep -q 'NEEDED.*libopenblas'; then
    echo "$build/$p links libopenblas.so: configure $build with -DAE_STATIC_OPENBLAS=ON" >&2
    exit 1
  fi
  cp "$build/$p" "$stage/build/"
  needed=$(readelf -d "$build/$p" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  ldd "$build/$p" | awk '$2 == "=>" && $3 ~ /^(\/usr)?\/lib\/x86_64-linux-gnu\// { print $1, $3 }' |
    while read -r name lib; do
      grep -qxF "$name" <<<"$needed" || continue
      case $name in # the C and C++ runtimes: the device's own
        libc.so.*|libm.so.*|libdl.so.*|librt.so.*|libpthread.so.*|libstdc++.so.*|libgcc_s.so.*) ;;
        *) cp -L "$lib" "$stage/lib/" ;;
      esac
    done
done
strip --strip-unneeded "$stage"/build/*
[ -f "$build/COMMIT" ] && cp "$build/COMMIT" "$stage/build/"
# one xz stream with a dictionary larger than a binary: the two share most of their bytes
tar -C "$stage" -cf - . | xz -T1 --lzma2=preset=9,dict=256MiB > "$dest/attnedit.tar.xz"
rm -rf "$stage"
ls -la "$dest/attnedit.tar.xz"
if [ "${1:-}" != keep ]; then
  AE_CARRY=$dest bash dev/device-bundle-llama.sh "$@"
fi
bash dev/device-check-bundle.sh "$dest"
bash dev/carry-size.sh "$dest"
