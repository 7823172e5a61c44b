#!/usr/bin/env bash
# scripts/test-gpu.sh's summary, on stub programs in a fake prebuilt build folder (no GPU needed):
# a program that exits 77 (a skip with its reason printed) is listed as skipped and the run passes;
# any other non-zero exit fails the run and is named; with one program at a time and with several.
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fails=0
stub() { printf '#!/bin/sh\necho "%s"\nexit %d\n' "$2" "$3" > "$dir/$1" && chmod +x "$dir/$1"; }
for t in test_backend_ops test_ops test_grad_ops test_train_ops test_cuda_a; do stub "$t" "ok" 0; done
stub test_cuda_two "SKIP fewer than 2 GPUs" 77
# run JOBS EXPECTED_STATUS PATTERN...: every pattern must match a line of the output
run() {
  local jobs=$1 want=$2 out rc
  shift 2
  out=$(AE_PREBUILT=1 AE_GPU_BUILD="$dir" AE_GPU_JOBS="$jobs" bash "$src/scripts/test-gpu.sh" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL (jobs $jobs): exit $rc, expected $want"; echo "$out" | tail -5; fails=$((fails + 1)); return
  fi
  for pat in "$@"; do
    if ! grep -qx -- "$pat" <<< "$out"; then
      echo "FAIL (jobs $jobs): no line '$pat' in:"; echo "$out" | tail -5; fails=$((fails + 1))
    fi
  done
}
for jobs in 1 3; do
  run "$jobs" 0 "skipped (exit 77, reasons above): test_cuda_two" "ALL GPU TESTS PASSED"
done
stub test_cuda_a "broken" 3
for jobs in 1 3; do
  run "$jobs" 1 "skipped (exit 77, reasons above): test_cuda_two" "GPU TESTS FAILED: test_cuda_a"
done
[ "$fails" -eq 0 ] && echo "test_gpu_script: the summary of scripts/test-gpu.sh as expected (4 runs)"
exit $((fails > 0))
