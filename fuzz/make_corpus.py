#!/usr/bin/env python3
"""Regenerates the committed seed corpora (fuzz/corpus/<harness>/) and the small tokenizer the
fuzz_prepare harness uses (fuzz/data/tok-mini/) from the repository's own files: the bundled
qwen3-micro model, tests/fixtures, data/sample.txt, and, when present, ../shared/qwen3-tokenizer
(the real Qwen3 tokenizer, trimmed) plus hand-made edge cases. Standard library only.

    python3 fuzz/make_corpus.py          # from the repository root (or anywhere)

Everything it writes is small (the corpora total a few hundred KB) and deterministic.
"""
import hashlib
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
SHARED = os.environ.get("AE_SHARED_DIR") or os.path.join(ROOT, "..", "shared")


def rd(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return f.read()


def put(harness, name, data):
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def jdump(o, indent=None):
    return json.dumps(o, ensure_ascii=False, indent=indent)


# ---- safetensors ---------------------------------------------------------------------------

DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
              "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def st_file(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes or None (zeros))."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, data in tensors:
        n = DTYPE_SIZE[dt]
        for s in shape:
            n *= s
        if data is None:
            data = bytes((i * 37 + 11) & 0x3f for i in range(n))  # small finite values
        assert len(data) == n, name
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        blobs.append(data)
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def safetensors_seeds():
    H = "fuzz_safetensors"
    # a tiny Qwen3 model with the real tensor names (hidden 8, 1 layer, vocab 16)
    L = [("model.embed_tokens.weight", "BF16", (16, 8), None),
         ("model.norm.weight", "F32", (8,), None),
         ("model.layers.0.input_layernorm.weight", "F32", (8,), None),
         ("model.layers.0.post_attention_layernorm.weight", "F32", (8,), None),
         ("model.layers.0.self_attn.q_proj.weight", "BF16", (8, 8), None),
         ("model.layers.0.self_attn.k_proj.weight", "BF16", (4, 8), None),
         ("model.layers.0.self_attn.v_proj.weight", "BF16", (4, 8), None),
         ("model.layers.0.self_attn.o_proj.weight", "BF16", (8, 8), None),
         ("model.layers.0.self_attn.q_norm.weight", "F32", (4,), None),
         ("model.layers.0.self_attn.k_norm.weight", "F32", (4,), None),
         ("model.layers.0.mlp.gate_proj.weight", "F16", (12, 8), None),
         ("model.layers.0.mlp.up_proj.weight", "F16", (12, 8), None),
         ("model.layers.0.mlp.down_proj.weight", "F16", (8, 12), None)]
    put(H, "tiny-qwen3.safetensors", st_file(L, {"format": "pt"}))
    put(H, "every-dtype.safetensors",
        st_file([(dt.lower(), dt, (2, 1), None) for dt in DTYPE_SIZE], {"format": "pt", "k": "v"}))
    put(H, "scalar-and-empty.safetensors",
        st_file([("scalar", "F32", (), f32(1.5)), ("empty", "BF16", (0, 4), b""),
                 ("nan", "F32", (2,), f32(float("nan"), float("inf")))]))
    put(H, "empty-header.safetensors", st_file([]))
    put(H, "metadata-null.safetensors", struct.pack("<Q", 22) + b'{"__metadata__":null} ')
    put(H, "unpadded.safetensors", st_file([("x", "I64", (3,), None)], pad=False))
    put(H, "8-dims.safetensors", st_file([("x", "U8", (1, 1, 1, 1, 1, 1, 1, 2), None)]))
    # a real file written by transformers / safetensors (tests/fixtures)
    put(H, "fixture-expected.safetensors", rd("tests/fixtures/models/dense_gqa1/expected.safetensors"))
    # broken ones
    good = st_file([("a", "F32", (2,), f32(1, 2)), ("b", "F16", (2,), b"\0<\0<")])
    put(H, "truncated.safetensors", good[:-3])
    put(H, "trailing-byte.safetensors", good + b"\0")
    put(H, "overlap.safetensors", struct.pack("<Q", 96) + (
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}').ljust(96) + b"\0" * 8)
    put(H, "duplicate.safetensors", struct.pack("<Q", 104) + (
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}').ljust(104) + b"\0" * 8)
    put(H, "huge-length.safetensors", struct.pack("<Q", 2 ** 63) + b"{}")
    put(H, "short.safetensors", b"\x02\0\0\0")


# ---- sharded index ----------------------------------------------------------------------------

def st_index_seeds():
    H = "fuzz_st_index"
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    wm = {"model.embed_tokens.weight": s1, "model.norm.weight": s1, "lm_head.weight": s2,
          "model.layers.0.self_attn.q_proj.weight": s2}
    put(H, "index.json", jdump({"metadata": {"total_size": 56}, "weight_map": wm}, 2))
    put(H, "index-minimal.json", jdump({"weight_map": wm}))
    put(H, "one-shard.json", jdump({"weight_map": {"model.embed_tokens.weight": s1,
                                                   "model.norm.weight": s1}}))
    put(H, "missing-tensor.json", jdump({"weight_map": dict(wm, **{"extra.weight": s1})}))
    put(H, "wrong-shard.json", jdump({"weight_map": dict(wm, **{"lm_head.weight": s1})}))
    put(H, "unlisted.json", jdump({"weight_map": {k: v for k, v in wm.items() if k != "lm_head.weight"}}))
    put(H, "bad-shard.json", jdump({"weight_map": {"a": "bad.safetensors"}}))
    put(H, "empty-shard.json", jdump({"weight_map": {"a": "empty.safetensors"}}))
    put(H, "folder-shard.json", jdump({"weight_map": {"a": "folder.safetensors"}}))
    put(H, "single-as-shard.json", jdump({"weight_map": {k: "model.safetensors" for k in wm}}))
    put(H, "path-escape.json", jdump({"weight_map": {"a": "../model.safetensors", "b": "/etc/passwd"}}))
    put(H, "no-such-shard.json", jdump({"weight_map": {"a": "model-00003-of-00003.safetensors"}}))
    put(H, "empty-map.json", '{"weight_map": {}}')
    put(H, "not-object.json", '{"weight_map": ["a"]}')
    put(H, "dup-key.json", '{"weight_map": {"lm_head.weight": "%s", "lm_head.weight": "%s"}}' % (s2, s2))


# ---- config.json ------------------------------------------------------------------------------

def config_seeds():
    H = "fuzz_config"
    for sub in sorted(os.listdir(os.path.join(ROOT, "tests/fixtures/configs"))):
        put(H, "fixture-%s.json" % sub, rd("tests/fixtures/configs/%s/config.json" % sub))
    for sub in sorted(os.listdir(os.path.join(ROOT, "tests/fixtures/models"))):
        put(H, "model-%s.json" % sub, rd("tests/fixtures/models/%s/config.json" % sub))
    micro = json.loads(rd("models/qwen3-micro/config.json"))
    put(H, "qwen3-micro.json", rd("models/qwen3-micro/config.json"))
    # hand-made: old and new vintages, MoE variants, students, nulls and lists
    old = dict(micro)
    old.pop("rope_parameters")
    old.pop("layer_types")
    old.update(rope_theta=10000.0, rope_scaling=None, transformers_version="4.51.0",
               bos_token_id=[8189, 1], eos_token_id=[8189, 8190], head_dim=None)
    put(H, "old-vintage.json", jdump(old, 2))
    moe = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 64,
           "hidden_size": 16, "intermediate_size": 32, "moe_intermediate_size": 8,
           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 4, "num_local_experts": 4, "num_experts_per_tok": 2, "norm_topk_prob": True,
           "decoder_sparse_step": 2, "mlp_only_layers": [0, 3], "use_sliding_window": True,
           "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention",
                                                 "sliding_attention", "full_attention"],
           "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "tie_word_embeddings": False}
    put(H, "moe-v5.json", jdump(moe, 2))
    moe_old = dict(moe, num_experts=4, rope_theta=1e6, sliding_window=None, use_sliding_window=False)
    for k in ("num_local_experts", "layer_types", "rope_parameters"):
        moe_old.pop(k)
    put(H, "moe-old.json", jdump(moe_old))
    mla = dict(micro, attention_target="mla", attention_replaced_layers=[0, 2], q_lora_rank=16,
               kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=32,
               rope_interleave=True)
    put(H, "student-mla-partial.json", jdump(mla, 2))
    gs = dict(micro, attention_target="gateswa", attn_output_gate="head", attn_sinks=True,
              use_sliding_window=True, sliding_window=64,
              layer_types=["sliding_attention", "full_attention"] * 2)
    put(H, "student-gateswa-head-sinks.json", jdump(gs, 2))
    put(H, "model-type-only.json", '{"model_type": "qwen3", "num_hidden_layers": 2}')
    # the student folders attnedit writes (io/config.h): convert's, and export --format hf's
    put(H, "attnedit-student.json", jdump(dict(mla, architectures=["AttneditStudentForCausalLM"],
                                               model_type="attnedit_student",
                                               attnedit_base_architecture="Qwen3ForCausalLM"), 2))
    put(H, "attnedit-gateswa-hf.json", jdump(dict(gs, architectures=["AttneditGateSWAForCausalLM"],
                                                  model_type="attnedit_gateswa"), 2))
    ds = dict(micro, architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3",
              first_k_dense_replace=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16,
              qk_rope_head_dim=16, v_head_dim=32, rope_interleave=True)
    put(H, "deepseek-v3-export.json", jdump(ds, 2))
    # large sizes that are still valid (every product fits in 64 bits)
    put(H, "large-sizes.json", jdump({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 1000000,
                                      "hidden_size": 65536, "intermediate_size": 1000000,
                                      "num_hidden_layers": 1024, "num_attention_heads": 1024,
                                      "num_key_value_heads": 1024, "head_dim": 65536,
                                      "max_position_embeddings": 2147483647}))
    put(H, "unsupported-rope.json", jdump(dict(micro, rope_parameters={"rope_type": "yarn", "factor": 4.0})))
    put(H, "minimal.json", '{"architectures": ["Qwen3ForCausalLM"]}')
    put(H, "not-object.json", "[1, 2, 3]")
    put(H, "nul-byte.json", b'{"architectures": ["Qwen3ForCausalLM"]}\0{"x": 1}')


# ---- tokenizers -------------------------------------------------------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def trim_tokenizer(tok, n_merges, string_merges=False):
    """The byte tokens plus the first n_merges merges that build on what is kept; ids renumbered
    densely (byte tokens first, in the original order), added tokens after them."""
    vocab = tok["model"]["vocab"]
    keep = set(bytes_to_unicode())
    merges = []
    for m in tok["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in keep and b in keep and a + b in vocab:
            merges.append([a, b])
            keep.add(a + b)
            if len(merges) == n_merges:
                break
    kept = sorted(keep, key=lambda s: vocab[s])
    new_vocab = {s: i for i, s in enumerate(kept)}
    out = json.loads(json.dumps(tok))  # deep copy
    out["model"]["vocab"] = new_vocab
    out["model"]["merges"] = [" ".join(m) for m in merges] if string_merges else merges
    n = len(new_vocab)
    for i, a in enumerate(out.get("added_tokens") or []):
        a["id"] = n + i
    return out


def tokenizer_seeds():
    H = "fuzz_tokenizer_json"
    sep = "\n#tokenizer_config.json\n"
    micro = json.loads(rd("models/qwen3-micro/tokenizer.json"))
    micro_cfg = json.loads(rd("models/qwen3-micro/tokenizer_config.json"))
    mini = trim_tokenizer(micro, 300)
    small_cfg = {"eos_token": micro_cfg["eos_token"], "bos_token": None,
                 "tokenizer_class": micro_cfg.get("tokenizer_class")}
    # fuzz/data/tok-mini: what fuzz_prepare tokenizes with
    d = os.path.join(FUZZ, "data", "tok-mini")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(jdump(mini))
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(jdump(small_cfg, 2) + "\n")
    put(H, "micro-trimmed+config.json", jdump(mini) + sep + jdump(small_cfg, 2))
    put(H, "micro-trimmed-string-merges.json", jdump(trim_tokenizer(micro, 120, string_merges=True)))
    real = os.path.join(SHARED, "qwen3-tokenizer", "tokenizer.json")
    if os.path.exists(real):
        with open(real, encoding="utf-8") as f:
            q = json.load(f)
        put(H, "qwen3-trimmed+eos-object.json",
            jdump(trim_tokenizer(q, 150)) + sep +
            jdump({"eos_token": {"content": "<|im_end|>", "special": True}}))
    # GPT-2 style: no normalizer, ByteLevel with its own regex, byte fallback, unk token
    b2u = bytes_to_unicode()
    v = {c: i for i, c in enumerate(b2u)}
    v.update({"<unk>": 256, "Ġt": 257, "he": 258, "Ġthe": 259, "<0x41>": 260})
    gpt2 = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
            "added_tokens": [{"id": 261, "content": "<|endoftext|>", "special": True},
                             {"id": 7, "content": " hello", "lstrip": True, "rstrip": True,
                              "single_word": True, "normalized": True, "special": False}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True},
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True, "fuse_unk": True,
                      "dropout": None, "vocab": v, "merges": ["Ġ t", "h e", "Ġt he"]}}
    put(H, "gpt2-style.json", jdump(gpt2) + sep + '{"eos_token": "<|endoftext|>"}')
    seq = dict(gpt2, normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]},
               pre_tokenizer={"type": "Sequence", "pretokenizers": [
                   {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated"},
                   {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]})
    put(H, "sequences.json", jdump(seq))
    seq_re = dict(seq, pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+|\\p{N}{1,3}"}, "behavior": "Isolated",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]})
    put(H, "sequences-regex.json", jdump(seq_re))
    minimal = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]},
               "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}
    put(H, "minimal.json", jdump(minimal))
    put(H, "unsupported-normalizer.json", jdump(dict(minimal, normalizer={"type": "Lowercase"})))
    put(H, "wordpiece.json", jdump(dict(minimal, model={"type": "WordPiece", "vocab": {"a": 0}})))
    put(H, "bad-merge.json", jdump(dict(minimal, model={"type": "BPE", "vocab": {"a": 0},
                                                         "merges": ["a b c", ["a"], 7]})))
    put(H, "bad-regex.json", jdump(dict(minimal, pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?<=a+)\\p{Zz}["}, "behavior": "Isolated"},
        {"type": "ByteLevel"}]})))
    put(H, "sparse-ids.json", jdump(dict(minimal, model={"type": "BPE", "vocab": {"a": 0, "b": 70000},
                                                          "merges": []},
                                         added_tokens=[{"id": 5, "content": "b"},
                                                       {"id": 9, "content": "xyz", "normalized": False},
                                                       {"id": 9, "content": "xyz", "special": True}])))
    put(H, "bad-config.json", jdump(minimal) + sep + '{"eos_token": 42}')
    put(H, "truncated.json", jdump(mini)[:3000])


