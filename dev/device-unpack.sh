#!/usr/bin/env bash
# On the device: unpacks .carry/bundle.tar.xz (dev/device-bundle.sh) into .carry/ and prints the
# environment to source: LD_LIBRARY_PATH for the carried libraries, AE_SHARED_DIR for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tar -C .carry -xJf .carry/bundle.tar.xz
echo "export LD_LIBRARY_PATH=$PWD/.carry/lib:/usr/local/cuda/lib64:\${LD_LIBRARY_PATH:-} AE_SHARED_DIR=$PWD/.carry/shared"
