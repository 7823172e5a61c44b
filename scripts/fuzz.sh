#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, clang with ASan + UBSan) into build-fuzz; replays the
# saved reproducers of fuzz/crashes/<harness>/ (each must pass); then runs each harness for
# SECONDS (default 30) on a scratch copy of its seed corpus (fuzz/corpus/<harness>; new inputs go
# to build-fuzz/corpus/<harness>, never into the repository), two at a time. Fails if a
# reproducer still fails or a harness crashes, leaks, times out, runs out of memory or gets a
# sanitizer report; prints a summary table either way.
#
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]     # default: every harness, 30 s each
#
# Environment:
#   AE_FUZZ_JOBS=N      harnesses run side by side (default 2)
#   AE_FUZZ_TIMEOUT=S   per-input time limit in seconds (default 60)
#   AE_FUZZ_FORK=1      libFuzzer fork mode that keeps going after a crash (-fork=1
#                       -ignore_crashes=1 ...): every crash of the whole run is saved, and the run
#                       still fails at the end if there was one
#   AE_FUZZ_NO_BUILD=1  run the harnesses already in build-fuzz
# Crash, leak, timeout and OOM inputs are saved in build-fuzz/artifacts/<harness>/, logs in
# build-fuzz/logs/<harness>.log. Reproduce one with: build-fuzz/fuzz/<harness> FILE
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
all=(fuzz_safetensors fuzz_st_index fuzz_config fuzz_tokenizer_json fuzz_tokenize fuzz_tokfile
     fuzz_run_json fuzz_prepare fuzz_api_json fuzz_eval_tasks)