def tokenize_seeds():
    H = "fuzz_tokenize"
    tricky = json.loads(rd("tests/fixtures/tok/tricky.json"))
    for i, s in enumerate(tricky):
        if s:
            put(H, "tricky-%02d.txt" % i, s)
    sample = rd("data/sample.txt")
    put(H, "sample-head.txt", sample[:1500])
    put(H, "special-tokens.txt", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"
                                 "</think>ok<|endoftext|><|endoftext|x <tool_call>{}</tool_call>")
    put(H, "ids.txt", "9707 1879, 11\n151643 151668 0\t42\r\n")
    put(H, "ids-out-of-range.txt", "1 2 3 999999999 -5")
    put(H, "ids-binary.bin", struct.pack(">8i", 0, 1, 255, 256, 8188, 151642, -1, 2 ** 31 - 1))
    put(H, "invalid-utf8.bin", b"ok \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \xe2\x82 end\xff")
    put(H, "nul-and-controls.bin", b"a\0b\x01\x1b[31mred\x7f\r\n")
    put(H, "nfc.txt", "A\u030a \u212b \u1e0b\u0323 \u0344 \u0958 \u2126 K\u212a \u037e \uac00\u11a8 \u0f73")
    put(H, "long-runs.txt", " " * 70 + "\n" * 10 + "1" * 40 + "'s'S'LL" + "!" * 65 + "a" * 100)


