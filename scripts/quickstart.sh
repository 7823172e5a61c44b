#!/usr/bin/env bash
# Quick start: install what is missing (Debian packages), build, and run the main job on the
# bundled demo model (models/qwen3-micro, a 1.8M-parameter Qwen3 trained on public-domain books).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build >/dev/null
bin=build/attnedit
model=models/qwen3-micro
echo "== attnedit inspect $model"
$bin inspect $model
echo
echo "== attnedit generate --model $model --prompt 'The Time Traveller' --max-new-tokens 40 --greedy"
$bin generate --model $model --prompt "The Time Traveller" --max-new-tokens 40 --greedy
echo
echo "== attnedit eval ppl --model $model --file data/sample.txt --ctx 256"
$bin eval ppl --model $model --file data/sample.txt --ctx 256
