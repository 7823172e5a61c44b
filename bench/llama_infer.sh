#!/usr/bin/env bash
# llama.cpp side of the GPU inference benchmark: random bf16 GGUF files at the committed Qwen3-8B
# and Qwen3-30B-A3B shapes (bench/llama_gguf.py), measured by llama.cpp's own llama-bench built
# from source with CUDA (flash attention on, all layers on the GPU): prefill of CTX tokens, and
# 32 decode steps after CTX tokens of context (-d), 3 repetitions.
#   bash bench/llama_infer.sh LLAMA_BIN_DIR GGUF_PY_DIR TOKENIZER_DIR [CTX,...]
# TOKENIZER_DIR holds the Qwen3 tokenizer.json (the real vocabulary); "" or - gives the GGUF a
# synthetic vocabulary of the same size (bench/llama_gguf.py; speed does not depend on it).
# The GGUF files go to /dev/shm when it has room (else $TMPDIR) and are deleted after each model.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 ggufpy=$2 tok=${3:-} ctx=${4:-4096,32768}
[ "$tok" = - ] && tok=
export LD_LIBRARY_PATH="$bin:${LD_LIBRARY_PATH:-}"
for m in qwen3-8b qwen3-30b-a3b; do
  need_gb=$(python3 -c "import json;c=json.load(open('tests/fixtures/configs/$m/config.json'));\
d=c['hidden_size'];e=c.get('num_experts') or 0;f=c['moe_intermediate_size'] if e else c['intermediate_size'];\
hd=c['head_dim'];L=c['num_hidden_layers'];a=d*hd*(2*c['num_attention_heads']+2*c['num_key_value_heads']);\
m=3*d*f*(e or 1)+d*e;print(int((2*c['vocab_size']*d+L*(a+m))*2/2**30)+2)")
  dir=/dev/shm
  avail=$(df -BG --output=avail "$dir" 2>/dev/null | tail -1 | tr -dc 0-9)
  [ "${avail:-0}" -gt "$need_gb" ] || dir=${TMPDIR:-/tmp}
  avail=$(df -BG --output=avail "$dir" | tail -1 | tr -dc 0-9)
  if [ "$avail" -le "$need_gb" ]; then
    echo "llama.cpp | $m | not measured: ${need_gb} GiB needed for the GGUF file, ${avail} GiB free in $dir"
    continue
  fi
  f="$dir/$m-random-bf16.gguf"
  python3 bench/llama_gguf.py --config "tests/fixtures/configs/$m" ${tok:+--tokenizer "$tok"} --out "$f" \
    --gguf-py "$ggufpy"
  for c in ${ctx//,/ }; do
    "$bin/llama-bench" -m "$f" -ngl 99 -fa 1 -b 2048 -ub 2048 -r 3 -p "$c" -n 0 -o md 2>&1 | grep '^|'
    "$bin/llama-bench" -m "$f" -ngl 99 -fa 1 -r 3 -p 0 -n 32 -d "$c" -o md 2>&1 | grep '^|' | tail -n +3
  done
  rm -f "$f"
done
