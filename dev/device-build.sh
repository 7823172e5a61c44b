#!/usr/bin/env bash
# On the GPU machine: builds the carried tree there with the Debian packages of
# .carry/sysroot.tar.xz (dev/device-sysroot.sh) unpacked into a prefix (the machine's own /usr is
# left alone), then prints the environment to source for running what it built.
#   eval "$(bash dev/device-build.sh [BUILD_DIR [TARGET...]])"  # default build-gpu, every target;
#                                                               ~1 min on 16 cores
# The build's output goes to BUILD_DIR/build.log (its last lines on stderr when it fails).
# AE_DEVICE_CMAKE_ARGS: more cmake arguments (A/B builds of a compile-time constant, e.g.
# "-DCMAKE_CUDA_FLAGS=-DDEC_PIPE_ST=5").
# BUILD_DIR/COMMIT (the commit benchmark headers print): .carry/COMMIT when carried (write it
# here with `git rev-parse --short HEAD > .carry/COMMIT`: the device copy's own git HEAD can be
# an older commit than the tree it received), else that HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-gpu}
shift $(( $# > 0 ? 1 : 0 ))
targets=()
for t in "$@"; do targets+=(--target "$t"); done
prefix=$PWD/.carry/sysroot
arch=x86_64-linux-gnu
if [ ! -d "$prefix/usr" ]; then
  mkdir -p "$prefix"
  tar -C "$prefix" -xJf .carry/sysroot.tar.xz
  # libmicrohttpd.pc names gnutls as a private requirement: no .pc for it here, none needed
  sed -i '/^Requires.private/d' "$prefix/usr/lib/$arch/pkgconfig/libmicrohttpd.pc"
fi
libs=$prefix/usr/lib/$arch:$prefix/usr/lib/$arch/openblas-openmp
mkdir -p "$dir"
{
  PKG_CONFIG_SYSROOT_DIR=$prefix \
  PKG_CONFIG_PATH=$prefix/usr/lib/$arch/pkgconfig:$prefix/usr/lib/$arch/openblas-openmp/pkgconfig \
  cmake -S . -B "$dir" -DAE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DAE_MPI=OFF \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
    -DAE_OPENBLAS="$prefix/usr/lib/$arch/openblas-openmp/libopenblas.so.0" \
    -DAE_CBLAS_INCLUDE="$prefix/usr/include/$arch/openblas-openmp" ${AE_DEVICE_CMAKE_ARGS:-} &&
  LIBRARY_PATH=$libs cmake --build "$dir" -j"$(nproc)" ${targets[@]+"${targets[@]}"}
} > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log" >&2; exit 1; }
if [ -s .carry/COMMIT ]; then cp .carry/COMMIT "$dir/COMMIT"; else git rev-parse --short HEAD > "$dir/COMMIT" 2>/dev/null || true; fi
# AE_HOST_LD_LIBRARY_PATH: the machine's own path, for programs that must not see these libraries
# (PyTorch: bench/gpu_distill.sh, bench/gpu_infer.sh; dev/device-unpack.sh says why)
echo "export AE_HOST_LD_LIBRARY_PATH=\${LD_LIBRARY_PATH:-} LD_LIBRARY_PATH=$libs:/usr/local/cuda/lib64:\${LD_LIBRARY_PATH:-}"
