#!/usr/bin/env bash
# CPU throughput rows for docs/BENCHMARKS.md: prefill/decode tok/s of the teachers with 1 thread
# and all threads. Usage: bench/run_cpu.sh [SHARED_DIR]   (qwen3-small needs ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${1:-../shared}
bash scripts/build.sh build >/dev/null
models=(models/qwen3-micro)
[ -d "$shared/teachers/qwen3-small" ] && models+=("$shared/teachers/qwen3-small")
[ -d "$shared/teachers/qwen3-moe" ] && models+=("$shared/teachers/qwen3-moe")
echo "# $(git rev-parse --short HEAD) $(lscpu | sed -n 's/^Model name: *//p') nproc=$(nproc)"
for m in "${models[@]}"; do
  for t in 1 "$(nproc)"; do
    OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t build/bench_model "$m" --prompt 128 --decode 64 --reps 3
  done
done
