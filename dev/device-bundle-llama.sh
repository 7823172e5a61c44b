#!/usr/bin/env bash
# Adds llama.cpp to .carry/ for the GPU benchmark (run after dev/device-bundle.sh, which empties
# .carry): llama-bench, llama-perplexity and their libraries from a CUDA build of llama.cpp made here (source: the
# llama.cpp vendored in PyPI's llama-cpp-python sdist), llama.cpp's gguf-py, and the Qwen3
# tokenizer from ../shared. Usage: dev/device-bundle-llama.sh LLAMA_BUILD_BIN LLAMA_SRC
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 src=$2
rm -rf .carry/llstage && mkdir -p .carry/llstage/bin .carry/llstage/tok
cp -P "$bin"/llama-bench "$bin"/libllama-bench-impl.so "$bin"/llama-perplexity \
  "$bin"/libllama-perplexity-impl.so "$bin"/libggml*.so* "$bin"/libllama.so* \
  "$bin"/libllama-common.so* .carry/llstage/bin/
strip --strip-unneeded .carry/llstage/bin/llama-bench .carry/llstage/bin/llama-perplexity \
  .carry/llstage/bin/*.so.0.* .carry/llstage/bin/lib*-impl.so
cp -r "$src/gguf-py" .carry/llstage/gguf-py
cp ../shared/qwen3-tokenizer/tokenizer.json ../shared/qwen3-tokenizer/tokenizer_config.json .carry/llstage/tok/
tar -C .carry/llstage -cf - . | xz -T2 -6 > .carry/llama.tar.xz
rm -rf .carry/llstage
ls -la .carry/llama.tar.xz
