#!/usr/bin/env bash
# GPU distillation benchmark: attnedit (bench_distill) and the PyTorch peer (torch_attnedit.py,
# ../shared/peers; carried as .carry/peers by dev/device-bundle.sh) on the same GPU in the same
# run, random weights, the peer's shapes and targets: Qwen3-1.7B at 2 x 4096 and Qwen3-8B at
# 1 x 4096; MLA 512+64 and GateSWA 1-in-6, W = 1024. Prints tokens/s of stage 1 and stage 2,
# peak memory, the ratios attnedit / peer and MFU (model FLOPs / the bf16 GEMM rate measured
# here; formula in bench/bench_distill.c) for every row, as a markdown table at the end.
# The Qwen3-8B rows run twice on the attnedit side: AdamW moments in fp32 (the default) and
# with --optim-state 8bit (block-quantised moments, docs/DISTILL.md), the latter also with
# --grad-dtype bf16 (optim "8bit+bf16g": bf16 gradients, 2 bytes a trained value less); the peer
# keeps fp32 moments and gradients.
#   bash bench/gpu_distill.sh [BUILD_DIR] [PEER_SCRIPT]   (default build-gpu; the peer is found
#                                                          in .carry/peers or ../shared/peers)
# Environment:
#   AE_BENCH_FULL=1      also the optional rows: Qwen3-8B at 1 x 32768 (the peer too: its speed
#                        or its out-of-memory) and Qwen3-30B-A3B at 1 x 4096 (attnedit only, both
#                        stages: stage 2 trains through the 48 MoE layers; the peer has no MoE
#                        shape); AE_BENCH_FULL=only runs only those (the default
#                        set and the optional one each fit one 10-minute device call)
#   AE_BENCH_STEPS       timed steps per stage after 2 warm-up steps, both sides (default 4;
#                        AE_BENCH_STEPS_32K for the 32K rows, default 2)
#   AE_BENCH_NO_PEER=1   attnedit only
#   AE_BENCH_ONLY=8b     only the rows of these shapes (comma-separated: 1.7b, 8b, 30b-a3b)
#   AE_BENCH_OPTIM8=0    leave out the --optim-state 8bit rows (and the 8bit+bf16g ones)
#   AE_BENCH_BF16G=0     leave out the --optim-state 8bit --grad-dtype bf16 rows
#   AE_BENCH_KEEP=0      leave out the --stage2-acts keep rows (Qwen3-1.7B fp32, Qwen3-8B
#                        8bit+bf16g: stage 2 keeps the attention activations, "+keep")
#   AE_BENCH_TMP         folder for bench_distill's run folders (stage-end checkpoints of several
#                        GiB, removed after each run; default /dev/shm when it has 64 GiB free,
#                        else /tmp)
#   AE_BENCH_LOGDIR      where the JSON lines and each run's stderr are kept (default: a new
#                        folder under /tmp, printed)
#   AE_BENCH_REPEAT=N    the default set N times, attnedit's rows then the peer's in each round
#                        (run-to-run spread is 1-2% on both sides, so a ratio near a goal
#                        needs more than one round); the table then gives each side's median
#                        tok/s over the rounds, their ratio, and the per-round ratios' range
#                        ("1.60 (1.58-1.62)"; a round's ratio = that round's attnedit / peer).
#                        The optional rows (AE_BENCH_FULL) run once.
# Default set: about 5-6 minutes on an H200 (most of it model set-up: the student's random init
# on the host, the stage-end checkpoints, the peer's import and compile), not the timed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
peer=${2:-}
if [ -z "$peer" ]; then
  for p in .carry/peers/torch_attnedit.py ../shared/peers/torch_attnedit.py; do
    if [ -f "$p" ]; then peer=$p; break; fi
  done
fi
cfgs=tests/fixtures/configs
steps=${AE_BENCH_STEPS:-4}
steps32=${AE_BENCH_STEPS_32K:-2}
full=${AE_BENCH_FULL:-0}
logdir=${AE_BENCH_LOGDIR:-$(mktemp -d /tmp/gpu_distill.XXXXXX)}
mkdir -p "$logdir"
if [ -z "${AE_BENCH_TMP:-}" ]; then
  shm=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
  if [ -n "$shm" ] && [ "$shm" -gt $((64 * 1024 * 1024)) ]; then export AE_BENCH_TMP=/dev/shm; else export AE_BENCH_TMP=/tmp; fi
