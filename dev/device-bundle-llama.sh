#!/usr/bin/env bash
# Packs llama.cpp for a GPU device call into ${AE_CARRY:-.carry}/llama.tar.xz (ignored by git),
# leaving the rest of that folder alone: the programs of AE_LLAMA_PROGRAMS (default llama-bench
# and llama-server, the two the comparisons run; add llama-perplexity for eval ppl parity) from
# a CUDA build of llama.cpp made here (the llama.cpp vendored in PyPI's llama-cpp-python sdist,
# -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_SERVER=ON), exactly the llama/ggml
# libraries they load (ldd, resolved in the build; stripped), and llama.cpp's gguf-py
# (bench/llama_gguf.py writes the GGUF files with it). The GGUF files get a synthetic vocabulary
# of the real size (speed does not depend on the token strings); AE_LLAMA_TOKENIZER=1 adds the
# Qwen3 tokenizer from ../shared as tok/ (about 2.5 MB more) for the real one.
#   dev/device-bundle-llama.sh [LLAMA_BUILD_BIN [LLAMA_SRC]]
#   (default /tmp/llama-build/bin and /tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp)
# Unpacked: bin/ (programs and libraries), gguf-py/, tok/ (when asked for).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-/tmp/llama-build/bin}
src=${2:-/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp}
dest=${AE_CARRY:-.carry}
programs=${AE_LLAMA_PROGRAMS:-llama-bench llama-server}
mkdir -p "$dest"
stage=$dest/llama-stage
rm -rf "$stage" && mkdir -p "$stage/bin"
bin_abs=$(cd "$bin" && pwd)
for p in $programs; do
  [ -x "$bin/$p" ] || { echo "no $bin/$p: cmake --build <llama build> --target $p" >&2; exit 1; }
  cp "$bin/$p" "$stage/bin/"
  # libcuda.so.1 comes from the driver: a stub directory lets ldd resolve the rest without one
  LD_LIBRARY_PATH="$bin_abs:/tmp/cudastub:${LD_LIBRARY_PATH:-}" ldd "$bin/$p" |
    awk -v d="$bin_abs/" 'index($3, d) == 1 {print $1}' | while read -r lib; do
    cp -L "$bin/$lib" "$stage/bin/$lib"
  done
done
strip --strip-unneeded "$stage"/bin/*
mkdir -p "$stage/gguf-py"
cp -r "$src/gguf-py/gguf" "$stage/gguf-py/" && rm -rf "$stage/gguf-py/gguf/scripts"
if [ "${AE_LLAMA_TOKENIZER:-0}" = 1 ]; then
  mkdir -p "$stage/tok"
  cp ../shared/qwen3-tokenizer/tokenizer.json ../shared/qwen3-tokenizer/tokenizer_config.json "$stage/tok/"
fi
tar -C "$stage" -cf - . | xz -9 -T1 > "$dest/llama.tar.xz"
rm -rf "$stage"
ls -la "$dest/llama.tar.xz"
