#!/usr/bin/env bash
# Resume soak: a small conversion of the bundled teacher (models/qwen3-micro, both stages) is run
# once uninterrupted, then again while being killed with SIGKILL at random moments, many times
# in a row, continuing after each kill as a user would (`convert --resume`; `--restart` or the
# first command again only when the run had no checkpoint yet). The killed run must end
# bit-identical to the uninterrupted one: model.safetensors, config.json, the final checkpoint,
# conversion.json (but its wall time) and every metrics.jsonl record (but its timings); no
# temporary or .old folder may be left; a resume must never refuse, and never continue from an
# older checkpoint than the one on disk before the kill (a lost checkpoint).
#
# Half of the kills come after a random delay (during steps, loading, writes), half at an exact
# point of a write through the test hook AE_TEST_KILL_POINT (src/core/killpoint.h): inside a
# checkpoint write (params written, state.json not), with the temporary folder complete, between
# the two renames, after them, and before an atomic file's rename (state.json, model,
# conversion.json). When a round finishes before the kills are spent, it is checked and a new
# round starts. A summary says where the kills landed.
#
# usage: scripts/soak-resume.sh [--kills N] [--seed S] [--targets "mla gateswa"]
#                               [--attnedit PATH] [--work DIR] [--keep]
#   --kills N     kills per target (default 30)
#   --seed S      seed of the random choices (default: from the clock; printed, to reproduce)
#   --attnedit    the binary (default build/attnedit)
#   --work DIR    scratch folder (default a new one under ${TMPDIR:-/tmp}, removed unless --keep)
# Exit status 0 when every round matched, 1 otherwise (the failing attempt's log is printed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kills=30
seed=$(( $(date +%s%N) % 1000000 ))
targets="mla gateswa"
bin=$root/build/attnedit
work=""
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --kills) kills=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --attnedit) bin=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--kills N] [--seed S] [--targets \"mla gateswa\"] [--attnedit PATH] [--work DIR] [--keep]" >&2
       exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "soak: no attnedit binary at $bin (build first, or --attnedit PATH)" >&2; exit 2; }
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/ae-soak.XXXXXX"); fi
mkdir -p "$work"
if [ $keep -eq 0 ]; then trap 'rm -rf "$work"' EXIT; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
unset AE_TEST_KILL_POINT AE_TEST_KILL_AT_STEP
RANDOM=$seed
echo "soak: seed $seed, $kills kills per target ($targets), $bin, in $work"

teacher=$root/models/qwen3-micro
tokens=$work/train.tok
"$bin" prepare-data --model "$teacher" --out "$tokens" "$root/data/sample.txt" >/dev/null 2>&1
# 64 tokens per step: stage 1 10 steps, stage 2 4 steps; checkpoints every 2 steps; progress
# lines every 3 steps (so that lines span resume points)
s1=640 s2=256 save_every=2 steps=$(( 10 + 4 )) # (stage 1 has 10: ckpt_pos below)
common=(--data "$tokens" --ctx 32 --batch 2 --stage1-tokens $s1 --stage2-tokens $s2
        --save-every $save_every --log-every 3 --seed 7)
points=(ckpt-params dir-filled dir-old-moved dir-renamed file-synced step)

declare -A landed
failures=0
fail() { # message, log file
  echo "soak: FAIL: $1" >&2
  [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/    | /' "$2" >&2
  failures=$((failures + 1))
}

# checkpoint position "stage*1000000+step" (checkpoint/, else checkpoint.old/), or -1
ckpt_pos() {
  local f=$1/checkpoint/state.json
  [ -f "$f" ] || f=$1/checkpoint.old/state.json
  [ -f "$f" ] || { echo -1; return; }
  local st sp
  st=$(sed -n 's/^[[:space:]]*"stage":[[:space:]]*\([0-9]*\).*/\1/p' "$f")
  sp=$(sed -n 's/^[[:space:]]*"step":[[:space:]]*\([0-9]*\).*/\1/p' "$f")
  echo $(( st * 1000000 + sp ))
}

metrics_set() { sed -E 's/,"tokens_per_s":[^,]*,"elapsed_s":[^,}]*//' "$1/metrics.jsonl" | sort -u; }

# the finished run against the reference
check_round() { # run ref
  local run=$1 ref=$2 f ok=1
  for f in model.safetensors config.json generation_config.json tokenizer.json tokenizer_config.json \
           checkpoint/params.safetensors checkpoint/state.json; do
    cmp -s "$run/$f" "$ref/$f" || { fail "$f differs from the uninterrupted run's"; ok=0; }
  done
  diff <(grep -v '"wall_s"' "$run/conversion.json") <(grep -v '"wall_s"' "$ref/conversion.json") >/dev/null ||
    { fail "conversion.json differs (wall time aside)"; ok=0; }
  diff <(metrics_set "$run") <(metrics_set "$ref") > "$work/metrics.diff" ||
    { fail "metrics.jsonl records differ (timings aside)" "$work/metrics.diff"; ok=0; }
  local left
  left=$(cd "$(dirname "$run")" && find "$(basename "$run")"* -maxdepth 1 \( -name '*.tmp.*' -o -name '*.old' \) | head -5) || true
  [ -z "$left" ] || { fail "left behind: $left"; ok=0; }
  [ $ok -eq 1 ]
}

# where a kill landed: the hook's point, or the last progress line and any write in progress
classify() { # run log pid plan
  local run=$1 log=$2 pid=$3 plan=$4 where w phase
  w=$(cd "$(dirname "$run")" && find "$(basename "$run")"* -name "*.tmp.$pid" 2>/dev/null | head -1) || true
  # the last progress line of the killed process: "stage S  step k/N"
  phase=$(grep -E '^stage [12]  step' "$log" | tail -1 |
          awk '{split($4, k, "/"); print (k[1] == k[2] ? "end of stage " $2 : "stage " $2)}') || true
  [ -n "$phase" ] || phase="before its first progress line"
  if [ "${plan%%:*}" = point ]; then
    where="point ${plan#point:}"
    where="${where%:*}, $phase"
  else
    where="timer, $phase"
  fi
  case $w in
    "") ;;
    */checkpoint.tmp.*) where="$where, in a checkpoint write" ;;
    */*) where="$where, writing ${w#*/}" ;;
    *) where="$where, writing the student folder" ;;
  esac
  where=${where%.tmp.$pid}
  landed[$where]=$(( ${landed[$where]:-0} + 1 ))
}

