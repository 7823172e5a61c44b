#!/usr/bin/env bash
# One call on a lent GPU machine with the slim bundle of dev/device-bundle-infer.sh (carry
# [".carry/slim"]): unpacks attnedit (.carry/slim/attnedit) and llama.cpp (.carry/slim/llama),
# then, by MODE:
#   infer  (default) bench/gpu_infer.sh with all three engines on the same random weights at the
#          Qwen3-8B and Qwen3-30B-A3B shapes: attnedit (bench_infer: prefill 4K / 32K, decode at
#          4K / 32K op by op and with CUDA graphs; also the MLA and GateSWA students),
#          transformers (bf16, sdpa; under the machine's own LD_LIBRARY_PATH, see
#          dev/device-unpack.sh), llama.cpp (llama-bench, flash attention, all layers on the GPU)
#   quick  the same at 4K only
#   serve  the serving comparison, bench/gpu_serve.sh: attnedit serve (teacher and students)
#          and llama-server on the teacher, same KV memory (its AE_SERVE_* settings pass through)
#   graphs bench/gpu_graphs.sh (attnedit's batch-1 decode op by op and as CUDA graphs)
# The log goes to $OUT (the device tool brings it back): bench-MODE.log, gpu.txt, and for serve
# the servers' logs (serve-logs.tar.gz).
#   run: bash dev/device-run-infer.sh [MODE]      (carry: .carry/slim)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp}
mode=${1:-infer}
slim=.carry/slim
eval "$(bash dev/device-unpack.sh "$slim/attnedit.tar.xz" "$slim/attnedit")"
build=$slim/attnedit/build
mkdir -p "$slim/llama" && tar -C "$slim/llama" -xJf "$slim/llama.tar.xz"
llama=$PWD/$slim/llama
[ -d "$llama/tok" ] && export AE_LLAMA_TOKENIZER=$llama/tok
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
case $mode in
  infer | quick)
    [ "$mode" = quick ] && export AE_BENCH_QUICK=1
    AE_LLAMA_BIN=$llama/bin AE_LLAMA_GGUF_PY=$llama/gguf-py bash bench/gpu_infer.sh "$build" 2>&1 |
      tee "$out/bench-$mode.log" ;;
  serve)
    logs=$(mktemp -d)/serve-logs # the servers' logs, brought back as one file
    AE_LLAMA_SERVER=$llama/bin/llama-server AE_LLAMA_GGUF_PY=$llama/gguf-py AE_SERVE_LOGDIR="$logs" \
      bash bench/gpu_serve.sh "$build" 2>&1 | tee "$out/bench-serve.log"
    tar -C "$(dirname "$logs")" -czf "$out/serve-logs.tar.gz" serve-logs ;;
  graphs)
    bash bench/gpu_graphs.sh "$build" 2>&1 | tee "$out/bench-graphs.log" ;;
  *)
    echo "usage: bash dev/device-run-infer.sh [infer | quick | serve | graphs]" >&2
    exit 2 ;;
esac