# ---- token files --------------------------------------------------------------------------------

TOKFILE_TOKJSON = b'{"fuzz": "tokenizer.json of fuzz_tokfile"}\n'  # as in fuzz_tokfile.c


def tokfile(ids, vocab=8192, eos=8189, h=None, version=1, reserved=0, n=None):
    if h is None:
        h = hashlib.sha256(TOKFILE_TOKJSON).digest()
    hdr = b"AETOKENS" + struct.pack("<IIQ", version, vocab, len(ids) if n is None else n) + h + \
        struct.pack("<II", eos, reserved)
    return hdr + struct.pack("<%dI" % len(ids), *ids)


def tokfile_seeds():
    H = "fuzz_tokfile"
    ids = [(i * 131 + 7) % 8189 for i in range(40)] + [8189] + [5, 6, 7, 8189]
    put(H, "small.tok", tokfile(ids))
    put(H, "one-token.tok", tokfile([8189]))
    put(H, "empty.tok", tokfile([]))
    put(H, "tiny-vocab.tok", tokfile([0, 1, 0, 1, 1], vocab=2, eos=1))
    put(H, "other-tokenizer.tok", tokfile(ids, h=b"\x11" * 32))
    put(H, "id-out-of-range.tok", tokfile([1, 2, 9000]))
    put(H, "eos-out-of-range.tok", tokfile([1, 2], eos=8192))
    put(H, "version-2.tok", tokfile([1, 2], version=2))
    put(H, "reserved.tok", tokfile([1, 2], reserved=1))
    put(H, "count-too-big.tok", tokfile([1, 2], n=3))
    put(H, "count-huge.tok", tokfile([1, 2], n=2 ** 62))
    put(H, "header-only-truncated.tok", tokfile([])[:40])
    put(H, "wrong-magic.tok", b"AETOKENZ" + tokfile([1])[8:])
    # fuzz/corpus/fuzz_tokfile/sample-micro.tok (kept, not regenerated here) is a real one:
    #   attnedit prepare-data --model models/qwen3-micro --out sample-micro.tok data/sample.txt


