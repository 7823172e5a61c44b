#!/usr/bin/env bash
# Builds attnedit and runs the whole test suite (ctest). With --sanitize, the build uses
# AddressSanitizer + UndefinedBehaviorSanitizer (directory build-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  cmake -S . -B $dir -DCMAKE_BUILD_TYPE=Debug -DAE_SANITIZE=ON >/dev/null
  cmake --build $dir -j"$(nproc)"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  dir=build
  bash scripts/build.sh $dir
fi
cd $dir
ctest --output-on-failure -j"$(nproc)"
