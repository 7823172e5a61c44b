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

Usage: check_gguf.py --attnedit BIN [--llama-bin DIR] [--text FILE] [--ctx 128] [--ngl 0]
  DIR (default $AE_LLAMA_BIN) holds llama-perplexity; it is prepended to LD_LIBRARY_PATH (set
  LD_LIBRARY_PATH yourself for anything else it needs, e.g. a CUDA driver stub on a machine
  without a GPU). The text defaults to the first ~16 KB of ../shared/data/corpus/general/valid.txt
  (held out from the teachers' training), else data/sample.txt without <|endoftext|>.
Only the Python standard library is used.
"""
import argparse
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MLA = ["--target", "mla", "--kv-lora-rank", "32", "--qk-rope-dim", "8", "--init", "teacher"]


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
    a = p.parse_args()
    if not a.llama_bin or not os.access(os.path.join(a.llama_bin, "llama-perplexity"), os.X_OK):
        print("SKIP: no llama-perplexity (give --llama-bin DIR or set AE_LLAMA_BIN)")
        return 77
    work = a.keep or tempfile.mkdtemp(prefix="check_gguf.")
    os.makedirs(work, exist_ok=True)
    text = a.text or default_text(work)
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
    print(f"text {text}, ctx {a.ctx}, llama.cpp {a.llama_bin}")
    print(f"{'case':34s} {'arch':9s} {'chunks':>6s} {'tokens':>6s} {'attnedit NLL':>14s} "
          f"{'llama.cpp NLL':>14s} {'rel. diff':>9s}")
    bad = 0
    try:
        for i, (name, model, convert, dtype) in enumerate(cases):
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
            ours = __import__("json").loads(ours.strip().splitlines()[0])
            theirs, chunks, toks, cmd = llama_ppl(a, gguf, text, os.path.join(work, f"case{i}.logits"))
            ids = [int(t) for t in run([a.attnedit, "tokenize", "--model", model, "--file", text]).stdout.split()]
            tok_ok = ids[:len(toks)] == toks and chunks == ours["chunks"] and chunks == len(ids) // a.ctx
            rel = abs(ours["mean_nll"] - theirs) / abs(ours["mean_nll"])
            tol = a.tol if dtype == "f32" else a.tol_bf16
            if convert and model_is_moe:
                tol = a.tol_moe
            ok = tok_ok and rel <= tol
            bad += not ok
            note = "" if tok_ok else f"  TOKENS DIFFER (attnedit {len(ids)} ids, llama.cpp {chunks} chunks)"
            print(f"{name:34s} {arch:9s} {chunks:6d} {ours['tokens']:6d} {ours['mean_nll']:14.9f} "
                  f"{theirs:14.9f} {rel:9.2e}  {'OK' if ok else 'MISMATCH'} ({dtype}){note}", flush=True)
            if i == 0:
                print(f"  e.g. {cmd}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("all OK" if not bad else f"{bad} MISMATCH")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
