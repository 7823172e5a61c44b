#!/usr/bin/env python3
"""transformers (bf16, SDPA) at the shapes bench_infer measures: the reference a user already has.

Random bf16 weights for a config folder's architecture, made on the GPU; prefill of T tokens from
an empty cache (logits of the last token only), median of --reps; decode: after a P-token prompt
(in chunks of 8192), --decode-steps single-token steps, each reading back its greedy id. Prints
lines in bench_infer's format, kind "hf-prefill" / "hf-decode".

  python3 bench/hf_infer.py --config tests/fixtures/configs/qwen3-8b --prefill 4096,32768 \
      --decode-at 4096,32768 --decode-steps 32
"""
import argparse
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prefill", type=ints, default=[])
    ap.add_argument("--decode-at", type=ints, default=[])
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default=None)
    a = ap.parse_args()
    label = a.label or a.config
    cfg = AutoConfig.from_pretrained(a.config)
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    print(f"bench_infer | {label} | transformers {__import__('transformers').__version__} | model | "
          f"{n / 1e9:.2f} B params, made in {time.time() - t0:.1f} s", flush=True)
    V = cfg.vocab_size

    def ids(T):
        return (torch.arange(T, device="cuda") * 7919 + 13) % V

    with torch.no_grad():
        for T in a.prefill:
            x = ids(T)[None]
            times = []
            for r in range(a.reps + 1):
                torch.cuda.synchronize()
                t0 = time.time()
                model(x, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                if r:
                    times.append(time.time() - t0)
            s = statistics.median(times)
            print(f"bench_infer | {label} | torch | hf-prefill | {T} | {s:.4f} s | {T / s:.1f} tok/s",
                  flush=True)
        for P in a.decode_at:
            cache = DynamicCache(config=cfg)
            x = ids(P)[None]
            out = None
            for p0 in range(0, P, 8192):
                out = model(x[:, p0:p0 + 8192], past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1)
            nxt.item()
            out = model(nxt[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1)  # warm-up
            nxt = out.logits[:, -1].argmax(-1)
            nxt.item()
            t0 = time.time()
            for _ in range(a.decode_steps):
                out = model(nxt[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1].argmax(-1)
                nxt.item()
            s = (time.time() - t0) / a.decode_steps
            print(f"bench_infer | {label} | torch | hf-decode | {P} | {s:.4f} s | {1 / s:.1f} tok/s",
                  flush=True)
    print(f"bench_infer | {label} | torch | memory | {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB peak allocated",
          flush=True)


if __name__ == "__main__":
    main()
