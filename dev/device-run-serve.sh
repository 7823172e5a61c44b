#!/usr/bin/env bash
# One call on a lent GPU machine: unpacks what dev/device-bundle-serve.sh packed (attnedit and,
# when packed, llama-server) and runs the serving benchmark (bench/gpu_serve.sh; its AE_SERVE_*
# settings pass through). The output (bench-serve.log) and the servers' logs (serve-logs.tar.gz)
# go to $OUT (the device tool brings them back).
#   run: bash dev/device-run-serve.sh      (carry: .carry; about 5 minutes on an H200)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp}
eval "$(bash dev/device-unpack.sh .carry/serve.tar.xz .carry/serve)" # its lib/, the device's NCCL
if [ -f .carry/llama-server.tar.xz ]; then
  mkdir -p .carry/llama-server && tar -C .carry/llama-server -xJf .carry/llama-server.tar.xz
  export AE_LLAMA_SERVER=$PWD/.carry/llama-server/bin/llama-server
  export AE_LLAMA_GGUF_PY=$PWD/.carry/llama-server/gguf-py
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
logs=$(mktemp -d)/serve-logs # the servers' logs, brought back as one file ($OUT takes 8 files)
AE_SERVE_LOGDIR="$logs" bash bench/gpu_serve.sh .carry/serve/build 2>&1 | tee "$out/bench-serve.log"
tar -C "$(dirname "$logs")" -czf "$out/serve-logs.tar.gz" serve-logs
