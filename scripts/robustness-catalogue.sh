#!/usr/bin/env bash
# Regenerates the catalogue of bad inputs in docs/ROBUSTNESS.md from the tests: runs the test
# programs that record the inputs they see refused (ae_test_catalogue, tests/util/testutil.h)
# with AE_CATALOGUE set, then renders their records between the catalogue markers
# (tools/robustness_catalogue.py). The catalogue is never edited by hand.
#
#   bash scripts/robustness-catalogue.sh [--check] [BUILD_DIR]    # BUILD_DIR default: build
#
# BUILD_DIR must hold a configured build (scripts/build.sh); the test programs are (re)built.
# --check: change nothing; fail (with a diff) when the committed catalogue is not what the tests
# give (CI). A test that fails, or is skipped for lack of ../shared, fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
check=()
if [ "${1:-}" = "--check" ]; then check=(--check); shift; fi
build=${1:-build}
# the test programs that record, in the catalogue's order
progs=(test_cli test_config test_safetensors test_tokenizer test_data test_robust_load
       test_robust_cli test_robust_run test_oom test_eval_tasks_cli test_eval_passkey test_comm)
for p in "${progs[@]}"; do
  grep -q ae_test_catalogue "tests/$p.c" || { echo "catalogue: tests/$p.c records nothing" >&2; exit 1; }
done
for f in tests/*.c; do # a test that records must be in the list
  p=$(basename "$f" .c)
  if grep -q 'ae_test_catalogue' "$f" && [[ " ${progs[*]} " != *" $p "* ]]; then
    echo "catalogue: $f records bad inputs but is not in this script's list" >&2
    exit 1
  fi
done
if ! command -v python3 >/dev/null; then # the renderer (a fresh CI machine may lack it)
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
  else
    echo "catalogue: needs python3 (apt-get install python3)" >&2
    exit 1
  fi
fi
[ -f "$build/CMakeCache.txt" ] || { echo "catalogue: no build in $build (bash scripts/build.sh $build)" >&2; exit 1; }
cmake --build "$build" -j"$(nproc)" --target "${progs[@]}" >/dev/null
records=$(mktemp "${TMPDIR:-/tmp}/ae-catalogue.XXXXXX")
trap 'rm -f "$records" "$records.log"' EXIT
regex="^($(IFS='|'; echo "${progs[*]}"))\$"
# AE_REQUIRE_SHARED: a check skipped for lack of ../shared would drop its records
if ! (cd "$build" && AE_CATALOGUE="$records" AE_REQUIRE_SHARED=1 \
      ctest -R "$regex" -j"$(nproc)" --no-tests=error --output-on-failure >"$records.log" 2>&1); then
  tail -50 "$records.log" >&2
  echo "catalogue: a test failed or was skipped (log above)" >&2
  exit 1
fi
python3 tools/robustness_catalogue.py "$records" --root "$PWD" --doc docs/ROBUSTNESS.md \
  --order "$(IFS=,; echo "${progs[*]}")" "${check[@]}"
