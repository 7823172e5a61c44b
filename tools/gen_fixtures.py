#!/usr/bin/env python3
"""Generate the golden fixtures that attnedit's parity tests compare against.

Runs with transformers + tokenizers + torch (the GPU machine has them; everything here runs on
its CPU in fp32 so the numbers are exact references). Outputs are small and committed under
tests/fixtures/; the C build never needs Python.

  python3 tools/gen_fixtures.py tokenizer --tokenizer DIR --out FILE.jsonl
  python3 tools/gen_fixtures.py tiny --out tests/fixtures/models
  python3 tools/gen_fixtures.py teacher --model DIR --name NAME --out tests/fixtures/teachers

tokenizer: encodes every string of tests/fixtures/tok/tricky.json (no special tokens added; special
  tokens inside the text are split out as HF does) and decodes the ids back; also decodes a few id
  sequences that form invalid UTF-8. One JSON object per line: {"text", "ids", "decoded"} or
  {"decode_ids", "decoded"}.
tiny: builds small random Qwen3 / Qwen3-MoE models (several shapes), saves them with
  save_pretrained, and writes expected.safetensors beside each: input_ids (I32, T), logits (F32, T×V)
  and greedy (I32): the greedy continuation of the first 8 ids.
teacher: logits of a fixed prompt, greedy continuation and the perplexity of data/sample.txt under
  the eval-ppl protocol (docs split on <|endoftext|>, windows of CTX tokens, stride CTX).
"""
import argparse
import json
import math
import os
import sys

import torch

torch.set_grad_enabled(False)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def save_st(path, tensors):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


# ---------------------------------------------------------------- tokenizer
def gen_tokenizer(a):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.tokenizer, "tokenizer.json"))
    cases = json.load(open(os.path.join(ROOT, "tests/fixtures/tok/tricky.json"), encoding="utf-8"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for text in cases:
            ids = tok.encode(text, add_special_tokens=False).ids
            dec = tok.decode(ids, skip_special_tokens=False)
            f.write(json.dumps({"text": text, "ids": ids, "decoded": dec}, ensure_ascii=True) + "\n")
        # id sequences whose bytes are not valid UTF-8: single byte tokens of a multi-byte char,
        # a lone continuation byte, a truncated 4-byte sequence, and an emoji cut in half.
        byte_tokens = {}
        for tokstr, i in tok.get_vocab(with_added_tokens=False).items():
            if len(tokstr) == 1:
                byte_tokens[tokstr] = i
        bmap = bytes_to_unicode()
        def bid(b):
            return byte_tokens[bmap[b]]
        seqs = [
            [bid(0xE6)],                       # lead byte of a 3-byte char alone
            [bid(0xE6), bid(0x97)],            # 2 of 3 bytes
            [bid(0x80)],                       # lone continuation byte
            [bid(0x41), bid(0xF0), bid(0x9F), bid(0x98), bid(0x41)],  # cut 4-byte seq between ASCII
            [bid(0xC0), bid(0xAF)],            # overlong encoding
            [bid(0xED), bid(0xA0), bid(0x80)],  # UTF-16 surrogate encoded in UTF-8
            [bid(0xF4), bid(0x90), bid(0x80), bid(0x80)],  # beyond U+10FFFF
            [bid(0xFF), bid(0xFE), bid(0x41)],
        ]
        emoji = tok.encode("😀", add_special_tokens=False).ids
        seqs.append(emoji[:-1] if len(emoji) > 1 else emoji)
        seqs.append([vocab - 3, bid(0x41), vocab - 1])  # special tokens around text
        for s in seqs:
            f.write(json.dumps({"decode_ids": s, "decoded": tok.decode(s, skip_special_tokens=False)},
                               ensure_ascii=True) + "\n")
    print(f"wrote {a.out}: {len(cases)} encode cases")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


# ---------------------------------------------------------------- tiny random models
TINY = [
    # name, kind, config kwargs, post-edits of config.json, save dtype
    ("dense_gqa1", "dense", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                                 num_hidden_layers=2, intermediate_size=128, tie_word_embeddings=True,
                                 rope_theta=10000.0), ["old_rope"], torch.float32),
    # config.json without head_dim: transformers' Qwen3Config then uses its default, 128
    ("dense_head_dim_default", "dense", dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
                                             head_dim=128, num_hidden_layers=1, intermediate_size=64,
                                             tie_word_embeddings=True, rope_theta=1000000.0),
     ["drop_head_dim"], torch.float32),
    ("dense_gqa2_untied", "dense", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
                                        num_hidden_layers=3, intermediate_size=96, tie_word_embeddings=False,
                                        rope_theta=1000000.0), [], torch.float32),
    ("dense_gqa4", "dense", dict(hidden_size=96, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                 num_hidden_layers=2, intermediate_size=160, tie_word_embeddings=True,
                                 rope_theta=500000.0), [], torch.bfloat16),
    ("moe_norm_topk", "moe", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                  num_hidden_layers=3, intermediate_size=96, moe_intermediate_size=32,
                                  num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                                  decoder_sparse_step=1, mlp_only_layers=[1], tie_word_embeddings=True,
                                  rope_theta=1000000.0), ["num_experts_key"], torch.float32),
    ("moe_sparse_step2_untied", "moe", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=1,
                                            head_dim=20, num_hidden_layers=4, intermediate_size=80,
                                            moe_intermediate_size=24, num_experts=6, num_experts_per_tok=3,
                                            norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[],
                                            tie_word_embeddings=False, rope_theta=10000.0), [], torch.float16),
]
TINY_VOCAB = 320
TINY_T = 20