# ---- run folder JSON ----------------------------------------------------------------------------

def run_seeds():
    H = "fuzz_run_json"
    # settings of the seed runs, as fuzz_run_json.c's k_opts
    train = {"ctx": 16, "batch": 2, "accum": 1, "stage1_tokens": 256, "stage2_tokens": 256,
             "stage1_lr": 0.0010000000474974513, "stage2_lr": 0.00030000001424923539,
             "warmup_frac": 0.05000000074505806, "min_lr_ratio": 0.10000000149011612,
             "weight_decay": 0.00999999977648258, "clip": 1, "stage1_loss": "mse",
             "stage1_block": 0, "tau": 1, "cos_weight": 0.10000000149011612, "train": "all",
             "save_every": 1, "log_every": 10, "seed": "7"}
    hx = "b809d4a28d1ab3a27114bc7661658f26789a37ffa908dec604ba097102f66f74"
    base = {"attnedit_version": "0.1.0", "status": "training", "teacher": "/work/models/qwen3-8b",
            "teacher_sha256": hx, "data": "/work/data/train.tok",
            "data_sha256": "8f02482c7a9d130bbd6ca0a0e163ecb0a93cb27728f7042433fb77e7e93568bd",
            "train": train, "params": 1799360, "kv_bytes_per_token": 256}
    # targets matching tests/fixtures/configs/qwen3-8b-{mla,gateswa} (what the harness checks
    # a loaded spec against), and others that do not
    mla = {"kind": "mla", "kv_lora_rank": 512, "q_lora_rank": 0, "qk_rope_dim": 64,
           "qk_nope_dim": 64, "v_head_dim": 128, "full_every": 0, "window": 0,
           "gate": "elementwise", "sinks": False, "init": "teacher", "seed": "7",
           "init_kv_rel_err_mean": 0.42, "init_kv_rel_err_max": 0.48}
    gs = {"kind": "gateswa", "kv_lora_rank": 0, "q_lora_rank": 0, "qk_rope_dim": 0,
          "qk_nope_dim": 0, "v_head_dim": 0, "full_every": 6, "window": 1024,
          "gate": "elementwise", "sinks": False, "init": "random", "seed": "7"}
    put(H, "conversion-mla-8b.json", jdump(dict(base, target=mla), 1).replace(" ", "\t"))
    put(H, "conversion-gateswa-8b.json", jdump(dict(base, target=gs), 1).replace(" ", "\t"))
    put(H, "conversion-gateswa-full-layers.json",
        jdump(dict(base, target=dict(gs, full_every=0, full_layers=[5, 11, 17, 23, 29, 35]))))
    done = dict(base, status="done", target=dict(mla, layers=[0, 2], q_lora_rank=8),
                result={"stage1_tokens_done": 256, "stage2_tokens_done": 256,
                        "stage1_final_loss": 0.016, "stage2_final_loss": 1.25, "wall_s": 4.2})
    put(H, "conversion-done-micro.json", jdump(done, 1).replace(" ", "\t"))
    put(H, "conversion-large-settings.json",
        jdump(dict(base, target=dict(mla, kv_lora_rank=1048576, v_head_dim=1048576),
                   train=dict(train, ctx=16777216, batch=4096, accum=1, stage1_tokens=1e15,
                              save_every=16777216, log_every=16777216, clip=1e6, tau=100))))
    put(H, "conversion-bad-values.json",
        jdump(dict(base, target=dict(mla, kv_lora_rank=1e300, layers=[0, 0]),
                   train=dict(train, ctx=-5, batch=16777216, accum=16777216, seed="-1"))))
    # state.json: written by the seed runs (ctx 16, batch 2, accum 1, budgets 256/256 = 8
    # steps per stage, seed 7)
    def state(stage, step, opt_step, draws, budgets=True, interval=None):
        s = {"version": 1, "stage": stage, "step": step, "opt_step": opt_step,
             "final_loss": [0.0249, 0 if stage < 2 else 1.2566], "loader_draws": str(draws),
             "loader_rng": ["1a21f4b60afb2463", "aec21d0aca120a81", "7f6c80a846d86d65",
                            "2cdc4688550ed64b"], "ctx": 16, "batch": 2, "accum": 1}
        if budgets:
            s.update(stage1_tokens=256, stage2_tokens=256)
        s["seed"] = "7"
        if interval:
            s["interval"] = interval
        return jdump(s, 1).replace(" ", "\t")
    put(H, "state-stage1.json", state(0, 3, 3, 6, budgets=False))
    # the progress-line sums since the last log line (log_every 10: step 3 -> 3 steps), for a
    # student of 2 layers (the harness's)
    put(H, "state-interval.json", state(0, 3, 3, 6, interval={
        "steps": 3, "loss_sum": 0.0747, "cos_sum": 0, "top1": 0, "layer_sum": [0.031, 0.0437]}))
    put(H, "state-stage2.json", state(1, 2, 2, 20))
    put(H, "state-done.json", state(2, 0, 8, 32))
    put(H, "state-bad.json", '{"version": 1, "stage": 7, "step": 1e300, "opt_step": -1, '
                             '"loader_draws": "x", "loader_rng": [0, "", null, "ffffffffffffffffff"], '
                             '"ctx": 16.5, "batch": 2, "accum": 1, "seed": "7", "final_loss": [null, null]}')


