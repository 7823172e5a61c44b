#!/usr/bin/env bash
# Quick start: install what is missing (Debian packages), build, and run the main job on the
# bundled demo model (models/qwen3-micro, a 1.8M-parameter Qwen3 trained on public-domain books):
# convert it to MLA (KV cache -69%) by progressive distillation on bundled text, then compare
# teacher and student on held-out text. A few minutes on a laptop CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build >/dev/null
bin=build/attnedit
teacher=models/qwen3-micro
mkdir -p build/demo
echo "== teacher"
$bin inspect $teacher
echo
echo "== prepare-data: tokenise data/demo-train.txt"
$bin prepare-data --model $teacher --out build/demo/train.tok data/demo-train.txt
echo
echo "== convert to MLA (kv_lora_rank 32 + rope 8): stage 1 teacher forcing, stage 2 KL distillation"
$bin convert --teacher $teacher --target mla --kv-lora-rank 32 --qk-rope-dim 8 --init teacher \
  --data build/demo/train.tok --ctx 128 --batch 4 --stage1-tokens 100000 --stage2-tokens 50000 \
  --log-every 50 --out build/demo/mla-student --force
echo
echo "== teacher vs student on held-out text (data/sample.txt)"
$bin eval kl --teacher $teacher --model build/demo/mla-student --file data/sample.txt --ctx 256
echo
echo "== the student generates"
$bin generate --model build/demo/mla-student --prompt "The Time Traveller" --max-new-tokens 32 --greedy
