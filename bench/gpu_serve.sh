#!/usr/bin/env bash
# GPU serving benchmark (docs/SERVE.md, "GPU serving benchmark"): `attnedit serve
# --random-weights` at Qwen3-8B shapes — the teacher and its MLA 512+64 and GateSWA (1 full
# layer in 6, W = 1024) students, random bf16 weights, the committed configs in
# tests/fixtures/configs — every server with the same KV cache memory, measured by `attnedit
# bench serve` (streaming /v1/completions, random token-id prompts, greedy, eos ignored) at each
# prompt length and concurrency; then, when a llama-server binary is given, llama.cpp's server
# on a random bf16 GGUF of the teacher with the same KV memory (one unified cache; as many slots
# as sequences of prompt + generation fit in it), measured by the same command with
# cache_prompt off.
#   bash bench/gpu_serve.sh [BUILD_DIR]        (default build-gpu; holds the CUDA attnedit)
# One server per model and prompt length, started with --max-model-len = prompt + generation, so
# its cache line says how many such sequences fit at once (the largest batch). Every step runs
# under a timeout: the whole script stays within AE_SERVE_BUDGET (about 5 minutes).
# Environment (defaults in brackets):
#   AE_SERVE_CACHE_GB  KV cache of every server, GiB [16]
#   AE_SERVE_PROMPTS   prompt lengths [1024 32768] (e.g. "1024 8192 32768")
#   AE_SERVE_CONC      concurrency levels for prompts up to 8K [1,32,128]
#   AE_SERVE_CONC_LONG concurrency levels for longer prompts [1,8]
#   AE_SERVE_ROUNDS    requests per level = rounds x concurrency [1]
#   AE_SERVE_GEN       tokens generated per request [128]
#   AE_SERVE_GEN_LONG  tokens generated per request for prompts longer than 8K [AE_SERVE_GEN]:
#                      longer generations make the decode steps (each sequence's tokens after
#                      its prompt) a real share of a level, so the engine's decode tok/s column
#                      (steps without prefill rows, from /metrics) rests on many steps
#   AE_SERVE_MODELS    configs under tests/fixtures/configs, the teacher first
#                      [qwen3-8b qwen3-8b-mla qwen3-8b-gateswa]
#   AE_SERVE_BUDGET    seconds for the whole script [290]: each run (one server at one prompt
#                      length: start, warm-up, measurement) gets a fair share of what is left
#   AE_SERVE_TIMEOUT   the most one run may take [150]
#   AE_SERVE_GRAPHS_AB 1: also the teacher at the longest prompt, concurrency 1, with CUDA graphs
#                      off (AE_CUDA_GRAPHS=0), right after its run with them on (the default;
#                      AE_SERVE_GRAPHS picks the recorded steps: docs/SERVE.md) [1]; 0: not
#   AE_SERVE_CONFIGS   the folder of those configs; AE_SERVE_DEVICE attnedit's device [cuda]
#                      (cpu with tiny configs: a check of this script without a GPU)
#   AE_LLAMA_SERVER    llama-server binary (its libraries beside it): also measure llama.cpp
#   AE_LLAMA_GGUF_PY   llama.cpp's gguf-py folder (bench/llama_gguf.py writes the GGUF with it);
#                      AE_LLAMA_TOKENIZER a folder with the Qwen3 tokenizer.json, else the GGUF
#                      gets a synthetic vocabulary (the requests are token ids)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
ae=$build/attnedit
cfgs=${AE_SERVE_CONFIGS:-tests/fixtures/configs}
device=${AE_SERVE_DEVICE:-cuda}
gb=${AE_SERVE_CACHE_GB:-16}
prompts=${AE_SERVE_PROMPTS:-1024 32768}
conc=${AE_SERVE_CONC:-1,32,128}
conc_long=${AE_SERVE_CONC_LONG:-1,8}
rounds=${AE_SERVE_ROUNDS:-1}
gen_short=${AE_SERVE_GEN:-128}
gen_long=${AE_SERVE_GEN_LONG:-$gen_short}
gen=$gen_short # of the prompt length being measured (gen_for)
models=${AE_SERVE_MODELS:-qwen3-8b qwen3-8b-mla qwen3-8b-gateswa}
teacher=${models%% *} # the first model: llama-server serves it
tmo=${AE_SERVE_TIMEOUT:-150}
graphs_ab=${AE_SERVE_GRAPHS_AB:-1}
budget=${AE_SERVE_BUDGET:-290}
port=18411
logdir=${AE_SERVE_LOGDIR:-$(mktemp -d)}
mkdir -p "$logdir"
server_pid=
gguf_pid=
gguf=

