#!/usr/bin/env bash
# GPU inference benchmark: attnedit (bench_infer) and transformers (bench/hf_infer.py) on the same
# GPU in the same run, at Qwen3-8B and Qwen3-30B-A3B shapes with random bf16 weights (the
# committed configs in tests/fixtures/configs), teacher and students.
#   bash bench/gpu_infer.sh [BUILD_DIR]      (default build-gpu; build with scripts/test-gpu.sh)
# Environment: AE_BENCH_QUICK=1 measures 4K only; AE_BENCH_NO_HF=1 skips transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
cfgs=tests/fixtures/configs
ctx=4096,32768
[ -n "${AE_BENCH_QUICK:-}" ] && ctx=4096
echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
peaks=$("$build/bench_infer" --peaks --device cuda)
echo "$peaks"
export AE_BENCH_GEMM_PEAK=$(echo "$peaks" | sed -n 's/.*gemm \([0-9.]*\) TFLOP.*/\1/p')
export AE_BENCH_COPY_PEAK=$(echo "$peaks" | sed -n 's/.*copy \([0-9.]*\) GB.*/\1/p')
for m in qwen3-8b qwen3-8b-mla qwen3-8b-gateswa qwen3-30b-a3b qwen3-30b-a3b-mla; do
  "$build/bench_infer" --config "$cfgs/$m" --label "$m" --device cuda --prefill "$ctx" \
    --decode-at "$ctx" --decode-steps 32 --reps 3
done
if [ -z "${AE_BENCH_NO_HF:-}" ]; then
  for m in qwen3-8b qwen3-30b-a3b; do
    # transformers under the machine's own library path (dev/device-unpack.sh: AE_HOST_LD_LIBRARY_PATH)
    LD_LIBRARY_PATH=${AE_HOST_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}} \
    python3 bench/hf_infer.py --config "$cfgs/$m" --label "$m" --prefill "$ctx" --decode-at "$ctx" \
      --decode-steps 32 --reps 3
  done
fi