t_start=$(date +%s)
for target in $targets; do
  case $target in
    mla) targs=(--target mla --kv-lora-rank 32 --qk-rope-dim 8) ;;
    gateswa) targs=(--target gateswa --window 8 --full-every 2 --sinks) ;;
    *) echo "soak: unknown target $target" >&2; exit 2 ;;
  esac
  ref=$work/ref-$target run=$work/run-$target
  t0=$(date +%s%N)
  "$bin" convert --teacher "$teacher" "${targs[@]}" "${common[@]}" --out "$ref" 2>"$work/ref.log" ||
    { fail "the uninterrupted $target run failed" "$work/ref.log"; continue; }
  ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "soak: $target: uninterrupted run ${ref_ms} ms"
  done_kills=0 rounds=0 attempts=0
  rm -rf "$run" "$run".*
  while :; do
    attempts=$((attempts + 1))
    if [ ! -d "$run" ]; then
      cmd=(convert --teacher "$teacher" "${targs[@]}" "${common[@]}" --out "$run") kind=start
    elif [ "$(ckpt_pos "$run")" -ge 0 ]; then
      cmd=(convert --resume "$run") kind=resume
    else
      cmd=(convert --restart "$run") kind=restart
    fi
    before=$(ckpt_pos "$run")
    # steps left from the checkpoint: the kill is drawn within what this run has left to do
    if [ "$before" -lt 0 ]; then left=$steps
    elif [ $((before / 1000000)) -ge 2 ]; then left=0
    else left=$(( steps - (before / 1000000) * 10 - before % 1000000 )); fi
    plan=none
    if [ $done_kills -lt $kills ]; then
      if [ $((RANDOM % 2)) -eq 0 ]; then
        max_ms=$(( ref_ms * (left + 1) / (steps + 1) ))
        plan="timer:$(( (RANDOM * 32768 + RANDOM) % (max_ms + 1) ))"
      else
        p=${points[$((RANDOM % ${#points[@]}))]}
        writes=$(( left / save_every + 3 ))
        case $p in
          step) n=$(( RANDOM % (left + 1) + 1 )) ;;
          file-synced) n=$(( RANDOM % (2 * writes) + 1 )) ;;
          *) n=$(( RANDOM % writes + 1 )) ;;
        esac
        plan="point:$p:$n"
      fi
    fi
    log=$work/attempt.log
    if [ "${plan%%:*}" = point ]; then
      AE_TEST_KILL_POINT=${plan#point:} "$bin" "${cmd[@]}" 2>"$log" & pid=$!
    else
      "$bin" "${cmd[@]}" 2>"$log" & pid=$!
      if [ "${plan%%:*}" = timer ]; then
        ms=${plan#timer:}
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        kill -KILL $pid 2>/dev/null || true
      fi
    fi
    rc=0
    { wait $pid; } 2>/dev/null || rc=$? # (without bash's "Killed" notice)
    if [ $rc -eq 0 ]; then
      rounds=$((rounds + 1))
      if ! check_round "$run" "$ref"; then
        fail "$target round $rounds (seed $seed) does not match the uninterrupted run"
        break
      fi
      [ $done_kills -lt $kills ] || break
      rm -rf "$run" "$run".*
      continue
    fi
    if [ $rc -ne 137 ]; then
      fail "$target: \`attnedit ${cmd[*]}\` ($kind, plan $plan) exited $rc" "$log"
      break
    fi
    done_kills=$((done_kills + 1))
    classify "$run" "$log" $pid "$plan"
    after=$(ckpt_pos "$run")
    if [ $kind = resume ] && [ "$after" -lt "$before" ]; then
      fail "$target: a kill ($plan) lost the checkpoint: position $before before, $after after" "$log"
      break
    fi
    if [ $attempts -gt $(( 6 * kills + 20 )) ]; then fail "$target: no progress after $attempts attempts"; break; fi
  done
  echo "soak: $target: $done_kills kills, $attempts runs, $rounds finished round(s) checked"
done
t_total=$(( $(date +%s) - t_start ))

echo "soak: where the kills landed:"
for k in "${!landed[@]}"; do printf '  %4d  %s\n' "${landed[$k]}" "$k"; done | sort -k2
if [ $failures -eq 0 ]; then
  echo "soak: PASS: every round bit-identical to the uninterrupted run (seed $seed, ${t_total} s)"
else
  echo "soak: FAIL: $failures failure(s) (seed $seed; rerun with --seed $seed --keep to inspect)"
  exit 1
fi
