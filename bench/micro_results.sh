#!/usr/bin/env bash
# Reproduces the tables of docs/RESULTS.md: qwen3-micro converted to MLA and to GateSWA, with
# the ablations (stage 1 only, stage 2 only, stage 1 then 2; --init random vs teacher), every
# run on the same token budget, evaluated with `attnedit eval kl` on held-out text.
#
# usage: bench/micro_results.sh BIN TEACHER TRAIN_TOK VALID_TXT OUTDIR
#   TRAIN_TOK: `attnedit prepare-data --model TEACHER --out TRAIN_TOK train-000.txt train-001.txt`
#   VALID_TXT: ../shared/data/corpus/general/valid.txt (its first 600,000 bytes are scored)
# The 8 runs go in parallel, 2 threads each (16 cores); each is capped at 420 s of wall time.
set -u
BIN=$1 T=$2 DATA=$3 VALID=$4 OUT=$5
BUDGET=${BUDGET:-500000}   # tokens per run, split evenly when both stages run
HALF=$((BUDGET / 2))
mkdir -p "$OUT"
head -c 600000 "$VALID" > "$OUT/valid-600k.txt"
COMMON=(--teacher "$T" --data "$DATA" --ctx 256 --batch 4 --stage1-lr 3e-3 --stage2-lr 1e-3
        --log-every 20 --force)
MLA=(--target mla --kv-lora-rank 24 --qk-rope-dim 8)      # 24 + 8 = 32 values/token: -75% KV
GSWA=(--target gateswa --full-every 2 --window 64)          # layers 1, 3 full; window = ctx/4

run() {
  local name=$1
  shift
  OMP_NUM_THREADS=2 timeout 420 "$BIN" convert "${COMMON[@]}" "$@" --out "$OUT/$name" \
    > "$OUT/$name.log" 2>&1
  echo "convert exit $?" >> "$OUT/$name.log"
  OMP_NUM_THREADS=2 "$BIN" eval kl --teacher "$T" --model "$OUT/$name" --file "$OUT/valid-600k.txt" \
    --ctx 256 --json > "$OUT/$name.kl.json" 2>> "$OUT/$name.log"
}

for tgt in mla gswa; do
  if [ $tgt = mla ]; then spec=("${MLA[@]}"); else spec=("${GSWA[@]}"); fi
  run ${tgt}_s12_teacher "${spec[@]}" --init teacher --stage1-tokens $HALF --stage2-tokens $HALF &
  run ${tgt}_s12_random "${spec[@]}" --init random --stage1-tokens $HALF --stage2-tokens $HALF &
  run ${tgt}_s1_random "${spec[@]}" --init random --stage1-tokens $BUDGET --stage2-tokens 0 &
  run ${tgt}_s2_random "${spec[@]}" --init random --stage1-tokens 0 --stage2-tokens $BUDGET &
done
wait
for f in "$OUT"/*.kl.json; do echo "$(basename "$f" .kl.json) $(cat "$f")"; done
