# shellcheck shell=bash
# Sourced by the GPU benchmark scripts (bench/gpu_infer.sh, bench/gpu_graphs.sh): the lines every
# log starts with, and the device's measured peaks.
#   . bench/gpu_header.sh
#   bench_header BUILD_DIR     prints date, commit (BUILD_DIR/COMMIT, else the checkout's) and GPU
#   bench_peaks PROGRAM        runs PROGRAM --peaks --device cuda (bench_infer, bench_distill),
#                              prints its line and exports AE_BENCH_GEMM_PEAK (TFLOP/s) and
#                              AE_BENCH_COPY_PEAK (GB/s), which the benchmarks then use instead
#                              of measuring again
bench_header() {
  echo "date:   $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(cat "$1/COMMIT" 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "gpu:    $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
}

bench_peaks() {
  local peaks
  peaks=$("$1" --peaks --device cuda)
  echo "$peaks"
  AE_BENCH_GEMM_PEAK=$(echo "$peaks" | sed -n 's/.*gemm \([0-9.]*\) TFLOP.*/\1/p')
  AE_BENCH_COPY_PEAK=$(echo "$peaks" | sed -n 's/.*copy \([0-9.]*\) GB.*/\1/p')
  export AE_BENCH_GEMM_PEAK AE_BENCH_COPY_PEAK
}
