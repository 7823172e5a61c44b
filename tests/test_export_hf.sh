#!/usr/bin/env bash
# ctest test_export_hf: exported student folders run in transformers and give attnedit's
# perplexity (tools/check_export.py). Usage: test_export_hf.sh ATTNEDIT [PYTHON]
# The Python is $AE_PYTHON, else the second argument (found at configure time), else python3.
# Exit 77 (ctest: skipped), with the reason, when it lacks torch + transformers.
set -euo pipefail
attnedit=$1
py=${AE_PYTHON:-${2:-python3}}
here=$(cd "$(dirname "$0")/.." && pwd)
if ! "$py" -c "import torch, transformers, tokenizers, safetensors" 2>/dev/null; then
  echo "SKIP test_export_hf: '$py' cannot import torch, transformers, tokenizers and safetensors"
  echo "  (install them, e.g. pip install torch transformers==5.17.0 safetensors, and set AE_PYTHON)"
  exit 77
fi
exec "$py" "$here/tools/check_export.py" --attnedit "$attnedit"