fi
echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
echo "peer:   ${peer:-none} ($(python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null || echo 'torch/transformers not importable'))"
echo "steps:  $steps timed per stage after 2 warm-up (32K rows: $steps32); logs: $logdir; run folders: $AE_BENCH_TMP"
t_start=$(date +%s)

peaks=$("$build/bench_distill" --peaks --device cuda)
echo "$peaks"
AE_BENCH_GEMM_PEAK=$(echo "$peaks" | sed -n 's/.*gemm \([0-9.]*\) TFLOP.*/\1/p')
export AE_BENCH_GEMM_PEAK

# attnedit: one bench_distill run (both stages) per shape and target
ae_row() { # label config batch ctx target steps [optim: fp32 (default) | 8bit | 8bit+bf16g, each +keep]
  case ",${AE_BENCH_ONLY:-$1}," in *",$1,"*) ;; *) return 0 ;; esac
  local optim="${7:-fp32}"
  local tag="$1-$3x$4-$5-$optim"
  local state="${optim%%+*}" grads=fp32 acts=recompute # "8bit+bf16g": 8-bit moments, bf16 gradients
  case "$optim" in *bf16g*) grads=bf16 ;; esac
  case "$optim" in *keep*) acts=keep ;; esac # "+keep": --stage2-acts keep
  timeout "${AE_BENCH_ROW_TIMEOUT:-420}" "$build/bench_distill" --config "$cfgs/$2" --label "$1" \
    --target "$5" --batch "$3" --ctx "$4" --steps "$6" --stage both --device cuda --json \
    --optim-state "$state" --grad-dtype "$grads" --stage2-acts "$acts" \
    2> "$logdir/ae-$tag.err" > "$logdir/ae-$tag.out"
  local rc=$?
  grep -v '^{' "$logdir/ae-$tag.out"
  grep '^{' "$logdir/ae-$tag.out" | sed "s/^{/{\"round\": ${round:-1}, /" >> "$logdir/ae.jsonl"
  if [ $rc -ne 0 ]; then
    echo "bench_distill | $1 | $5 | $3 x $4 | exit $rc; last lines of $logdir/ae-$tag.err:"
    tail -n 3 "$logdir/ae-$tag.err" | sed 's/^/    /'
    if ! grep -q '^{' "$logdir/ae-$tag.out"; then # no row at all: record the failure
      printf '{"round": %d, "bench":"bench_distill","shape":"%s","target":"%s","batch":%d,"ctx":%d,"optim_state":"%s","grad_dtype":"%s","stage":0,"status":"failed","error":"exit %d"}\n' \
        "${round:-1}" "$1" "$5" "$3" "$4" "$state" "$grads" "$rc" >> "$logdir/ae.jsonl"
    fi
  fi
}

# the peer: one process for the given targets; a target without its JSON line is recorded as
# OOM (torch.OutOfMemoryError / CUDA out of memory) or as the failure's last line
peer_row() { # shape batch ctx targets steps
  [ -n "${AE_BENCH_NO_PEER:-}" ] && return 0
  case ",${AE_BENCH_ONLY:-$1}," in *",$1,"*) ;; *) return 0 ;; esac
  if [ -z "$peer" ]; then echo "peer | $1 | not run: torch_attnedit.py not found"; return 0; fi
  local tag="$1-$2x$3-${4//,/+}"
  # the peer under the machine's own library path (dev/device-unpack.sh: ours hides cuDNN
  # attention from PyTorch, and the MLA peer then falls back to a 7.7x slower SDPA kernel)
  LD_LIBRARY_PATH=${AE_HOST_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}} \
  timeout "${AE_BENCH_ROW_TIMEOUT:-420}" python3 "$peer" --shape "$1" --batch "$2" --ctx "$3" \
    --window 1024 --steps "$5" --targets "$4" > "$logdir/peer-$tag.out" 2> "$logdir/peer-$tag.err"
  local rc=$?
  grep '^{' "$logdir/peer-$tag.out" | sed "s/^{/{\"round\": ${round:-1}, /" | tee -a "$logdir/peer.jsonl" | sed 's/^/peer | /'
  local why=""
  if [ $rc -ne 0 ]; then
    if grep -qE 'OutOfMemoryError|CUDA out of memory' "$logdir/peer-$tag.err"; then why=OOM
    elif [ $rc -eq 124 ]; then why="timeout"
    else why="failed (exit $rc): $(grep -v '^\s*$' "$logdir/peer-$tag.err" | tail -n 1 | tr -d '"\\' | cut -c1-200)"; fi
    echo "peer | $1 | $2 x $3 | $4 | $why"
  fi
  for t in ${4//,/ }; do
    if ! grep -q "\"target\": \"$t\"" "$logdir/peer-$tag.out"; then
      printf '{"round": %d, "shape": "%s", "target": "%s", "batch": %d, "ctx": %d, "error": "%s"}\n' \
        "${round:-1}" "$1" "$t" "$2" "$3" "${why:-no result}" >> "$logdir/peer.jsonl"
    fi
  done
}

