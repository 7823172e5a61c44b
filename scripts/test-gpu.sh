#!/usr/bin/env bash
# Runs every GPU test on a machine with an NVIDIA GPU: each CUDA op against the CPU reference
# (tests/test_backend_ops.c) and against the double-precision references of the op and gradient
# tests (tests/test_ops.c, test_grad_ops.c, test_train_ops.c: the "[cuda]" half of each), whole
# models (the teachers in ../shared and students of each target) against the CPU
# (tests/test_cuda_model.c), and every other tests/test_cuda_*.c program (test_cuda_paged: the
# serving engine's paged-cache ops). Prints the date, GPU and commit first so the log can be
# pasted into docs/ as it is.
#
#   bash scripts/test-gpu.sh                 # build with CUDA into build-gpu, then test
#   AE_GPU_BUILD=DIR AE_PREBUILT=1 bash scripts/test-gpu.sh   # test binaries built elsewhere
#   AE_GPU_JOBS=4 ...                        # 4 programs at a time (one GPU holds them; the
#                                            # logs are printed whole, in order, as each ends)
# On a lent GPU machine without the Debian dev packages: eval "$(bash dev/device-build.sh)"
# first (docs/CUDA.md), then AE_PREBUILT=1.
#
# A GPU test that finds no GPU fails here (AE_REQUIRE_GPU=1) instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${AE_GPU_BUILD:-build-gpu}
if [ -z "${AE_PREBUILT:-}" ]; then
  bash scripts/deps.sh
  bash scripts/build.sh "$build" -DAE_CUDA=ON
  echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted')" > "$build/COMMIT"
fi
# a prebuilt build names the commit it was built from
commit=$(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "== attnedit GPU tests"
echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $commit"
echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi not found')"
export AE_REQUIRE_GPU=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# prebuilt tests find this tree and this build's attnedit, wherever they were compiled
export AE_TEST_SOURCE_DIR=$PWD AE_TEST_CLI=$PWD/$build/attnedit
case "$build" in /*) AE_TEST_CLI=$build/attnedit ;; esac
status=0
# every GPU test program: the op tests (test_backend_ops: cuda against the cpu; test_ops,
# test_grad_ops and test_train_ops: every backend against the double references, whose cuda
# half runs here), and the test_cuda_* programs
# (the longest first, so that with AE_GPU_JOBS > 1 none of them starts late: their durations at
# 8 at a time on an H200, 2026-12-01, 150-310 s; the rest in the order below)
all=(test_backend_ops test_ops test_grad_ops test_train_ops)
for f in "$build"/test_cuda_*; do [ -x "$f" ] && all+=("$(basename "$f")"); done
slow=(test_cuda_moe_train test_cuda_moe_ffn test_cuda_model test_backend_ops test_cuda_train
      test_cuda_paged test_cuda_eval)
gpu_tests=()
for t in "${slow[@]}"; do [[ " ${all[*]} " == *" $t "* ]] && gpu_tests+=("$t"); done
for t in "${all[@]}"; do [[ " ${gpu_tests[*]} " != *" $t "* ]] && gpu_tests+=("$t"); done
# one program: its output, then "== NAME: exit R (S s)"; returns R
run_one() {
  local t=$1 start r
  echo
  echo "== $t"
  start=$(date +%s)
  if "$build/$t"; then r=0; else r=$?; fi
  echo "== $t: exit $r ($(( $(date +%s) - start )) s)"
  return "$r"
}
jobs=${AE_GPU_JOBS:-1}
logs=$(mktemp -d)
if [ "$jobs" -le 1 ]; then
  for t in "${gpu_tests[@]}"; do run_one "$t" | tee "$logs/$t.log" || true; done
else
  export -f run_one
  export build
  printf '%s\n' "${gpu_tests[@]}" |
    xargs -P "$jobs" -I{} bash -c 'run_one {} > "$0/{}.log" 2>&1; cat "$0/{}.log"; true' "$logs"
fi
# Exit 77 is a skip with its reason printed (a second GPU, ../shared missing): not a failure. A
# missing GPU is no skip here (AE_REQUIRE_GPU=1 makes it a failure).
failed=$(sed -n 's/^== \(.*\): exit \([0-9]*\) (.*/\1 \2/p' "$logs"/*.log | awk '$2 != 0 && $2 != 77 {print $1}')
skipped=$(sed -n 's/^== \(.*\): exit 77 (.*/\1/p' "$logs"/*.log)
rm -rf "$logs"
echo
[ -n "$skipped" ] && echo "skipped (exit 77, reasons above): "$skipped
if [ -n "$failed" ]; then
  status=1
  echo "GPU TESTS FAILED: "$failed
else
  echo "ALL GPU TESTS PASSED"
fi
exit "$status"