cleanup() {
  [ -n "$server_pid" ] && stop_server
  [ -n "$gguf_pid" ] && kill "$gguf_pid" 2>/dev/null
  [ -n "$gguf" ] && rm -f "$gguf"
}
trap cleanup EXIT

# HTTP status of GET http://127.0.0.1:$port$1 (bash's /dev/tcp: no curl needed), or 000.
http_status() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || { echo 000; return; }
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&3
  read -r -t 5 line <&3 || line=
  exec 3<&- 3>&-
  line=${line#HTTP/1.? }
  echo "${line:0:3}"
}

# SIGTERM, then SIGKILL after 10 s (llama-server's shutdown can hang joining a thread).
stop_server() {
  local t
  kill "$server_pid" 2>/dev/null
  for t in $(seq 1 20); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
}

levels_for() { if [ "$1" -le 8192 ]; then echo "$conc"; else echo "$conc_long"; fi; }
gen_for() { if [ "$1" -le 8192 ]; then echo "$gen_short"; else echo "$gen_long"; fi; }
max_level() { tr , '\n' <<<"$1" | sort -n | tail -1; }

# The measurement itself, the same for both servers: a warm-up request (CUDA kernels, GEMM
# heuristics), then every concurrency level, within $run_end (seconds since the script began).
# $1 prompt length, $2 levels, the rest extra args for bench serve.
measure() {
  local p=$1 levels=$2
  shift 2
  local w=$(( p < 2048 ? p : 2048 )) left
  left=$(( run_end - SECONDS ))
  timeout $(( left / 4 > 5 ? left / 4 : 5 )) "$ae" bench serve --url "http://127.0.0.1:$port" \
    --concurrency 2 --requests 2 --prompt-len "$w" --gen-len 8 "$@" >/dev/null 2>&1 || echo "  (warm-up failed)"
  left=$(( run_end - SECONDS ))
  [ "$left" -lt 5 ] && left=5
  timeout "$left" "$ae" bench serve --url "http://127.0.0.1:$port" --concurrency "$levels" \
    --rounds "$rounds" --prompt-len "$p" --gen-len "$gen" "$@"
  [ $? = 124 ] && echo "  (stopped after ${left} s: this run's share of AE_SERVE_BUDGET / AE_SERVE_TIMEOUT)"
  return 0
}

# Sets run_end for the next run: its fair share of what is left of the budget, at most
# AE_SERVE_TIMEOUT. $1 = runs still to do (this one included).
plan_run() {
  local share=$(( (budget - SECONDS) / $1 ))
  [ "$share" -gt "$tmo" ] && share=$tmo
  [ "$share" -lt 20 ] && share=20
  run_end=$(( SECONDS + share ))
}

# Waits for /health until $run_end (at most 120 s) while the server ($server_pid) lives.
wait_ready() {
  local stop=$(( SECONDS + 120 < run_end ? SECONDS + 120 : run_end ))
  while [ "$SECONDS" -lt "$stop" ]; do
    kill -0 "$server_pid" 2>/dev/null || { echo "  the server exited (log: $1):"; tail -5 "$1"; return 1; }
    [ "$(http_status /health)" = 200 ] && return 0
    sleep 0.5
  done
  echo "  the server was not ready in time (log: $1)"
  return 1
}

# KV bytes per token of a GQA config in bf16 (the llama.cpp teacher's f16 cache is the same size).
kv_bytes_per_token() {
  python3 -c "import json;c=json.load(open('$1/config.json'));\
print(c['num_hidden_layers']*c['num_key_value_heads']*c['head_dim']*2*2)"
}

# $1 model, $2 prompt length; $3 concurrency levels [levels_for $2]; $4 non-empty: CUDA graphs
# off (AE_CUDA_GRAPHS=0)
attnedit_run() {
  local m=$1 p=$2 levels=${3:-$(levels_for "$2")} nographs=${4:-} log
  log=$logdir/serve-$m-$p${nographs:+-nographs}.log
  echo
  echo "== attnedit $m, prompt $p, generation $gen${nographs:+, CUDA graphs off (AE_CUDA_GRAPHS=0)} =="
  ${nographs:+env AE_CUDA_GRAPHS=0} "$ae" serve --random-weights "$cfgs/$m" --device "$device" \
    --port "$port" --cache-gb "$gb" \
    --max-seqs "$(max_level "$levels")" --max-model-len $((p + gen)) >"$log" 2>&1 &
  server_pid=$!
  if wait_ready "$log"; then
    grep -E '^(cache|weights):' "$log" | sed 's/^/  /'
    measure "$p" "$levels"
  fi
  stop_server
}