touch "$logdir/ae.jsonl" "$logdir/peer.jsonl"
repeat=${AE_BENCH_REPEAT:-1}
case "$repeat" in ''|*[!0-9]*|0) echo "gpu_distill.sh: AE_BENCH_REPEAT='$repeat' is not a positive whole number" >&2; exit 2 ;; esac
if [ "$full" != only ]; then
  for round in $(seq 1 "$repeat"); do
    [ "$repeat" -gt 1 ] && echo "== round $round of $repeat"
    for t in mla gateswa; do ae_row 1.7b qwen3-1.7b 2 4096 $t "$steps"; done
    if [ "${AE_BENCH_KEEP:-1}" != 0 ]; then
      for t in mla gateswa; do ae_row 1.7b qwen3-1.7b 2 4096 $t "$steps" fp32+keep; done
    fi
    for t in mla gateswa; do ae_row 8b qwen3-8b 1 4096 $t "$steps"; done
    if [ "${AE_BENCH_OPTIM8:-1}" != 0 ]; then
      for t in mla gateswa; do ae_row 8b qwen3-8b 1 4096 $t "$steps" 8bit; done
      if [ "${AE_BENCH_BF16G:-1}" != 0 ]; then
        for t in mla gateswa; do ae_row 8b qwen3-8b 1 4096 $t "$steps" 8bit+bf16g; done
        if [ "${AE_BENCH_KEEP:-1}" != 0 ]; then
          for t in mla gateswa; do ae_row 8b qwen3-8b 1 4096 $t "$steps" 8bit+bf16g+keep; done
        fi
      fi
    fi
    peer_row 1.7b 2 4096 mla,gateswa "$steps"
    peer_row 8b 1 4096 mla,gateswa "$steps"
  done
fi
round=1
if [ "$full" = 1 ] || [ "$full" = only ]; then
  for t in mla gateswa; do ae_row 8b qwen3-8b 1 32768 $t "$steps32"; done
  # one peer process per target: an OOM of one target does not hide the other
  for t in mla gateswa; do peer_row 8b 1 32768 $t "$steps32"; done
  for t in mla gateswa; do ae_row 30b-a3b qwen3-30b-a3b 1 4096 $t "$steps"; done
fi
echo "total: $(( $(date +%s) - t_start )) s"

python3 - "$logdir/ae.jsonl" "$logdir/peer.jsonl" <<'EOF'
import json, sys
def rows(p):
    out = []
    for line in open(p):
        line = line.strip()
        if line.startswith("{"):
            try: out.append(json.loads(line))
            except ValueError: pass
    return out
ae, peer = rows(sys.argv[1]), rows(sys.argv[2])
gemm = next((r["gemm_tflops"] for r in ae if r.get("gemm_tflops")), 0)
print(f"\nbf16 GEMM peak: {gemm:.1f} TFLOP/s. ratio = attnedit / peer (tok/s: > 1 is faster; peak: < 1 is less memory).")
print("MFU = model FLOPs per token (bench/bench_distill.c) x tok/s / GEMM peak, the same FLOPs for both sides.\n")
print("optim = attnedit's AdamW moments (--optim-state), +bf16g: bf16 gradients (--grad-dtype bf16), "
      "+keep: stage 2 keeps the attention activations (--stage2-acts keep); "
      "the peer keeps fp32 moments and gradients.\n")
def optim_of(r):
    o = r.get("optim_state", "fp32")
    o += "+bf16g" if r.get("grad_dtype", "fp32") == "bf16" else ""
    return o + "+keep" if r.get("stage2_acts") == "keep" else o