# ---- prepare-data inputs ------------------------------------------------------------------------

def prepare_seeds():
    H = "fuzz_prepare"
    text, jsonl, valid = 0, 1, 2
    sample = rd("data/sample.txt")
    put(H, "sample-paragraphs.bin", bytes([text]) + sample[:2000])
    put(H, "sample-valid.bin", bytes([text | valid]) + sample[:2000])
    put(H, "eot-separated.bin", bytes([text]) + b"first doc<|endoftext|>  second\n doc \n<|endoftext|>"
        b"<|endoftext|>\n\nthird<|endoftext")
    put(H, "bom-crlf.bin", bytes([text]) + b"\xef\xbb\xbfline one\r\n \t\r\nline two\r\n")
    put(H, "jsonl.bin", bytes([jsonl]) + b'{"text": "hello world"}\n\n  {"text": "caf\\u00e9 <|im_end|>",'
        b' "meta": 1}\r\n{"text": ""}\n')
    put(H, "jsonl-valid.bin", bytes([jsonl | valid]) + b"".join(
        b'{"text": "document %d: the quick brown fox"}\n' % i for i in range(12)))
    put(H, "jsonl-bad.bin", bytes([jsonl]) + b'{"text": 5}\n{"text": "a"} x\n[1]\n{"text": "\\ud800"}\n')
    put(H, "invalid-utf8.bin", bytes([text]) + b"good text\n\nbad \xff\xfe text")
    put(H, "blank-only.bin", bytes([text]) + b" \n\t\r\n\n")


