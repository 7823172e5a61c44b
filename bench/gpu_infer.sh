#!/usr/bin/env bash
# GPU inference benchmark: attnedit (bench_infer), transformers (bench/hf_infer.py) and, when
# given, llama.cpp (bench/llama_infer.sh: llama-bench) on the same GPU in the same run, at
# Qwen3-8B and Qwen3-30B-A3B shapes with random bf16 weights (the committed configs in
# tests/fixtures/configs), teacher and students (attnedit only): prefill of CTX tokens and batch-1
# decode after CTX tokens (attnedit op by op and with CUDA graphs), CTX 4K and 32K.
#   bash bench/gpu_infer.sh [BUILD_DIR]      (default build-gpu; build with scripts/test-gpu.sh)
# One device call with all three: dev/device-bundle-infer.sh here, dev/device-run-infer.sh there.
# Environment: AE_BENCH_QUICK=1 measures 4K only; AE_BENCH_NO_HF=1 skips transformers;
# AE_LLAMA_BIN (llama-bench and its libraries) with AE_LLAMA_GGUF_PY (llama.cpp's gguf-py) adds
# llama.cpp, AE_LLAMA_TOKENIZER (a folder with the Qwen3 tokenizer.json) gives its GGUF files
# the real vocabulary instead of a synthetic one of the same size.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
cfgs=tests/fixtures/configs
ctx=4096,32768
[ -n "${AE_BENCH_QUICK:-}" ] && ctx=4096
. bench/gpu_header.sh
bench_header "$build"
bench_peaks "$build/bench_infer"
# A step that fails is reported and the others still run (one device call measures all three);
# the exit status then says how many failed.
failed=0
step() { "$@" || { echo "FAILED (exit $?): $*"; failed=$((failed + 1)); }; }
for m in qwen3-8b qwen3-8b-mla qwen3-8b-gateswa qwen3-30b-a3b qwen3-30b-a3b-mla; do
  step "$build/bench_infer" --config "$cfgs/$m" --label "$m" --device cuda --prefill "$ctx" \
    --decode-at "$ctx" --decode-steps 32 --reps 3
done
if [ -z "${AE_BENCH_NO_HF:-}" ]; then
  for m in qwen3-8b qwen3-30b-a3b; do
    # transformers under the machine's own library path (dev/device-unpack.sh: AE_HOST_LD_LIBRARY_PATH)
    LD_LIBRARY_PATH=${AE_HOST_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}} \
    step python3 bench/hf_infer.py --config "$cfgs/$m" --label "$m" --prefill "$ctx" --decode-at "$ctx" \
      --decode-steps 32 --reps 3
  done
fi
if [ -n "${AE_LLAMA_BIN:-}" ]; then
  step bash bench/llama_infer.sh "$AE_LLAMA_BIN" "${AE_LLAMA_GGUF_PY:?the gguf-py folder of llama.cpp}" \
    "${AE_LLAMA_TOKENIZER:-}" "$ctx"
fi
exit $((failed > 0))
