#!/usr/bin/env bash
# ctest test_eval_tasks_lm_eval: attnedit eval tasks equals lm-evaluation-harness item by item on
# ../shared/teachers/qwen3-small and ../shared/data/eval (tools/check_eval_tasks.py), 0-shot and
# 2-shot on the first 5 items of each task; then MMLU (lm-eval's mmlu group) on the fixture
# tests/fixtures/eval_tasks/data/mmlu, 5-shot, 2 items per subject.
# Usage: test_eval_tasks_lm_eval.sh ATTNEDIT [PYTHON]
# The Python is $AE_PYTHON, else the second argument, else python3. Exit 77 (ctest: skipped),
# with the reason, when it lacks lm-eval or ../shared is absent (AE_REQUIRE_SHARED=1: a failure).
set -euo pipefail
attnedit=$1
py=${AE_PYTHON:-${2:-python3}}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${AE_SHARED_DIR:-$here/../shared}
if ! "$py" -c "import lm_eval, accelerate, torch, transformers" 2>/dev/null; then
  echo "SKIP test_eval_tasks_lm_eval: '$py' cannot import lm_eval, accelerate, torch and transformers"
  echo "  (pip install lm-eval==0.4.13 accelerate torch transformers==5.17.0, and set AE_PYTHON)"
  exit 77
fi
if [ ! -d "$shared/data/eval" ] || [ ! -d "$shared/teachers/qwen3-small" ]; then
  if [ "${AE_REQUIRE_SHARED:-0}" = 1 ]; then
    echo "FAIL test_eval_tasks_lm_eval: $shared/data/eval or $shared/teachers/qwen3-small not found"
    exit 1
  fi
  echo "SKIP test_eval_tasks_lm_eval: ../shared not found"
  exit 77
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for shots in 0 2; do
  rc=0
  "$py" "$here/tools/check_eval_tasks.py" --attnedit "$attnedit" --model "$shared/teachers/qwen3-small" \
    --data-dir "$shared/data/eval" --limit 5 --shots "$shots" >"$log" 2>&1 || rc=$?
  grep -v 'it/s\]\|examples/s\]' "$log" || true # progress bars
  [ "$rc" = 0 ] || exit 1
done
rc=0
"$py" "$here/tools/check_eval_tasks.py" --attnedit "$attnedit" --model "$shared/teachers/qwen3-small" \
  --data-dir "$here/tests/fixtures/eval_tasks/data" --tasks mmlu --limit 2 --shots 5 >"$log" 2>&1 || rc=$?
grep -v 'it/s\]\|examples/s\]' "$log" || true
[ "$rc" = 0 ] || exit 1