# The GGUF file of the teacher, written in the background since the start; 0 when ready.
gguf_ready() {
  [ -z "$gguf_pid" ] && return "$gguf_failed"
  if ! wait "$gguf_pid"; then
    echo "llama.cpp: the GGUF file could not be written:"; tail -5 "$logdir/gguf.log"; gguf_failed=1
  else
    tail -1 "$logdir/gguf.log"
  fi
  gguf_pid=
  return "$gguf_failed"
}

llama_run() { # $1 prompt length
  local p=$1 levels slots top log per_tok cells
  levels=$(levels_for "$p")
  echo
  gguf_ready || return 0
  per_tok=$(kv_bytes_per_token "$cfgs/$teacher")
  cells=$(awk -v g="$gb" -v b="$per_tok" 'BEGIN { printf "%d", g * 1073741824 / b }')
  # one unified cache of the same bytes shared by the slots, as many slots as sequences of
  # prompt + generation (+1: llama-server stops a slot one token before its context is full)
  # fit in it: the sequences attnedit's teacher admits at once from the same memory
  slots=$(( cells / (p + gen + 1) ))
  top=$(max_level "$levels")
  [ "$slots" -gt "$top" ] && slots=$top
  log=$logdir/llama-server-$p.log
  echo "== llama-server $teacher, prompt $p, generation $gen =="
  echo "  cache: ${gb} GiB = $cells tokens of $per_tok bytes, unified; $slots slots (up to $slots sequences at once)"
  LD_LIBRARY_PATH="$(dirname "$AE_LLAMA_SERVER"):${LD_LIBRARY_PATH:-}" "$AE_LLAMA_SERVER" -m "$gguf" \
    --host 127.0.0.1 --port "$port" -ngl 99 -fa on -fit off -c "$cells" -np "$slots" --kv-unified \
    -b 2048 -ub 2048 --cache-ram 0 >"$log" 2>&1 &
  server_pid=$!
  if wait_ready "$log"; then
    grep -m1 -E 'n_ctx_slot|n_slots' "$log" | sed 's/^/  /'
    measure "$p" "$levels" --extra-body '{"cache_prompt":false}'
  fi
  stop_server
}

echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit: $(cat "$build/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
echo "setup:  KV cache ${gb} GiB per server; prompts: $prompts; concurrency $conc (<= 8K), $conc_long (longer);"
echo "        $rounds x concurrency requests per level, $gen_short tokens each ($gen_long past 8K); ${budget} s budget; logs in $logdir"

# The GGUF for llama-server is written while attnedit runs (CPU and disk only).
gguf_failed=0
if [ -n "${AE_LLAMA_SERVER:-}" ]; then
  dir=/dev/shm
  [ "$(df -BG --output=avail "$dir" 2>/dev/null | tail -1 | tr -dc 0-9)" -gt 20 ] 2>/dev/null || dir=${TMPDIR:-/tmp}
  gguf=$dir/$teacher-serve-random-bf16.gguf
  python3 bench/llama_gguf.py --config "$cfgs/$teacher" ${AE_LLAMA_TOKENIZER:+--tokenizer "$AE_LLAMA_TOKENIZER"} \
    --out "$gguf" ${AE_LLAMA_GGUF_PY:+--gguf-py "$AE_LLAMA_GGUF_PY"} >"$logdir/gguf.log" 2>&1 &
  gguf_pid=$!
fi

# Shorter prompts first, every server at each length: a run that hits the budget costs the
# longest prompts, not a whole model.
n_servers=$(wc -w <<<"$models")
[ -n "${AE_LLAMA_SERVER:-}" ] && n_servers=$((n_servers + 1))
runs_left=$(( n_servers * $(wc -w <<<"$prompts") ))
longest=$(tr ' ' '\n' <<<"$prompts" | sort -n | tail -1)
[ "$graphs_ab" = 1 ] && runs_left=$((runs_left + 1))
for p in $(tr ' ' '\n' <<<"$prompts" | sort -n); do
  gen=$(gen_for "$p")
  for m in $models; do
    plan_run "$runs_left"; runs_left=$((runs_left - 1))
    attnedit_run "$m" "$p"
    if [ "$graphs_ab" = 1 ] && [ "$m" = "$teacher" ] && [ "$p" = "$longest" ]; then
      plan_run "$runs_left"; runs_left=$((runs_left - 1))
      attnedit_run "$m" "$p" 1 nographs # the A/B of the decode steps' CUDA graphs
    fi
  done
  if [ -n "${AE_LLAMA_SERVER:-}" ]; then
    plan_run "$runs_left"; runs_left=$((runs_left - 1))
    llama_run "$p"
  fi
done
echo
echo "total: $SECONDS s"
