#!/usr/bin/env python3
"""Writes a GGUF file with random bf16 weights for a Qwen3 / Qwen3-MoE config.json, so that
llama.cpp (llama-bench) can be measured at the same shapes as bench_infer and bench/hf_infer.py.
Speed does not depend on the weight values of a dense model; for MoE the router is random, so
tokens spread over the experts as in bench_infer's random model. Weights are N(0, 0.02) bf16 from
one random block, sliced at random offsets per tensor (fast at 8B/30B sizes).

The vocabulary is the real Qwen3 tokenizer (tokenizer.json), written as llama.cpp's converter
writes it (gpt2 BPE, pre-tokenizer qwen2, padding tokens up to vocab_size). Without --tokenizer
it is a synthetic one of the same size: the 256 byte tokens of GPT-2's byte-level BPE, one
merge, filler tokens, bos/eos as control tokens — enough for benchmarks that send token ids
(bench/gpu_serve.sh), and no tokenizer file to carry.

    python3 bench/llama_gguf.py --config tests/fixtures/configs/qwen3-8b \
        --tokenizer DIR_WITH_TOKENIZER_JSON --out /dev/shm/qwen3-8b.gguf [--gguf-py DIR]

Needs numpy and llama.cpp's gguf-py (the `gguf` package, or its source folder via --gguf-py).
"""
import argparse
import json
import os
import sys

import numpy as np


def load_vocab(tok_dir, vocab_size):
    with open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    added = {t["content"]: t for t in tj.get("added_tokens", [])}
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [5] * vocab_size  # UNUSED, as llama.cpp's converter marks padding
    for s, i in vocab.items():
        tokens[i], types[i] = s, 1  # NORMAL
    for s, t in added.items():
        tokens[t["id"]], types[t["id"]] = s, (3 if t.get("special") else 4)  # CONTROL / USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return tokens, types, merges


def synthetic_vocab(vocab_size, special):
    """GPT-2's byte tokens (bytes_to_unicode), then filler; special {id: text}: control tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    tokens = [chr(c) for c in cs] + [f"[PAD{i}]" for i in range(256, vocab_size)]
    types = [1] * 256 + [5] * (vocab_size - 256)  # NORMAL bytes, UNUSED filler
    for i, name in special.items():  # Qwen's names: llama.cpp counts them end-of-generation
        tokens[i], types[i] = name, 3  # CONTROL
    return tokens, types, ["\u0120 \u0120"]  # one merge ("Ġ Ġ"): gguf-py drops an empty list


def tensor_list(cfg):
    """(name, numpy shape) in llama.cpp's names; numpy shape = (rows, cols) of the HF weight."""
    d, hd = cfg["hidden_size"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    hq, hkv, v = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    out = [("token_embd.weight", (v, d)), ("output_norm.weight", (d,)), ("output.weight", (v, d))]
    for l in range(cfg["num_hidden_layers"]):
        b = f"blk.{l}."
        out += [(b + "attn_norm.weight", (d,)), (b + "attn_q.weight", (hq * hd, d)),
                (b + "attn_k.weight", (hkv * hd, d)), (b + "attn_v.weight", (hkv * hd, d)),
                (b + "attn_output.weight", (d, hq * hd)), (b + "attn_q_norm.weight", (hd,)),
                (b + "attn_k_norm.weight", (hd,)), (b + "ffn_norm.weight", (d,))]
        if cfg.get("num_experts"):
            e, f = cfg["num_experts"], cfg["moe_intermediate_size"]
            out += [(b + "ffn_gate_inp.weight", (e, d)), (b + "ffn_gate_exps.weight", (e, f, d)),
                    (b + "ffn_up_exps.weight", (e, f, d)), (b + "ffn_down_exps.weight", (e, d, f))]
        else:
            f = cfg["intermediate_size"]
            out += [(b + "ffn_gate.weight", (f, d)), (b + "ffn_up.weight", (f, d)),
                    (b + "ffn_down.weight", (d, f))]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="folder with config.json")
    ap.add_argument("--tokenizer", help="folder with tokenizer.json (default: a synthetic vocabulary)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf-py", help="llama.cpp's gguf-py folder, when the gguf package is absent")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.gguf_py:
        sys.path.insert(0, a.gguf_py)
    import gguf

    with open(os.path.join(a.config, "config.json")) as f:
        cfg = json.load(f)
    moe = bool(cfg.get("num_experts"))
    arch = "qwen3moe" if moe else "qwen3"
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w = gguf.GGUFWriter(a.out, arch)
    w.add_name(os.path.basename(os.path.normpath(a.config)) + "-random")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    if moe:
        w.add_expert_count(cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    bos, eos = cfg.get("bos_token_id", 151643), cfg.get("eos_token_id", 151645)
    tokens, types, merges = load_vocab(a.tokenizer, cfg["vocab_size"]) if a.tokenizer else \
        synthetic_vocab(cfg["vocab_size"], {bos: "<|endoftext|>", **({eos: "<|im_end|>"} if eos != bos else {})})
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", 151643))
    w.add_eos_token_id(cfg.get("eos_token_id", 151645))
    w.add_pad_token_id(cfg.get("bos_token_id", 151643))
    w.add_add_bos_token(False)

    tl = tensor_list(cfg)
    for name, shape in tl:
        n = int(np.prod(shape))
        dt = gguf.GGMLQuantizationType.F32 if len(shape) == 1 else gguf.GGMLQuantizationType.BF16
        w.add_tensor_info(name, shape, np.dtype(np.float32 if len(shape) == 1 else np.uint16),
                          n * (4 if len(shape) == 1 else 2), raw_dtype=dt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(a.seed)
    block = (rng.standard_normal(1 << 26, dtype=np.float32) * 0.02)
    block = (block.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits (truncated)
    total = 0
    for name, shape in tl:
        n = int(np.prod(shape))
        if len(shape) == 1:
            arr = np.ones(shape, dtype=np.float32)  # norm weights: 1, as initialised
        else:
            arr = np.empty(n, dtype=np.uint16)
            pos = 0
            while pos < n:
                off = int(rng.integers(0, block.size // 2))
                k = min(n - pos, block.size - off)
                arr[pos:pos + k] = block[off:off + k]
                pos += k
            arr = arr.reshape(shape)
        w.write_tensor_data(arr)
        total += arr.nbytes
    w.close()
    print(f"llama_gguf: {a.out}: {arch}, {len(tl)} tensors, {total / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
