#!/usr/bin/env bash
# docs/RESULTS.md's qwen3-small results on one GPU in one device call (under 9 minutes on an
# H200): converts the qwen3-small teacher to a GateSWA and an MLA student with the commands of
# docs/RESULTS.md ("50 M tokens per student"), the budgets cut to AE_RESULTS_TOKENS per stage
# (default 12e6 + 12e6 per student instead of 25e6 + 25e6: about 75 s each, both in about
# 2.5 minutes), then teacher and both students side by side:
#   eval tasks    every task whose data is in the eval folder, full sets, 0-shot, one table
#                 (a column per model, differences, > 2 standard errors)
#   eval kl       the whole valid.txt, windows of 512 (RESULTS.md's table so far), then windows of
#                 the teacher's context (max_position_embeddings, 32768) unless AE_RESULTS_KL_CTX:
#                 the by-position table up to the context; both students in one pass
#   eval passkey  lengths 1024 .. 8192 tokens x 5 depths, 4 trials (teacher vs GateSWA as one
#                 table pair and heat map, then MLA)
# and prints the tables to paste into docs/RESULTS.md. Every step has a time limit (540 s in
# all), so a slow step cannot take the later ones with it (a step cut short says so).
#
#   bash bench/gpu_results.sh [BUILD_DIR] [SHARED_DIR]
# BUILD_DIR: the CUDA build (default $AE_BUILD, else .carry/build); SHARED_DIR: a folder laid
# out like ../shared with teachers/qwen3-small, data/eval and data/corpus/general/{train-000..003,
# valid}.txt (default $AE_SHARED_DIR, else .carry/shared, else ../shared).
# On a lent GPU machine (no ../shared there): here `AE_BUNDLE=results bash dev/device-bundle.sh`
# (packs the build's attnedit and that data, about 40 MB, into .carry), there
# `BENCH=results bash dev/device-run.sh` with .carry carried.
# Environment: AE_RESULTS_DIR (tables, JSON, logs, the passkey PNG; default a new /tmp folder),
# AE_RESULTS_WORK (token file and students; default a new /tmp folder), AE_RESULTS_TOKENS,
# AE_RESULTS_KL_CTX, AE_RESULTS_BATCH (eval tasks --batch, default 64), AE_RESULTS_DEVICE (cuda),
# AE_RESULTS_LIMIT (eval tasks --limit) and AE_RESULTS_CONVERT_ARGS (appended to both convert
# commands, e.g. "--ctx 64 --batch 2"): a quick check of the script on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-${AE_BUILD:-.carry/build}}
shared=${2:-${AE_SHARED_DIR:-}}
if [ -z "$shared" ]; then
  for d in .carry/shared ../shared; do [ -d "$d/teachers/qwen3-small" ] && { shared=$d; break; }; done
fi
bin=$build/attnedit
T=$shared/teachers/qwen3-small
corpus=$shared/data/corpus/general
evald=$shared/data/eval
for need in "$bin" "$T/config.json" "$corpus/valid.txt" "$corpus/train-000.txt" "$evald"; do
  [ -e "$need" ] || { echo "gpu_results: missing $need (BUILD_DIR=$build SHARED_DIR=${shared:-none})" >&2; exit 2; }
done
out=${AE_RESULTS_DIR:-$(mktemp -d /tmp/gpu_results.XXXXXX)}
work=${AE_RESULTS_WORK:-$(mktemp -d /tmp/gpu_results_work.XXXXXX)}
mkdir -p "$out" "$work"
tokens=${AE_RESULTS_TOKENS:-12e6}
batch=${AE_RESULTS_BATCH:-64}
dev=${AE_RESULTS_DEVICE:-cuda}
kl_ctx=${AE_RESULTS_KL_CTX:-}
t_start=$(date +%s)

echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit:  $(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu:     $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
echo "data:    $shared; results in $out; work folder $work"

# step NAME LIMIT_S CMD...: runs CMD with a time limit, stdout to $out/NAME.txt (and here),
# stderr to $out/NAME.log; says how long it took or that it was cut short.
step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo
  echo "== $name (limit ${limit} s): $*"
  timeout "$limit" "$@" > "$out/$name.txt" 2> "$out/$name.log"
  rc=$?
  cat "$out/$name.txt"
  if [ $rc -eq 124 ]; then echo "!! $name: cut short after ${limit} s (partial output above; $out/$name.log)"
  elif [ $rc -ne 0 ]; then echo "!! $name: exit $rc:"; tail -5 "$out/$name.log"
  fi
  echo "-- $name: $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - t_start )) s)"
  return $rc
}

step prepare 40 "$bin" prepare-data --model "$T" --out "$work/train.tok" "$corpus"/train-00[0-3].txt
common=(convert --device "$dev" --teacher "$T" --data "$work/train.tok" --ctx 512 --batch 32
        --stage1-tokens "$tokens" --stage2-tokens "$tokens" --log-every 200 --save-every 2000 --init teacher
        ${AE_RESULTS_CONVERT_ARGS:-})
# a student counts only when its conversion finished (a cut-short one leaves its initial weights)
done_students=()
step convert-gateswa 120 "$bin" "${common[@]}" --out "$work/gateswa" --target gateswa --full-every 4 --window 128 \
  && done_students+=(gateswa)
step convert-mla 120 "$bin" "${common[@]}" --out "$work/mla" --target mla --kv-lora-rank 48 --qk-rope-dim 16 \
  && done_students+=(mla)
for s in gateswa mla; do echo "convert $s, last lines:"; tail -3 "$out/convert-$s.log"; done
has() { [[ " ${done_students[*]-} " == *" $1 "* ]]; }

models=$T
for s in gateswa mla; do has $s && models="$models,$work/$s"; done
tasks=""
# folder:task for every task of docs/EVAL.md; a task runs when its folder is in the eval data
for ft in arc_easy:arc_easy arc_challenge:arc_challenge hellaswag:hellaswag piqa:piqa boolq:boolq \
          openbookqa:openbookqa winogrande:winogrande sciq:sciq lambada:lambada_openai mmlu:mmlu; do
  [ -d "$evald/${ft%%:*}" ] && tasks="$tasks${tasks:+,}${ft#*:}"
done
echo
echo "models: $models"
echo "tasks:  $tasks (full sets, 0-shot)"
step tasks 110 "$bin" eval tasks --model "$models" --tasks "$tasks" --data-dir "$evald" --batch "$batch" \
  --device "$dev" ${AE_RESULTS_LIMIT:+--limit "$AE_RESULTS_LIMIT"}
echo "last progress line per task and model (items/s):"
tr '\r' '\n' < "$out/tasks.log" | grep -E "^[a-z_]+ \[.*\]: ([0-9]+)/\1 items" | sed 's/ *$//'

students=""
for s in gateswa mla; do has $s && students="$students${students:+,}$work/$s"; done
if [ -n "$students" ]; then # windows of 512 (the RESULTS.md table's), then the long-context one
  step kl-512 30 "$bin" eval kl --teacher "$T" --model "$students" --file "$corpus/valid.txt" --ctx 512 \
    --device "$dev"
  step kl 50 "$bin" eval kl --teacher "$T" --model "$students" --file "$corpus/valid.txt" \
    ${kl_ctx:+--ctx "$kl_ctx"} --device "$dev"
fi
lengths=1024,2048,4096,8192
pk=(--lengths "$lengths" --depths 0,0.25,0.5,0.75,1 --trials 4 --seed 1 --device "$dev")
if has gateswa; then
  step passkey-gateswa 40 "$bin" eval passkey "$T" --compare "$work/gateswa" "${pk[@]}" \
    --json "$out/passkey-gateswa.json" --png "$out/passkey-qwen3-small-gateswa.png"
else
  step passkey-teacher 40 "$bin" eval passkey "$T" "${pk[@]}" --json "$out/passkey-teacher.json"
fi
if has mla; then
  step passkey-mla 30 "$bin" eval passkey "$work/mla" "${pk[@]}" --json "$out/passkey-mla.json"
fi
echo
echo "total: $(( $(date +%s) - t_start )) s; tables and logs in $out"