def api_seeds():
    """Request bodies of attnedit serve (first byte: bit 0 chat, bit 1 no chat template, bit 2 a
    64-token context), as tests/test_serve_http.c sends them, valid and not."""
    H = "fuzz_api_json"
    comp, chat = 0, 1
    seeds = {
        "completion.bin": (comp, {"prompt": "Chapter 1. The", "max_tokens": 8, "temperature": 0.7,
                                  "top_p": 0.9, "top_k": 40, "seed": 42}),
        "completion-ids.bin": (comp, {"prompt": [785, 3974, 13876, 38835], "max_tokens": 4,
                                      "echo": True, "logprobs": 5}),
        "completion-nested.bin": (comp, {"prompt": [[1, 2, 3]], "stop": ["\n\n", "The"],
                                         "stream": True, "stream_options": {"include_usage": True}}),
        "completion-all.bin": (comp, {"model": "qwen3", "prompt": ["one prompt"], "max_tokens": 3,
                                      "temperature": 0, "n": 1, "best_of": 1, "ignore_eos": True,
                                      "user": "u", "presence_penalty": 0, "frequency_penalty": 0,
                                      "logit_bias": {}, "suffix": None, "stop": "x"}),
        "chat.bin": (chat, {"model": "qwen3", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello <|im_end|> caf\u00e9"},
            {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHi."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 16, "logprobs": True, "top_logprobs": 3,
            "chat_template_kwargs": {"enable_thinking": False}}),
        "chat-short.bin": (chat | 4, {"messages": [{"role": "user", "content": "hi"}]}),
        "chat-no-template.bin": (chat | 2, {"messages": [{"role": "user", "content": "hi"}]}),
    }
    for name, (flags, body) in seeds.items():
        put(H, name, bytes([flags]) + jdump(body).encode("utf-8"))
    bad = [b"", b"{", b"[1,2]", b'{"prompt":null}', b'{"prompt":"x","max_tokens":1.5}',
           b'{"prompt":"x","stop":["a","b","c","d","e","f","g","h","i"]}', b'{"prompt":[-1]}',
           b'{"prompt":"\\ud800"}', b'{"prompt":"a\xff\xfe b"}', b'{"prompt":"x","model":"other"}']
    for i, b in enumerate(bad):
        put(H, "bad-%d.bin" % i, bytes([comp]) + b)
    put(H, "bad-chat.bin", bytes([chat]) + b'{"messages":[{"role":"tool","content":"x"}]}')


def eval_tasks_seeds():
    """Task data files of attnedit eval tasks (first byte: the task, an index into the task
    table of eval/tasks_registry.c; second: the file name among the evaluation split's, plus
    64 x the few-shot count): the test fixtures, and one hand-made record file per other format."""
    H = "fuzz_eval_tasks"
    ARC_E, ARC_C, HS, PIQA, BOOLQ, OBQA, WINO, SCIQ, LAMBADA = range(9)
    fx = "tests/fixtures/eval_tasks/data/"
    put(H, "arc-challenge.bin", bytes([ARC_C, 0]) + rd(fx + "arc_challenge/ARC-Challenge-Test.jsonl"))
    put(H, "arc-easy-hf-1shot.bin", bytes([ARC_E, 64 + 1]) + rd(fx + "arc_challenge/ARC-Challenge-Dev.jsonl"))
    put(H, "sciq.bin", bytes([SCIQ, 0]) + rd(fx + "sciq/test.json"))
    put(H, "sciq-jsonl.bin", bytes([SCIQ, 1]) + b"".join(
        jdump(r).encode() + b"\n" for r in json.loads(rd(fx + "sciq/valid.json"))))
    put(H, "winogrande-2shot.bin", bytes([WINO, 128]) + rd(fx + "winogrande/dev.jsonl"))
    hs = [{"activity_label": "Baking cookies", "ctx_a": "A woman is in a kitchen.", "ctx_b": "she",
           "endings": ["mixes flour [title] and sugar.", "sings.", "runs away.", "sleeps."], "label": 0},
          {"activity_label": "Home: Cleaning", "ctx_a": "[header] How to clean a pan.", "ctx_b": "",
           "endings": ["Use soap.", "Use sand.", "Use oil.", "Use nothing."], "label": "3"}]
    put(H, "hellaswag.bin", bytes([HS, 0]) + b"".join(jdump(r).encode() + b"\n" for r in hs))
    put(H, "hellaswag-txt.bin", bytes([HS, 2]) + b"A man is sitting on a roof. he\n2\nstarts.\n"
        b"falls.\nis using wrap to wrap a pair of skis.\nwaves.\n\nSecond item\n0\na\nb\nc\nd\n")
    piqa = [{"goal": "How do I open a jar?", "sol1": "Twist the lid.", "sol2": "Eat the lid."},
            {"goal": "Keep bread fresh", "sol1": "Leave it out.", "sol2": "Put it in a bag."}]
    put(H, "piqa-labels.bin", bytes([PIQA, 0]) + b"".join(jdump(r).encode() + b"\n" for r in piqa)
        + b"\n#labels\n0\n1\n")
    put(H, "piqa-hf.bin", bytes([PIQA, 1]) + b"".join(
        jdump(dict(r, label=i)).encode() + b"\n" for i, r in enumerate(piqa)))
    bq = [{"passage": "Water boils at 100 degrees at sea level.", "question": "does water boil at 100",
           "label": True}, {"passage": "Cats are mammals.", "question": "is a cat a bird", "label": "false"},
          {"passage": "p", "question": "q", "answer": 1, "label": 0}]
    put(H, "boolq.bin", bytes([BOOLQ, 0]) + b"".join(jdump(r).encode() + b"\n" for r in bq))
    put(H, "openbookqa-tsv.bin", bytes([OBQA, 0]) +
        b"ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
        b"7-980\tThe sun is responsible for\t(A) puppies learning new tricks (B) plants sprouting "
        b"(C) the moon (D) rain\tThe sun is responsible for plants sprouting\tB\n\n"
        b"8-1\tWhat is cold?\t(A) ice (B) fire\tice\t A\n")
    obqa = {"id": "7-980", "question_stem": "The sun is responsible for", "choices": {
        "text": ["puppies", "plants sprouting", "the moon", "rain"], "label": ["A", "B", "C", "D"]},
        "answerKey": "B"}
    put(H, "openbookqa-jsonl.bin", bytes([OBQA, 1]) + jdump(obqa).encode() + b"\n")
    lam = [{"text": "He opened the door and saw his old friend John"},
           {"context": "The capital of France is", "continuation": " Paris"}]
    put(H, "lambada.bin", bytes([LAMBADA, 0]) + b"".join(jdump(r).encode() + b"\n" for r in lam))
    put(H, "lambada-foundry.bin", bytes([LAMBADA, 2]) + jdump(lam[1]).encode() + b"\r\n")
    put(H, "bad-mixed.bin", bytes([ARC_E, 0]) + b'{"question": {"stem": 5}}\n[1]\n{"answerKey": "Z"}\n\xff\n')


def main():
    if os.path.isdir(CORPUS):
        for h in os.listdir(CORPUS):
            if h != "fuzz_tokfile":  # keeps the real token file made by hand
                shutil.rmtree(os.path.join(CORPUS, h))
    safetensors_seeds()
    st_index_seeds()
    config_seeds()
    tokenizer_seeds()
    tokenize_seeds()
    tokfile_seeds()
    run_seeds()
    prepare_seeds()
    api_seeds()
    eval_tasks_seeds()
    total = 0
    for h in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, h))
        size = sum(os.path.getsize(os.path.join(CORPUS, h, f)) for f in files)
        total += size
        print("%-22s %3d files %8d bytes" % (h, len(files), size))
    print("%-22s           %8d bytes" % ("total", total))


if __name__ == "__main__":
    main()