def make_config(kind, kw):
    from transformers import Qwen3Config, Qwen3MoeConfig
    kw = dict(kw)
    theta = kw.pop("rope_theta")
    common = dict(vocab_size=TINY_VOCAB, max_position_embeddings=512, rms_norm_eps=1e-6,
                  attention_bias=False, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    cls = Qwen3Config if kind == "dense" else Qwen3MoeConfig
    try:
        cfg = cls(**common, **kw, rope_parameters={"rope_type": "default", "rope_theta": theta})
    except TypeError:
        cfg = cls(**common, **kw, rope_theta=theta)
    return cfg


def randomize(model, gen):
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 2:
            fan_in = p.shape[1]
            scale = 1.0 if "embed_tokens" in name else 1.5 / math.sqrt(fan_in)
            p.copy_(scale * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def edit_config(path, edits):
    cfg = json.load(open(path))
    for e in edits:
        if e == "drop_head_dim":
            assert cfg["head_dim"] == 128
            del cfg["head_dim"]
        elif e == "old_rope":
            rp = cfg.pop("rope_parameters", None)
            cfg["rope_theta"] = rp["rope_theta"] if rp else cfg.get("rope_theta")
        elif e == "num_experts_key":
            if "num_local_experts" in cfg:
                cfg["num_experts"] = cfg.pop("num_local_experts")
    json.dump(cfg, open(path, "w"), indent=2)


def gen_tiny(a):
    from transformers import AutoModelForCausalLM
    for i, (name, kind, kw, edits, dtype) in enumerate(TINY):
        gen = torch.Generator().manual_seed(1000 + i)
        cfg = make_config(kind, kw)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        randomize(model, gen)
        if not cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
        model = model.to(dtype).to(torch.float32)  # round weights to the saved dtype
        out = os.path.join(a.out, name)
        os.makedirs(out, exist_ok=True)
        model.to(dtype).save_pretrained(out, safe_serialization=True)
        edit_config(os.path.join(out, "config.json"), edits)
        # Reference = the saved folder loaded in fp32, as a user gets it (this also recomputes
        # the RoPE inverse frequencies in fp32 instead of keeping the bf16/f16-cast buffer).
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32,
                                                     attn_implementation="eager").eval()
        ids = torch.randint(0, TINY_VOCAB, (1, TINY_T), generator=gen)
        logits = model(input_ids=ids).logits[0].float()
        # explicit all-ones mask: generate() would otherwise mask every pad-id token in the prompt
        greedy = model.generate(ids[:, :8], attention_mask=torch.ones_like(ids[:, :8]),
                                max_new_tokens=12, do_sample=False, min_new_tokens=12,
                                eos_token_id=None, pad_token_id=1)[0, 8:]
        save_st(os.path.join(out, "expected.safetensors"),
                {"input_ids": ids[0].to(torch.int32), "logits": logits,
                 "greedy": greedy.to(torch.int32)})
        for junk in ("generation_config.json",):
            p = os.path.join(out, junk)
            if os.path.exists(p):
                os.remove(p)
        print(f"{name}: max|logit| {logits.abs().max():.3f} greedy {greedy.tolist()}")


# ---------------------------------------------------------------- trained teachers
PROMPT = "The Time Traveller (for so it will be convenient to speak of him) was expounding"


def ppl_protocol(model, tok, path, ctx):
    text = open(path, encoding="utf-8").read()
    total, n = 0.0, 0
    for doc in text.split("<|endoftext|>"):
        ids = tok.encode(doc, add_special_tokens=False).ids
        for s in range(0, len(ids) - 1, ctx):
            win = ids[s:s + ctx + 1]
            if len(win) < 2:
                break
            x = torch.tensor([win[:-1]])
            y = torch.tensor(win[1:])
            lp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)
            total += -lp[torch.arange(len(y)), y].sum().item()
            n += len(y)
    return n, total / n


def gen_teacher(a):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ids = torch.tensor([tok.encode(PROMPT, add_special_tokens=False).ids])
    logits = model(input_ids=ids).logits[0].float()
    greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False, min_new_tokens=24,
                            eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:]
    n, nll = ppl_protocol(model, tok, os.path.join(ROOT, "data/sample.txt"), a.ctx)
    os.makedirs(a.out, exist_ok=True)
    save_st(os.path.join(a.out, f"{a.name}.safetensors"),
            {"input_ids": ids[0].to(torch.int32), "logits": logits, "greedy": greedy.to(torch.int32),
             "ppl_tokens": torch.tensor([n], dtype=torch.int64),
             "ppl_mean_nll": torch.tensor([nll], dtype=torch.float64),
             "ppl_ctx": torch.tensor([a.ctx], dtype=torch.int64)})
    print(f"{a.name}: T={ids.shape[1]} max|logit| {logits.abs().max():.3f} greedy {greedy.tolist()} "
          f"ppl tokens {n} nll {nll:.6f} ppl {math.exp(nll):.4f}")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenizer")
    t.add_argument("--tokenizer", required=True)
    t.add_argument("--out", required=True)
    m = sub.add_parser("tiny")
    m.add_argument("--out", required=True)
    r = sub.add_parser("teacher")
    r.add_argument("--model", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--ctx", type=int, default=64)
    a = p.parse_args()
    {"tokenizer": gen_tokenizer, "tiny": gen_tiny, "teacher": gen_teacher}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
