#!/usr/bin/env bash
# One call on a lent GPU machine: unpack the bundle made by dev/device-bundle.sh, run the GPU
# tests (scripts/test-gpu.sh) and, with BENCH=1 (or BENCH=quick), the inference benchmark
# (bench/gpu_infer.sh) and, when dev/device-bundle-llama.sh added llama.cpp, llama.cpp's side
# (bench/llama_infer.sh). TESTS=0 skips the tests. Logs go to $OUT (the device tool brings them back).
#   run: bash dev/device-run.sh      (carry: .carry)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
eval "$(bash dev/device-unpack.sh)"
export AE_GPU_BUILD=.carry/build AE_PREBUILT=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
[ "${TESTS:-1}" = 0 ] || bash scripts/test-gpu.sh 2>&1 | tee "$out/test-gpu.log"
llama=
if [ -f .carry/llama.tar.xz ]; then
  mkdir -p .carry/llama && tar -C .carry/llama -xJf .carry/llama.tar.xz && llama=.carry/llama
fi
case "${BENCH:-}" in
  1) ctx=4096,32768 ;;
  quick) ctx=4096; export AE_BENCH_QUICK=1 ;;
  *) exit 0 ;;
esac
bash bench/gpu_infer.sh .carry/build 2>&1 | tee "$out/bench.log"
if [ -n "$llama" ]; then
  bash bench/llama_infer.sh "$llama/bin" "$llama/gguf-py" "$llama/tok" "$ctx" 2>&1 | tee "$out/bench-llama.log"
fi
