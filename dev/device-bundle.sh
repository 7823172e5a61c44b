#!/usr/bin/env bash
# Packs what a run on a lent GPU machine needs into .carry/ (ignored by git): the CUDA build made
# here (same nvcc as the device), the Debian shared libraries it links (the device image lacks
# them), and the parts of ../shared the GPU tests and benchmarks read (teachers, a slice of the
# corpus, the PyTorch peer of the distillation benchmark as .carry/peers). On the device:
#   bash dev/device-unpack.sh && AE_GPU_BUILD=.carry/build AE_PREBUILT=1 bash scripts/test-gpu.sh
# Usage: dev/device-bundle.sh [teachers... | none]   (default: qwen3-micro qwen3-moe; the tree
# limit of a device call is 64 MiB, so large teachers go in separate calls)
# AE_BUNDLE=results dev/device-bundle.sh: what bench/gpu_results.sh needs instead (about 40 MB):
# attnedit alone, the qwen3-small teacher, ../shared/data/eval, the corpus's train-000..003 and
# the whole valid.txt; run it with BENCH=results bash dev/device-run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${AE_BUNDLE:-tests}
teachers=("$@")
[ ${#teachers[@]} -eq 0 ] && teachers=(qwen3-micro qwen3-moe)
[ "$mode" = results ] && [ $# -eq 0 ] && teachers=(qwen3-small)
[ "${teachers[*]}" = none ] && teachers=()
shared=$(cd ../shared && pwd)
rm -rf .carry && mkdir -p .carry/stage/lib .carry/stage/shared/teachers .carry/stage/shared/data/corpus/general
# no MPI: the device image lacks Debian's libmpi (GPU groups start with --gpus N there)
bash scripts/build.sh build-gpu -DAE_CUDA=ON -DAE_MPI=OFF >/dev/null
echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo ' +uncommitted')" > build-gpu/COMMIT
mkdir -p .carry/stage/build
cp build-gpu/COMMIT build-gpu/attnedit build-gpu/bench_infer build-gpu/bench_distill build-gpu/bench_attn build-gpu/bench_moe build-gpu/bench_paged build-gpu/test_backend_ops \
   build-gpu/test_ops build-gpu/test_grad_ops build-gpu/test_train_ops \
   build-gpu/test_cuda_* .carry/stage/build/
for l in libcjson.so.1 libpcre2-8.so.0 libutf8proc.so.2 libcmocka.so.0 libmicrohttpd.so.12 libgfortran.so.5 \
         libquadmath.so.0 libgomp.so.1; do
  cp -L /usr/lib/x86_64-linux-gnu/$l .carry/stage/lib/
done
cp -L /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 .carry/stage/lib/
for t in ${teachers[@]+"${teachers[@]}"}; do cp -r "$shared/teachers/$t" .carry/stage/shared/teachers/; done
head -c 400000 "$shared/data/corpus/general/valid.txt" > .carry/stage/shared/data/corpus/general/valid.txt
mkdir -p .carry/stage/peers # bench/gpu_distill.sh
cp "$shared/peers/torch_attnedit.py" .carry/stage/peers/
if [ "$mode" = results ]; then # bench/gpu_results.sh: attnedit and data, no tests or peers
  find .carry/stage/build -type f ! -name attnedit ! -name COMMIT -delete
  rm -rf .carry/stage/peers
  cp -r "$shared/data/eval" .carry/stage/shared/data/
  cp "$shared"/data/corpus/general/train-00[0-3].txt "$shared/data/corpus/general/valid.txt" \
     .carry/stage/shared/data/corpus/general/
fi
# one xz stream with a dictionary larger than a binary: the binaries share most of their bytes
# (the library and its CUDA kernels), which a 256 MiB window stores once (31 MB instead of 57)
tar -C .carry/stage -cf - . | xz -T1 --lzma2=preset=6,dict=256MiB > .carry/bundle.tar.xz
rm -rf .carry/stage
ls -la .carry/bundle.tar.xz
