#!/usr/bin/env bash
# Batch-1 decode op by op and as CUDA graphs (issue 7: decode >= 80% of the bandwidth limit), on
# random bf16 weights of the committed Qwen3-8B-shaped teacher, its MLA 512+64 and GateSWA
# students and Qwen3-30B-A3B, at 4K and 32K positions: each model's bench_infer prints a "decode"
# row (op by op), a "decode-graphs" row (the same cache, the steps recorded as CUDA graphs) and a
# "graphs" line (steps recorded, segments updated / instantiated, retries, failures). Then, for
# the teacher, the graphs with one graph per step (AE_CUDA_GRAPH_SEGMENT=0) instead of segments.
#   bash bench/gpu_graphs.sh [BUILD_DIR]      (default build-gpu; build with scripts/test-gpu.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
cfgs=tests/fixtures/configs
. bench/gpu_header.sh
bench_header "$build"
bench_peaks "$build/bench_infer" # the GEMM peak too: unused by decode rows
for m in qwen3-8b qwen3-8b-mla qwen3-8b-gateswa qwen3-30b-a3b; do
  "$build/bench_infer" --config "$cfgs/$m" --label "$m" --device cuda --decode-at 4096,32768 \
    --decode-steps 64 --graphs 0,1
done
AE_CUDA_GRAPH_SEGMENT=0 "$build/bench_infer" --config "$cfgs/qwen3-8b" \
  --label "qwen3-8b one-graph" --device cuda --decode-at 4096,32768 --decode-steps 64 --graphs 1
