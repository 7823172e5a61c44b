#!/usr/bin/env bash
# bench/gpu_distill.sh's table, on a stub bench_distill and a stub peer (no GPU, no torch): one
# round gives each row as measured; AE_BENCH_REPEAT=3 gives each side's median over the rounds,
# their ratio and the range of the rounds' own ratios; a failed attnedit row and a peer out of
# memory are reported as such; a bad AE_BENCH_REPEAT is refused. Needs python3 (the script's
# table is made by it): exit 77 without.
set -u
command -v python3 > /dev/null || { echo "SKIP python3 not found (bench/gpu_distill.sh needs it)"; exit 77; }
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/build" "$dir/logs"
# bench_distill stub: call n of the run (a counter file) measures 65,000 + 100 n tok/s in stage 1
# and 28,000 + 100 n in stage 2; GateSWA fails (exit 3, no JSON) when STUB_FAIL_GATESWA is set.
cat > "$dir/build/bench_distill" <<'STUB'
#!/usr/bin/env bash
if [ "$1" = --peaks ]; then echo "bench_distill | peaks | gemm 780.0 TFLOP/s"; exit 0; fi
while [ $# -gt 0 ]; do
  case $1 in --label) L=$2; shift ;; --target) T=$2; shift ;; --batch) B=$2; shift ;; --ctx) C=$2; shift ;;
    --optim-state) O=$2; shift ;; --grad-dtype) G=$2; shift ;; --stage2-acts) A=$2; shift ;; esac
  shift
done
if [ -n "${STUB_FAIL_GATESWA:-}" ] && [ "$T" = gateswa ]; then echo "stub: refused" >&2; exit 3; fi
n=$(( $(cat "$STUB_DIR/n" 2>/dev/null || echo 0) + 1 )); echo $n > "$STUB_DIR/n"
for st in 1 2; do
  tps=$(( (st == 1 ? 65000 : 28000) + 100 * n ))
  printf '{"bench":"bench_distill","shape":"%s","target":"%s","batch":%d,"ctx":%d,"stage":%d,"optim_state":"%s","grad_dtype":"%s","status":"ok","stage2_acts":"%s","tok_s":%d.0,"mfu":0.6,"flops_per_token":5.8e9,"gemm_tflops":780.0,"peak_mem_gb":14.9}\n' \
    "$L" "$T" "$B" "$C" "$st" "$O" "$G" "$A" "$tps"
done
STUB
# peer stub: call k measures 41,000 + 200 k tok/s in stage 1 and 17,000 + 100 k in stage 2 for
# every target; out of memory when STUB_PEER_OOM is set
cat > "$dir/peer.py" <<'STUB'
import json, os, sys
if os.environ.get("STUB_PEER_OOM"):
    sys.exit("torch.OutOfMemoryError: CUDA out of memory")
a = sys.argv
arg = lambda k: a[a.index(k) + 1]
p = os.path.join(os.environ["STUB_DIR"], "k")
k = (int(open(p).read()) if os.path.exists(p) else 0) + 1
open(p, "w").write(str(k))
for t in arg("--targets").split(","):
    print(json.dumps({"shape": arg("--shape"), "target": t, "batch": int(arg("--batch")), "ctx": int(arg("--ctx")),
                      "stage1_tok_s": 41000 + 200 * k, "stage2_tok_s": 17000 + 100 * k, "peak_mem_gb": 29.9}))
STUB
chmod +x "$dir/build/bench_distill"
fails=0
# run NAME EXPECTED_STATUS [ENV=V ...] -- PATTERN...: every pattern must be a line of the output
run() {
  local name=$1 want=$2 out rc envs=()
  shift 2
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  rm -f "$dir/n" "$dir/k"
  out=$(env STUB_DIR="$dir" AE_BENCH_ONLY=1.7b AE_BENCH_KEEP=0 AE_BENCH_LOGDIR="$dir/logs" "${envs[@]}" \
        bash "$src/bench/gpu_distill.sh" "$dir/build" "$dir/peer.py" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "FAIL ($name): exit $rc, expected $want"; echo "$out" | tail -8; fails=$((fails + 1)); return
  fi
  for pat in "$@"; do
    if ! grep -qxF -- "$pat" <<< "$out"; then
      echo "FAIL ($name): no line '$pat' in:"; echo "$out" | tail -8; fails=$((fails + 1))
    fi
  done
  rm -f "$dir/logs/"*
}
# one round: MLA is call 1 (65,100 / 28,100), GateSWA call 2; the peer's call 1 (41,200 / 17,100)
run "one round" 0 -- \
  "| 1.7b | 2 x 4096 | mla | fp32 | 1 | 65,100 | 41,200 | 1.58 | 60.0% | 30.6% | 14.9 | 29.9 | 0.50 |" \
  "| 1.7b | 2 x 4096 | gateswa | fp32 | 2 | 28,200 | 17,100 | 1.65 | 60.0% | 12.7% | 14.9 | 29.9 | 0.50 |"
# three rounds: MLA stage 1 65,100 / 65,300 / 65,500 (median 65,300), the peer 41,200 / 41,400 /
# 41,600 (41,400): 65,300 / 41,400 = 1.577; the rounds' ratios 1.580, 1.577, 1.575
run "three rounds" 0 AE_BENCH_REPEAT=3 -- \
  "== round 3 of 3" \
  "| 1.7b | 2 x 4096 | mla | fp32 | 1 | 65,300 | 41,400 | 1.58 (1.57–1.58) | 60.0% | 30.8% | 14.9 | 29.9 | 0.50 |" \
  "| 1.7b | 2 x 4096 | gateswa | fp32 | 2 | 28,400 | 17,200 | 1.65 (1.65–1.65) | 60.0% | 12.8% | 14.9 | 29.9 | 0.50 |"
run "failures" 0 AE_BENCH_REPEAT=2 STUB_FAIL_GATESWA=1 STUB_PEER_OOM=1 -- \
  "| 1.7b | 2 x 4096 | mla | fp32 | 1 | 65,150 | OOM | – | 60.0% | – | 14.9 | – | – |" \
  "| 1.7b | 2 x 4096 | gateswa | fp32 | ? | failed: exit 3 | OOM | – | – | – | – | – | – |"
run "bad repeat" 2 AE_BENCH_REPEAT=x -- \
  "gpu_distill.sh: AE_BENCH_REPEAT='x' is not a positive whole number"
[ "$fails" -eq 0 ] && echo "test_bench_distill_script: bench/gpu_distill.sh's table as expected (4 runs)"
exit $((fails > 0))
