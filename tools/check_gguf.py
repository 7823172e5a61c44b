#!/usr/bin/env python3
"""GGUF exports run in llama.cpp and give attnedit's perplexity (ctest test_gguf_llama).

For each case a model is exported with `attnedit export --format gguf`, scored by llama.cpp's
`llama-perplexity` (CPU by default; --ngl 99 to offload to a GPU) and by `attnedit eval ppl
--protocol llama` (the same protocol: consecutive chunks of --ctx tokens, each from an empty
cache, the second half of each chunk scored, no BOS) on the same text. The mean NLLs
(ln of llama.cpp's printed PPL) must agree to --tol (relative; default 1e-4 for f32 files); the
tokens llama.cpp evaluated (read back from its --kl-divergence-base file) must equal
`attnedit tokenize` of the text, and the chunk counts must match.

Cases: models/qwen3-micro (teacher -> qwen3), ../shared/teachers/qwen3-moe when present
(-> qwen3moe), MLA students of micro made with `attnedit convert` (no training; q_lora_rank 0
and 32 -> deepseek2) and, when ../shared/teachers/qwen3-moe is present, of that MoE teacher
(-> deepseek2 with MoE layers), all f32; plus micro as bf16 (llama.cpp then multiplies in bf16; checked
against --tol-bf16; MoE students against --tol-moe).
With ../shared/qwen3-tokenizer (the real Qwen3 tokenizer, 151,669 tokens), also a tiny random-weight
Qwen3 teacher in Hugging Face layout carrying those tokenizer files (vocab_size 151936 as real
Qwen3 checkpoints, so the GGUF pads the vocabulary; made here, `random_qwen3`) and an MLA student
of it trained by `attnedit convert` with a tiny budget (on the first ~64 KB of the corpus'
train-000.txt): these check the GGUF tokenizer metadata (pre-tokenizer "qwen2", merges, token
types, bos/eos/pad) by llama.cpp's tokens equalling attnedit's on the text.
--llama-convert SCRIPT (llama.cpp's convert_hf_to_gguf.py, run by --convert-python) also converts
that teacher and an MLA student's --format hf export with llama.cpp's own converter and compares
the files key by key and tensor by tensor (docs/EXPORT.md lists the differences allowed).

Usage: check_gguf.py --attnedit BIN [--llama-bin DIR] [--text FILE] [--ctx 128] [--ngl 0]
  DIR (default $AE_LLAMA_BIN) holds llama-perplexity; it is prepended to LD_LIBRARY_PATH (set
  LD_LIBRARY_PATH yourself for anything else it needs, e.g. a CUDA driver stub on a machine
  without a GPU). ../shared is $AE_SHARED_DIR when set. The text defaults to the first ~16 KB
  of ../shared/data/corpus/general/valid.txt (held out from the teachers' training), else
  data/sample.txt without <|endoftext|>.
Only the Python standard library is used (the converter, when asked for, needs torch).
"""
import argparse
import array
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("AE_SHARED_DIR") or os.path.join(os.path.dirname(ROOT), "shared")
MLA = ["--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--init", "teacher"]
QWEN3_TOK = os.path.join(SHARED, "qwen3-tokenizer")
TRAIN_TEXT = os.path.join(SHARED, "data", "corpus", "general", "train-000.txt")  # the student's data
REAL_TOK_CASES = ("qwen3-tok (teacher, real tokenizer)", "qwen3-tok/mla-q0 (student, trained)",
                  "qwen3-tok (teacher, mixed-script text)")


