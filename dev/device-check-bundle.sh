#!/usr/bin/env bash
# Checks the slim bundle (dev/device-bundle-infer.sh) without a GPU: unpacks DIR/attnedit.tar.xz
# and DIR/llama.tar.xz into a temporary folder and runs ldd on every program there, with the
# library path dev/device-run-infer.sh gives it, so that each library resolves from the bundle
# or is one the device provides itself: the C and C++ runtimes, OpenSSL, CUDA's (driver, runtime,
# cuBLAS, NCCL) and GnuTLS with its dependencies (libmicrohttpd's: attnedit serve ran on the
# device with only libmicrohttpd carried, docs/SERVE.md). Fails when a library is not found or
# comes from elsewhere on this machine (it would be missing on the device). libcuda.so.1 comes
# from the driver: not found here, it counts as the device's (/tmp/cudastub/libcuda.so.1, any
# stub, lets ldd resolve what it loads in turn).
#   dev/device-check-bundle.sh [DIR]      (default .carry/slim)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.carry/slim}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/attnedit" "$tmp/llama"
tar -C "$tmp/attnedit" -xJf "$dir/attnedit.tar.xz"
[ -f "$dir/llama.tar.xz" ] && tar -C "$tmp/llama" -xJf "$dir/llama.tar.xz"
device='^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libssl|libcrypto|libcuda|libcudart|libcublas|libcublasLt|libnccl'
device+='|libgnutls|libp11-kit|libidn2|libunistring|libtasn1|libnettle|libhogweed|libgmp|libffi)\.so'
fail=0
check() { # $1 program, $2 library path
  local p=$1 n_bundle=0 n_device=0 bad=0 name path
  while read -r name path; do
    if [ "$path" = "not" ] && [[ $name == libcuda.so.1 ]]; then
      n_device=$((n_device + 1))
    elif [ "$path" = "not" ]; then
      echo "FAIL $p: $name not found"; bad=1
    elif [[ $path == "$tmp"/* ]]; then
      n_bundle=$((n_bundle + 1))
    elif [[ $name =~ $device ]]; then
      n_device=$((n_device + 1))
    else
      echo "FAIL $p: $name resolves to $path on this machine only (not in the bundle)"; bad=1
    fi
  done < <(LD_LIBRARY_PATH="$2:/tmp/cudastub" ldd "$p" |
           awk '$2 == "=>" { print $1, $3 }') # (the loader and vDSO lines have no "=>")
  [ $bad = 0 ] && echo "ok ${p#"$tmp"/}: $n_bundle libraries from the bundle, $n_device the device's own"
  [ $bad = 0 ] || fail=1
}
for p in "$tmp"/attnedit/build/*; do
  [ -x "$p" ] && check "$p" "$tmp/attnedit/lib"
done
for p in "$tmp"/llama/bin/llama-*; do
  [ -x "$p" ] && check "$p" "$tmp/llama/bin:$tmp/attnedit/lib"
done
exit $fail
