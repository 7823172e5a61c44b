#!/usr/bin/env bash
# One call on a lent GPU machine: unpack the bundle made by dev/device-bundle.sh, run the GPU
# tests (scripts/test-gpu.sh) and, with BENCH=1 (or BENCH=quick), the inference benchmark
# (bench/gpu_infer.sh). Logs go to $OUT (the device tool brings them back).
#   run: bash dev/device-run.sh      (carry: .carry)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
eval "$(bash dev/device-unpack.sh)"
export AE_GPU_BUILD=.carry/build AE_PREBUILT=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
bash scripts/test-gpu.sh 2>&1 | tee "$out/test-gpu.log"
case "${BENCH:-}" in
  1) bash bench/gpu_infer.sh .carry/build 2>&1 | tee "$out/bench.log" ;;
  quick) AE_BENCH_QUICK=1 bash bench/gpu_infer.sh .carry/build 2>&1 | tee "$out/bench.log" ;;
esac