def run(cmd, env=None, timeout=1800):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def default_text(work):
    src = os.path.join(SHARED, "data", "corpus", "general", "valid.txt")
    if os.path.exists(src):
        with open(src, "rb") as f:
            data = f.read(16384)
        data = data[:data.rfind(b"\n") + 1].decode("utf-8", errors="ignore")
    else:
        with open(os.path.join(ROOT, "data", "sample.txt"), encoding="utf-8") as f:
            data = f.read().replace("<|endoftext|>", "\n")
    path = os.path.join(work, "text.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)
    return path


def write_safetensors(path, tensors):
    """tensors: [(name, shape, array('f'))] -> one F32 safetensors file (little-endian)."""
    header, off = {}, 0
    for name, shape, data in tensors:
        n = 4 * len(data)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _, _, data in tensors:
            if sys.byteorder != "little":
                data = array.array("f", data)
                data.byteswap()
            data.tofile(f)


def random_qwen3(folder, tok_dir, seed=0):
    """A tiny Qwen3ForCausalLM folder with random weights and the tokenizer files of tok_dir:
    vocab_size 151936 (real Qwen3's: ids beyond the tokenizer's 151,669 are padding), 2 layers,
    hidden 64, 4 query / 2 KV heads of 16, tied embeddings; token ids as Qwen3's config.json.
    Weights uniform with std 1/sqrt(fan_in) (embeddings 0.3, norms 1 +- 0.1): logits of a few
    nats' spread, so that the perplexity depends on every weight."""
    V, D, L, Hq, Hkv, hd, I = 151936, 64, 2, 4, 2, 16, 128
    rng = random.Random(seed)

    def uni(shape, std, mean=0.0):
        a, n = std * math.sqrt(3.0), math.prod(shape)
        return array.array("f", [mean + rng.uniform(-a, a) for _ in range(n)])

    def lin(rows, cols):
        return (rows, cols), uni((rows, cols), 1.0 / math.sqrt(cols))

    t = [("model.embed_tokens.weight", (V, D), uni((V, D), 0.3))]
    for l in range(L):
        b = f"model.layers.{l}."
        for name, (shape, w) in [("self_attn.q_proj.weight", lin(Hq * hd, D)),
                                 ("self_attn.k_proj.weight", lin(Hkv * hd, D)),
                                 ("self_attn.v_proj.weight", lin(Hkv * hd, D)),
                                 ("self_attn.o_proj.weight", lin(D, Hq * hd)),
                                 ("mlp.gate_proj.weight", lin(I, D)), ("mlp.up_proj.weight", lin(I, D)),
                                 ("mlp.down_proj.weight", lin(D, I))]:
            t.append((b + name, shape, w))
        for name, n in [("input_layernorm.weight", D), ("post_attention_layernorm.weight", D),
                        ("self_attn.q_norm.weight", hd), ("self_attn.k_norm.weight", hd)]:
            t.append((b + name, (n,), uni((n,), 0.1, 1.0)))
    t.append(("model.norm.weight", (D,), uni((D,), 0.1, 1.0)))
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), t)
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": V,
           "hidden_size": D, "intermediate_size": I, "num_hidden_layers": L,
           "num_attention_heads": Hq, "num_key_value_heads": Hkv, "head_dim": hd,
           "hidden_act": "silu", "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "tie_word_embeddings": True, "attention_bias": False,
           "use_sliding_window": False, "sliding_window": None, "bos_token_id": 151643,
           "eos_token_id": 151645, "torch_dtype": "float32"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, name), os.path.join(folder, name))
    return folder


# Mixed-script text for the real tokenizer: digits (Qwen splits them one by one), CJK, emoji,
# accents (all NFC already: llama.cpp does not normalise), tabs, runs of spaces, contractions,
# CRLF line ends. No special-token text (the two tools need not agree on parsing it).
STRESS = ("Numbers 1234567890, 3.14159, 1,000,000 and 2026-11-29T12:00:00Z; prices $19.99, \u20ac5, "
          "\u00a5300.\n\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002"
          "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4 \ubb38\uc7a5.\n"
          "Emoji \U0001f642\U0001f680\U0001f469\u200d\U0001f4bb and accents: caf\u00e9, na\u00efve, "
          "\u00c5ngstr\u00f6m, Stra\u00dfe, \u0130stanbul.\n"
          "Code:\tdef f(x):\n\t    return x**2  # comment\n    if (a&&b) { c += d; }\n"
          "Contractions: don't, I'm, they've, we'll, she'd, it's. ALL CAPS and   runs    of     spaces."
          "\r\nWindows line\r\nendings   \r\n\n\n")


def stress_text(work, base):
    """base's first 4 KB then STRESS repeated: ~8 chunks of 128 Qwen3 tokens."""
    with open(base, encoding="utf-8") as f:
        head = f.read(4096)
    path = os.path.join(work, "text-mixed.txt")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(head[:head.rfind("\n") + 1] + STRESS * 6)
    return path


