#!/usr/bin/env bash
# Data-parallel scaling of GPU distillation (issue 12): bench_distill on 1, 2, 4 and 8 GPUs of
# this host (as many as it has, or AE_SCALE_GPUS="1 2"), Qwen3-8B shape at 1 x 4096 per GPU
# (random weights), MLA 512+64 and GateSWA 1-in-6 (W 1024), both stages in one run. N GPUs run
# N ranks (bench_distill --gpus N: NCCL), each one micro-batch of 1 x 4096 per step, so a step
# is N sequences; tokens/s is the group's. Efficiency(N) = tok/s(N) / (N x tok/s(1)). Prints
# the rows as they come and a markdown table at the end. Then MLA stage 2 with --train all
# (every parameter trains; AE_SCALE_TRAIN_ALL=0 leaves it out) on the same GPU counts: one GPU
# cannot hold 8B's fp32 AdamW states beside the weights and gradients, N ranks shard them.
#   bash bench/gpu_scale.sh [BUILD_DIR]          (default build-gpu)
# Environment: AE_BENCH_STEPS (timed steps per stage after 2 warm-up, default 4),
#   AE_SCALE_GPUS (GPU counts, default: 1 2 4 8 up to the host's count), AE_SCALE_SHAPE
#   ("8b qwen3-8b 1 4096", label config batch ctx), AE_BENCH_LOGDIR, AE_BENCH_ROW_TIMEOUT (420).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
steps=${AE_BENCH_STEPS:-4}
read -r label cfg batch ctx <<< "${AE_SCALE_SHAPE:-8b qwen3-8b 1 4096}"
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
counts=${AE_SCALE_GPUS:-}
if [ -z "$counts" ]; then
  for n in 1 2 4 8; do [ "$n" -le "$ngpu" ] && counts="$counts $n"; done
fi
logdir=${AE_BENCH_LOGDIR:-$(mktemp -d /tmp/gpu_scale.XXXXXX)}
mkdir -p "$logdir"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpus:   $ngpu x $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); counts:$counts"
echo "topo:"; nvidia-smi topo -m 2>/dev/null | head -n $((ngpu + 1)) | sed 's/^/  /'
echo "shape:  $label ($cfg) $batch x $ctx per GPU, $steps timed steps per stage; logs: $logdir"
peaks=$("$build/bench_distill" --peaks --device cuda)
echo "$peaks"
AE_BENCH_GEMM_PEAK=$(echo "$peaks" | sed -n 's/.*gemm \([0-9.]*\) TFLOP.*/\1/p')
export AE_BENCH_GEMM_PEAK
: > "$logdir/scale.jsonl"
for t in mla gateswa; do
  for n in $counts; do
    tag="$t-$n"
    gpus=()
    [ "$n" -gt 1 ] && gpus=(--gpus "$n")
    timeout "${AE_BENCH_ROW_TIMEOUT:-420}" "$build/bench_distill" --config "tests/fixtures/configs/$cfg" \
      --label "$label" --target "$t" --batch "$batch" --ctx "$ctx" --steps "$steps" --stage both \
      --device cuda --json "${gpus[@]}" > "$logdir/$tag.out" 2> "$logdir/$tag.err"
    rc=$?
    grep -v '^{' "$logdir/$tag.out"
    grep '^{' "$logdir/$tag.out" | sed "s/^{/{\"gpus\":$n,/" >> "$logdir/scale.jsonl"
    if [ $rc -ne 0 ]; then
      echo "bench_distill | $label | $t | $n GPUs | exit $rc; last lines of $logdir/$tag.err:"
      tail -n 4 "$logdir/$tag.err" | sed 's/^/    /'
    fi
  done
done
# --train all (stage 2 trains every parameter): fp32 AdamW states and masters of 8B are 96 GiB,
# too much beside the weights and gradients for one H200; with N ranks they are sharded (ZeRO-1)
if [ "${AE_SCALE_TRAIN_ALL:-1}" != 0 ]; then
  for n in $counts; do
    tag="all-mla-$n"
    gpus=()
    [ "$n" -gt 1 ] && gpus=(--gpus "$n")
    timeout "${AE_BENCH_ROW_TIMEOUT:-420}" "$build/bench_distill" --config "tests/fixtures/configs/$cfg" \
      --label "$label" --target mla --batch "$batch" --ctx "$ctx" --steps "$steps" --stage 2 \
      --train all --device cuda --json "${gpus[@]}" > "$logdir/$tag.out" 2> "$logdir/$tag.err"
    rc=$?
    grep -v '^{' "$logdir/$tag.out"
    grep '^{' "$logdir/$tag.out" | sed "s/^{/{\"gpus\":$n,/" >> "$logdir/scale.jsonl"
    if [ $rc -ne 0 ]; then
      echo "bench_distill | $label | mla train all | $n GPUs | exit $rc; last lines of $logdir/$tag.err:"
      tail -n 4 "$logdir/$tag.err" | sed 's/^/    /'
      grep -q '^{' "$logdir/$tag.out" || printf '{"gpus":%d,"target":"mla","train":"all","stage":2,"status":"failed","error":"exit %d: %s"}\n' \
        "$n" "$rc" "$(grep -v '^\s*$' "$logdir/$tag.err" | tail -n 1 | tr -d '"\\' | cut -c1-160)" >> "$logdir/scale.jsonl"
    fi
  done
fi
python3 - "$logdir/scale.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: (r["target"] + (" (train all)" if r.get("train") == "all" else ""), r["stage"])
base = {key(r): r["tok_s"] for r in rows if r["gpus"] == 1 and r.get("tok_s")}
print("\n| target | stage | GPUs | tokens/s | s/step | efficiency | peak GiB (rank 0) |")
print("|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (key(r), r["gpus"])):
    t, st = key(r)
    if not r.get("tok_s"):
        print(f"| {t} | {st} | {r['gpus']} | {r.get('status')}: {r.get('error','')[:100]} | | | |")
        continue
    b = base.get(key(r))
    eff = f"{100 * r['tok_s'] / (r['gpus'] * b):.1f}%" if b else "n/a"
    print(f"| {t} | {st} | {r['gpus']} | {r['tok_s']:.0f} | {r['step_s']:.3f} | {eff} | {r['peak_mem_gb']:.1f} |")
PY
