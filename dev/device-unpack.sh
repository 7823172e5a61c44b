#!/usr/bin/env bash
# On the device: unpacks a bundle (default .carry/bundle.tar.xz from dev/device-bundle.sh, into
# .carry/) and prints the environment to source: LD_LIBRARY_PATH for the carried libraries (its
# lib/) and the device's own NCCL (libnccl.so.2: the system's, the toolkit's, or PyTorch's
# nvidia-nccl wheel's; 218 MB, too large to carry), AE_SHARED_DIR for the tests (when the
# bundle has shared/).
#   eval "$(bash dev/device-unpack.sh [ARCHIVE [DIR]])"
set -euo pipefail
cd "$(dirname "$0")/.."
archive=${1:-.carry/bundle.tar.xz}
dir=${2:-.carry}
mkdir -p "$dir"
tar -C "$dir" -xJf "$archive"
dir=$(cd "$dir" && pwd)
nccl=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu \
         "$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)"; do
  if [ -n "$d" ] && [ -e "$d/libnccl.so.2" ]; then nccl=$d; break; fi
done
# AE_HOST_LD_LIBRARY_PATH keeps the machine's own search path for programs that must not see
# ours: under it PyTorch disables cuDNN attention (bench/gpu_distill.sh's MLA peer ran 2.7x
# slower: measured on the H200, 2026-11-29; docs/BENCHMARKS.md).
shared=
[ -d "$dir/shared" ] && shared=" AE_SHARED_DIR=$dir/shared"
echo "export AE_HOST_LD_LIBRARY_PATH=\${LD_LIBRARY_PATH:-} LD_LIBRARY_PATH=$dir/lib:/usr/local/cuda/lib64${nccl:+:$nccl}:\${LD_LIBRARY_PATH:-}$shared"