def real_tok_cases(a, work, text):
    """The real-tokenizer teacher and its MLA student trained on a tiny budget (cases)."""
    teacher = random_qwen3(os.path.join(work, "qwen3-tok-teacher"), QWEN3_TOK)
    with open(TRAIN_TEXT, "rb") as f:
        data = f.read(65536)
    src = os.path.join(work, "train.txt")
    with open(src, "wb") as f:
        f.write(data[:data.rfind(b"\n") + 1])
    tokens = os.path.join(work, "train.tok")
    run([a.attnedit, "prepare-data", "--model", teacher, "--out", tokens, "--quiet", src])
    budget = ["--data", tokens, "--ctx", "128", "--batch", "2", "--stage1-tokens", "4096",
              "--stage2-tokens", "2048", "--log-every", "100", "--device", "cpu"]
    return [(REAL_TOK_CASES[0], teacher, None, "f32"), (REAL_TOK_CASES[1], teacher, MLA + budget, "f32"),
            (REAL_TOK_CASES[2], teacher, None, "f32", stress_text(work, text))]


# ---- comparison with llama.cpp's own converter (--llama-convert)

GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
               11: "<q", 12: "<d"}
GGML_BYTES = {0: 4, 1: 2, 30: 2}  # F32, F16, BF16: bytes per element