if [ $# -gt 0 ]; then harnesses=("$@"); else harnesses=("${all[@]}"); fi
jobs=${AE_FUZZ_JOBS:-2}
timeout=${AE_FUZZ_TIMEOUT:-60}
dir=build-fuzz

if [ -z "${AE_FUZZ_NO_BUILD:-}" ]; then
  bash scripts/deps.sh --fuzz
  cc=clang
  command -v clang-14 >/dev/null && cc=clang-14
  t0=$(date +%s)
  CC=$cc cmake -S . -B $dir -DAE_FUZZ=ON -DAE_BUILD_TESTS=OFF -DAE_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build $dir --target fuzz_all -j"$(nproc)"
  echo "fuzz: built the harnesses in $(( $(date +%s) - t0 )) s" >&2
fi

mkdir -p $dir/corpus $dir/artifacts $dir/logs
scratch=$(mktemp -d "${TMPDIR:-/tmp}/aefuzz.XXXXXX")
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_tmp=$(mktemp -d /dev/shm/aefuzz.XXXXXX) ||
  scratch_tmp=$scratch
trap 'rm -rf "$scratch" "$scratch_tmp"' EXIT
export AE_FUZZ_TMP=$scratch_tmp OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() { # harness
  local h=$1 bin=$dir/fuzz/$1 corpus=$dir/corpus/$1 art=$dir/artifacts/$1 log=$dir/logs/$1.log
  [ -x "$bin" ] || { echo "fuzz: no harness $bin" >&2; echo 99 >"$scratch/$h.rc"; return; }
  rm -rf "$corpus" "$art"
  mkdir -p "$corpus" "$art"
  cp fuzz/corpus/"$h"/* "$corpus"/
  local dict=() fork=()
  [ -f fuzz/"$h".dict ] && dict=(-dict=fuzz/"$h".dict)
  [ -n "${AE_FUZZ_FORK:-}" ] && fork=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  # The reproducers of crashes found before (fuzz/crashes/<harness>/) must pass now.
  local f nrep=0 nfail=0
  : >"$dir/logs/$h.replay.log"
  for f in fuzz/crashes/"$h"/*; do
    [ -f "$f" ] || continue
    nrep=$((nrep + 1))
    echo "== $f" >>"$dir/logs/$h.replay.log"
    "$bin" "$f" >>"$dir/logs/$h.replay.log" 2>&1 || nfail=$((nfail + 1))
  done
  echo "$nfail/$nrep" >"$scratch/$h.replay"
  local t0 rc=0
  t0=$(date +%s)
  "$bin" -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$art/" "${dict[@]}" "${fork[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  echo $(( $(date +%s) - t0 )) >"$scratch/$h.secs"
  echo $rc >"$scratch/$h.rc"
}

for h in "${harnesses[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "fuzz: $h (${secs} s)" >&2
  run_one "$h" &
done
wait

# Summary: runs, seconds, exec/s, coverage (edges at start -> end, new corpus units), crashes,
# and the known reproducers of fuzz/crashes/<harness>/ that still fail (failing/total).
failed=0
printf '\n%-20s %10s %5s %7s %13s %6s %8s %6s  %s\n' harness runs secs exec/s "cov" "+units" crashes known status
for h in "${harnesses[@]}"; do
  log=$dir/logs/$h.log
  rc=$(cat "$scratch/$h.rc" 2>/dev/null || echo 99)
  s=$(cat "$scratch/$h.secs" 2>/dev/null || echo 0)
  runs=$( (grep -ao 'stat::number_of_executed_units: [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')
  # fork mode: the last "#N: cov: ..." line
  [ -z "$runs" ] && runs=$( (grep -aoE '^#[0-9]+' "$log" || true) | tail -1 | tr -d '#')
  cov0=$( (grep -aoE 'cov: [0-9]+' "$log" || true) | head -1 | awk '{print $2}')
  cov1=$( (grep -aoE 'cov: [0-9]+' "$log" || true) | tail -1 | awk '{print $2}')
  units=$(( $(find "$dir/corpus/$h" -type f | wc -l) - $(find fuzz/corpus/"$h" -type f | wc -l) ))
  crashes=$(find "$dir/artifacts/$h" -type f 2>/dev/null | wc -l)
  reports=$(grep -acE 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|==FUZZ==|ParseDictionaryFile: error' "$log" 2>/dev/null || true)
  known=$(cat "$scratch/$h.replay" 2>/dev/null || echo "?/?")
  status=ok
  if [ "$rc" != 0 ] || [ "$crashes" -gt 0 ] || [ "${reports:-0}" -gt 0 ] || [ "${known%%/*}" != 0 ]; then
    status=FAIL
    failed=1
  fi
  runs=${runs:-0}
  eps=$(( s > 0 ? runs / s : runs ))
  printf '%-20s %10s %5s %7s %13s %6s %8s %6s  %s\n' "$h" "$runs" "$s" "$eps" "${cov0:-?}->${cov1:-?}" \
    "${units:-?}" "$crashes" "$known" "$status"
done
if [ $failed -ne 0 ]; then
  echo
  for h in "${harnesses[@]}"; do
    known=$(cat "$scratch/$h.replay" 2>/dev/null || echo "?/?")
    if [ "${known%%/*}" != 0 ]; then
      echo "== $h: known reproducers still failing ($known), log $dir/logs/$h.replay.log:"
      grep -aE '^== |runtime error:|ERROR: |==FUZZ==' "$dir/logs/$h.replay.log" | head -20 || true
    fi
    if [ -n "$(ls -A "$dir/artifacts/$h" 2>/dev/null)" ] || [ "$(cat "$scratch/$h.rc" 2>/dev/null)" != 0 ]; then
      echo "== $h: log $dir/logs/$h.log; inputs: $(ls "$dir/artifacts/$h" 2>/dev/null | tr '\n' ' ')"
      grep -aE -m 3 -A 12 'ERROR: |runtime error:|==FUZZ==' "$dir/logs/$h.log" | grep -av '^#[0-9]' |
        head -40 || true
    fi
  done
  echo "fuzz: FAILED (reproduce: $dir/fuzz/<harness> $dir/artifacts/<harness>/<file>)" >&2
  exit 1
fi
echo "fuzz: every harness ran ${secs} s without a crash or sanitizer report" >&2
