#!/usr/bin/env bash
# ctest test_gguf_llama: GGUF exports run in llama.cpp's llama-perplexity and give attnedit's
# perplexity (tools/check_gguf.py). Usage: test_gguf_llama.sh ATTNEDIT [PYTHON]
# llama.cpp's bin folder (with llama-perplexity) is $AE_LLAMA_BIN; without it, or without a
# Python 3, exit 77 (ctest: skipped) saying why.
set -euo pipefail
attnedit=$1
py=${AE_PYTHON:-${2:-python3}}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${AE_LLAMA_BIN:-}" ] || [ ! -x "$AE_LLAMA_BIN/llama-perplexity" ]; then
  echo "SKIP test_gguf_llama: set AE_LLAMA_BIN to a llama.cpp bin folder with llama-perplexity"
  echo "  (AE_LLAMA_BIN='${AE_LLAMA_BIN:-}')"
  exit 77
fi
if ! "$py" -c "import sys; assert sys.version_info >= (3, 8)" 2>/dev/null; then
  echo "SKIP test_gguf_llama: no Python 3.8+ ('$py')"
  exit 77
fi
exec "$py" "$here/tools/check_gguf.py" --attnedit "$attnedit" --llama-bin "$AE_LLAMA_BIN"