def read_gguf(path):
    """(metadata {key: value}, tensors {name: (type, dims, bytes)}) of a GGUF v3 file."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        pos += n
        return buf[pos - n:pos].decode("utf-8", errors="surrogateescape")

    def value(t):
        if t == 8:
            return string()
        if t == 9:
            et, n = take("<I"), take("<Q")
            return [value(et) for _ in range(n)]
        return take(GGUF_SCALAR[t])

    if buf[:4] != b"GGUF":
        raise RuntimeError(f"{path}: not a GGUF file")
    pos = 4
    _, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name, nd = string(), take("<I")
        dims = [take("<Q") for _ in range(nd)]
        infos.append((name, dims, take("<I"), take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    tensors = {}
    for name, dims, t, off in infos:
        if t not in GGML_BYTES:
            raise RuntimeError(f"{path}: tensor {name} has type {t} (only F32/F16/BF16 compared)")
        n = GGML_BYTES[t] * math.prod(dims)
        tensors[name] = (t, dims, buf[base + off:base + off + n])
    return meta, tensors


# What may differ from the converter's file: attnedit writes general.alignment and the folder name;
# the converter adds a size label, and for dense deepseek2 the explicit lm_head (attnedit leaves
# a tied head out) and the expert keys of DeepSeek's dummy MoE fields (no layer is MoE).
CONVERT_ALLOWED = re.compile(r"general\.(alignment|name|size_label)$|deepseek2\.expert_")


def compare_with_converter(a, work, name, hf_dir, ours_model):
    """Runs llama.cpp's convert_hf_to_gguf.py on hf_dir and compares its GGUF with attnedit's
    export of ours_model (both f32): every metadata key and tensor; returns 0 when equal."""
    stem = re.sub(r"[^\w.-]", "_", name)
    theirs, ours = os.path.join(work, f"{stem}-convert.gguf"), os.path.join(work, f"{stem}-ours.gguf")
    env = dict(os.environ)
    stub = os.path.join(work, "stub")  # the converter imports sentencepiece before it looks for
    os.makedirs(stub, exist_ok=True)   # tokenizer.model; a stub lets it fall back to BPE
    with open(os.path.join(stub, "sentencepiece.py"), "w") as f:
        f.write("class SentencePieceProcessor:\n    pass\n")
    gguf_py = os.path.join(os.path.dirname(os.path.abspath(a.llama_convert)), "gguf-py")
    env["PYTHONPATH"] = os.pathsep.join([gguf_py, stub] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    run([a.convert_python, a.llama_convert, hf_dir, "--outfile", theirs, "--outtype", "f32"], env=env)
    run([a.attnedit, "export", "--model", ours_model, "--format", "gguf", "--out", ours, "--dtype", "f32",
         "--force"])
    (mo, to), (mt, tt) = read_gguf(ours), read_gguf(theirs)
    bad = [f"key {k}" for k in sorted(set(mo) | set(mt))
           if not CONVERT_ALLOWED.search(k) and mo.get(k) != mt.get(k)]
    tied = "output.weight" not in to and "output.weight" in tt and tt["output.weight"][2] == to["token_embd.weight"][2]
    bad += [f"tensor {k}" for k in sorted(set(to) | set(tt))
            if to.get(k) != tt.get(k) and not (k == "output.weight" and tied)]
    print(f"{name}: attnedit's GGUF vs llama.cpp's convert_hf_to_gguf.py: {len(mo)} keys, {len(to)} "
          f"tensors: {'identical' if not bad else 'DIFFER: ' + ', '.join(bad[:8])}", flush=True)
    for f in (ours, theirs):
        os.remove(f)
    return 1 if bad else 0


def llama_ppl(a, gguf, text, logits):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = a.llama_bin + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    cmd = [os.path.join(a.llama_bin, "llama-perplexity"), "-m", gguf, "-f", text, "-c", str(a.ctx),
           "-b", str(a.ctx), "-ngl", str(a.ngl), "-t", str(a.threads), "-ctk", "f32", "-ctv", "f32",
           "--kl-divergence-base", logits]
    out = run(cmd, env=env)
    log = out.stdout + out.stderr
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
    c = re.search(r"calculating perplexity over (\d+) chunks", log)
    if not m or not c:
        raise RuntimeError(f"{' '.join(cmd)}: no 'Final estimate' in its output\n{log[-3000:]}")
    with open(logits, "rb") as f:  # "_logits_", n_ctx, n_vocab, n_chunk (int32), tokens
        head = f.read(20)
        if head[:8] != b"_logits_":
            raise RuntimeError(f"{logits}: not a llama-perplexity logits file")
        n_ctx, _, n_chunk = struct.unpack("<iii", head[8:])
        toks = list(struct.unpack(f"<{n_ctx * n_chunk}i", f.read(4 * n_ctx * n_chunk)))
    return math.log(float(m.group(1))), int(c.group(1)), toks, " ".join(cmd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attnedit", required=True)
    p.add_argument("--llama-bin", default=os.environ.get("AE_LLAMA_BIN"))
    p.add_argument("--text")
    p.add_argument("--ctx", type=int, default=128)
    p.add_argument("--ngl", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--tol-bf16", type=float, default=1e-2)
    p.add_argument("--tol-moe", type=float, default=1e-3,
                   help="MLA students of MoE teachers (f32): llama.cpp's own result moves by ~7e-5 "
                        "with the batch size there (top-k routing near ties); see docs/EXPORT.md")
    p.add_argument("--keep", help="work folder to keep (default: a temporary one, removed)")
    p.add_argument("--only", help="run only the cases whose name matches this regular expression")
    p.add_argument("--llama-convert", help="llama.cpp's convert_hf_to_gguf.py (its gguf-py beside it): "
                   "with the real tokenizer, also compare attnedit's GGUF of the teacher and of an MLA "
                   "student with the converter's, key by key and tensor by tensor")
    p.add_argument("--convert-python", default=sys.executable,
                   help="the Python that runs the converter (needs torch, transformers, numpy)")
    a = p.parse_args()
    if not a.llama_bin or not os.access(os.path.join(a.llama_bin, "llama-perplexity"), os.X_OK):
        print("SKIP: no llama-perplexity (give --llama-bin DIR or set AE_LLAMA_BIN)")
        return 77
    work = a.keep or tempfile.mkdtemp(prefix="check_gguf.")
    os.makedirs(work, exist_ok=True)
    default = text = a.text or default_text(work)
    micro = os.path.join(ROOT, "models", "qwen3-micro")
    moe = os.path.join(SHARED, "teachers", "qwen3-moe")
    cases = [("qwen3-micro (teacher)", micro, None, "f32"),
             ("qwen3-micro (teacher, bf16)", micro, None, "bf16")]
    if os.path.exists(os.path.join(moe, "config.json")):
        cases.append(("qwen3-moe (teacher)", moe, None, "f32"))
    cases += [("qwen3-micro/mla-q0 (student)", micro, MLA, "f32"),
              ("qwen3-micro/mla-q32 (student)", micro, MLA + ["--q-lora-rank", "32"], "f32")]
    if os.path.exists(os.path.join(moe, "config.json")):  # MoE MLA students -> deepseek2 with MoE
        cases += [("qwen3-moe/mla-q0 (student)", moe, MLA, "f32"),
                  ("qwen3-moe/mla-q32 (student)", moe, MLA + ["--q-lora-rank", "32"], "f32")]
    real_tok = os.path.exists(os.path.join(QWEN3_TOK, "tokenizer.json")) and os.path.exists(TRAIN_TEXT)
    if a.only:
        cases = [c for c in cases if re.search(a.only, c[0])]
    print(f"text {text}, ctx {a.ctx}, llama.cpp {a.llama_bin}")
    print(f"{'case':38s} {'arch':9s} {'chunks':>6s} {'tokens':>6s} {'attnedit NLL':>14s} "
          f"{'llama.cpp NLL':>14s} {'rel. diff':>9s}")
    bad = 0
    try:
        if real_tok and (not a.only or any(re.search(a.only, n) for n in REAL_TOK_CASES)):
            cases += [c for c in real_tok_cases(a, work, text) if not a.only or re.search(a.only, c[0])]
        for i, (name, model, convert, dtype, *case_text) in enumerate(cases):
            text = case_text[0] if case_text else default
            model_is_moe = model == moe
            if convert:
                student = os.path.join(work, f"student{i}")
                run([a.attnedit, "convert", "--teacher", model, *convert, "--out", student, "--force"])
                model = student
            gguf = os.path.join(work, f"case{i}-{dtype}.gguf")
            exp = run([a.attnedit, "export", "--model", model, "--format", "gguf", "--out", gguf,
                       "--dtype", dtype, "--force"])
            arch = re.search(r" as (\w+) ", exp.stderr).group(1)
            ours = run([a.attnedit, "eval", "ppl", "--model", model, "--file", text, "--ctx", str(a.ctx),
                        "--protocol", "llama", "--json", "--device", "cpu"]).stdout
            ours = json.loads(ours.strip().splitlines()[0])
            logits = os.path.join(work, f"case{i}.logits")  # ~19 MB per chunk with Qwen3's vocabulary
            theirs, chunks, toks, cmd = llama_ppl(a, gguf, text, logits)
            os.remove(logits)
            ids = [int(t) for t in run([a.attnedit, "tokenize", "--model", model, "--file", text]).stdout.split()]
            tok_ok = ids[:len(toks)] == toks and chunks == ours["chunks"] and chunks == len(ids) // a.ctx
            rel = abs(ours["mean_nll"] - theirs) / abs(ours["mean_nll"])
            tol = a.tol if dtype == "f32" else a.tol_bf16
            if convert and model_is_moe:
                tol = a.tol_moe
            ok = tok_ok and rel <= tol
            bad += not ok
            note = "" if tok_ok else f"  TOKENS DIFFER (attnedit {len(ids)} ids, llama.cpp {chunks} chunks)"
            print(f"{name:38s} {arch:9s} {chunks:6d} {ours['tokens']:6d} {ours['mean_nll']:14.9f} "
                  f"{theirs:14.9f} {rel:9.2e}  {'OK' if ok else 'MISMATCH'} ({dtype}){note}", flush=True)
            if i == 0:
                print(f"  e.g. {cmd}")
        if a.llama_convert and real_tok:
            teacher = os.path.join(work, "qwen3-tok-teacher")
            if not os.path.isdir(teacher):
                random_qwen3(teacher, QWEN3_TOK)
            bad += compare_with_converter(a, work, "qwen3-tok-teacher", teacher, teacher)
            student, hf = os.path.join(work, "convert-student"), os.path.join(work, "convert-student-hf")
            run([a.attnedit, "convert", "--teacher", teacher, *MLA, "--q-lora-rank", "24", "--out", student,
                 "--force"])
            run([a.attnedit, "export", "--model", student, "--format", "hf", "--dtype", "f32", "--out", hf,
                 "--force"])
            bad += compare_with_converter(a, work, "qwen3-tok/mla-q24", hf, student)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("all OK" if not bad else f"{bad} MISMATCH")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
