#!/usr/bin/env bash
# One call on a lent GPU machine: unpack the bundle made by dev/device-bundle.sh, run the GPU
# tests (scripts/test-gpu.sh) and, with BENCH=1 (or BENCH=quick), the inference benchmark
# (bench/gpu_infer.sh) and, when dev/device-bundle-llama.sh added llama.cpp, llama.cpp's side
# (bench/llama_infer.sh). BENCH=distill runs the distillation benchmark instead (bench/gpu_distill.sh:
# attnedit against the PyTorch peer; AE_BENCH_FULL=1 or =only passes through) and skips the tests
# unless TESTS=1. BENCH=scale: the data-parallel scaling (bench/gpu_scale.sh) on the machine's
# GPUs (a multi-GPU kind), after the tests unless TESTS=0. BENCH=results: bench/gpu_results.sh
# (qwen3-small, two students converted, eval tasks / kl / passkey; the bundle of
# AE_BUNDLE=results dev/device-bundle.sh), no tests unless TESTS=1. TESTS=0 skips the tests. Logs go to $OUT (the device tool brings them back).
#   run: bash dev/device-run.sh      (carry: .carry)
#   run: BENCH=distill bash dev/device-run.sh   (about 6 minutes on an H200; AE_BENCH_FULL=only for
#        the optional rows, 8B at 32K and Qwen3-30B-A3B, in a second call)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
eval "$(bash dev/device-unpack.sh)"
export AE_GPU_BUILD=.carry/build AE_PREBUILT=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
tests_default=1
[ "${BENCH:-}" = distill ] && tests_default=0 # the benchmark alone fills most of a 10-minute call
[ "${BENCH:-}" = results ] && tests_default=0
[ "${TESTS:-$tests_default}" = 0 ] || bash scripts/test-gpu.sh 2>&1 | tee "$out/test-gpu.log"
if [ "${BENCH:-}" = scale ]; then # data-parallel scaling on every GPU of the machine
  echo "mpirun: $(command -v mpirun || echo none); libmpi: $(ls /usr/lib/x86_64-linux-gnu/libmpi.so* 2>/dev/null | head -1)"
  AE_BENCH_LOGDIR="$out/scale" bash bench/gpu_scale.sh .carry/build 2>&1 | tee "$out/bench-scale.log"
  exit 0
fi
if [ "${BENCH:-}" = results ]; then
  AE_RESULTS_DIR="$out/results" bash bench/gpu_results.sh .carry/build .carry/shared 2>&1 | tee "$out/results.log"
  exit 0
fi
if [ "${BENCH:-}" = distill ]; then
  AE_BENCH_LOGDIR="$out/distill" bash bench/gpu_distill.sh .carry/build .carry/peers/torch_attnedit.py 2>&1 \
    | tee "$out/bench-distill.log"
  exit 0
fi
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
  tok=$llama/tok; [ -d "$tok" ] || tok=- # without it: a synthetic vocabulary of the same size
  bash bench/llama_infer.sh "$llama/bin" "$llama/gguf-py" "$tok" "$ctx" 2>&1 | tee "$out/bench-llama.log"
fi