from statistics import median
partial = {(r["shape"], r["batch"], r["ctx"], r["target"], optim_of(r))
           for r in ae if r.get("status") != "ok"}
groups = {}  # (shape, batch, ctx, target, optim, stage) -> its rows, one a round (AE_BENCH_REPEAT)
for r in ae:
    groups.setdefault((r["shape"], r["batch"], r["ctx"], r["target"], optim_of(r), r.get("stage", 0)), []).append(r)
pgroups = {}  # (shape, batch, ctx, target) -> the peer's rows, one a round
for p in peer:
    pgroups.setdefault((p["shape"], p["batch"], p["ctx"], p["target"]), []).append(p)
rounds = len({r.get("round", 1) for r in ae} | {p.get("round", 1) for p in peer})
if rounds > 1:
    print(f"({rounds} rounds: each side's median tok/s over the rounds; ratio = median / median, "
          "in brackets the range of the rounds' own ratios; peaks: the largest of the rounds)\n")
print("| shape | B x T | target | optim | stage | attnedit tok/s | peer tok/s | ratio | attnedit MFU | peer MFU "
      "| attnedit peak GiB | peer peak GiB | peak ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
seen = set()
for gk, rs in groups.items():
    key, optim, st = gk[:4], gk[4], gk[5]
    seen.add(key)
    oks = [r for r in rs if r.get("status") == "ok"]
    ps = pgroups.get(key, [])
    pvals = {p.get("round", 1): p[f"stage{st}_tok_s"] for p in ps
             if "error" not in p and p.get(f"stage{st}_tok_s") is not None}
    a_val = median(r["tok_s"] for r in oks) if oks else None
    p_val = median(pvals.values()) if pvals else None
    if oks: a_tps = f"{a_val:,.0f}"
    else: a_tps = rs[0].get("status", "?") + ": " + rs[0].get("error", "")[:160].replace("|", "/")
    if not ps: p_tps = "not run"
    elif p_val is None: p_tps = next((p["error"] for p in ps if "error" in p), "?")
    else: p_tps = f"{p_val:,.0f}"
    ratio = f"{a_val / p_val:.2f}" if a_val and p_val else "–"
    per = [r["tok_s"] / pvals[r.get("round", 1)] for r in oks if pvals.get(r.get("round", 1))]
    if len(per) > 1: ratio += f" ({min(per):.2f}–{max(per):.2f})"
    fpt = rs[0].get("flops_per_token", 0)
    a_mfu = f"{100 * median(r['mfu'] for r in oks):.1f}%" if oks and all(r.get("mfu") for r in oks) else "–"
    p_mfu = f"{100 * fpt * p_val / (gemm * 1e12):.1f}%" if p_val and fpt and gemm else "–"
    a_mem = max((r["peak_mem_gb"] for r in rs if r.get("peak_mem_gb")), default=None)
    p_mem = max((p["peak_mem_gb"] for p in ps if "error" not in p and p.get("peak_mem_gb")), default=None)
    mem_ratio = f"{a_mem / p_mem:.2f}" if a_mem and p_mem else "–"
    star = "*" if key + (optim,) in partial else ""
    print(f"| {key[0]} | {key[1]} x {key[2]} | {key[3]} | {optim} | {st or '?'} | {a_tps} | {p_tps} | {ratio} "
          f"| {a_mfu} | {p_mfu} | {f'{a_mem:.1f}{star}' if a_mem else '–'} | {f'{p_mem:.1f}' if p_mem else '–'} | {mem_ratio} |")
if partial:
    print("\n\\* attnedit's peak covers only the stage that ran (the peer's always covers both stages of a target).")
for key, ps in pgroups.items():  # peer rows without an attnedit row
    if key in seen: continue
    for st in (1, 2):
        vals = [p[f"stage{st}_tok_s"] for p in ps if p.get(f"stage{st}_tok_s")]
        err = next((p["error"] for p in ps if "error" in p), "?")
        mem = max((p["peak_mem_gb"] for p in ps if p.get("peak_mem_gb")), default="–")
        print(f"| {key[0]} | {key[1]} x {key[2]} | {key[3]} | – | {st} | not run | {f'{median(vals):,.0f}' if vals else err} "
              f"| – | – | – | – | {mem} | – |")
EOF
