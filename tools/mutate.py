#!/usr/bin/env python3
"""Mutation check: plants one-line bugs, one at a time, in a scratch copy of the committed tree,
rebuilds (CPU backend) and runs the test suite; prints which bugs the suite caught (killed) and
which it missed (survived). None may survive: run it before declaring a numerical change done.

    python3 tools/mutate.py [--only ID,ID] [--list] [--keep DIR] [--jobs N] [--hints-only]

The scratch copy is `git archive HEAD` (uncommitted work is not tested) in a temporary folder
(--keep DIR reuses DIR and its build between runs). Each mutant first runs the tests that are
expected to catch it (its `hint`, a ctest regex) and, when those pass, the whole suite, so a
survivor is a bug no test catches. ../shared must be present (AE_REQUIRE_SHARED=1: a skipped
test is a failure, never a silent kill). A mutant whose text no longer occurs exactly once in
its file is reported as STALE (the table below must follow the code): that fails the run too.
--hints-only runs the chosen mutants' hint tests alone, for the baseline too (not the whole
suite): a quick check that a new test kills its mutant; a mutant its hint misses is reported as
MISSED (not a survivor: the rest of the suite was not run). Exit status: 0 when every mutant is
killed, 1 otherwise.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

# id, file, text in the file (must occur exactly once), replacement, tests expected to catch it,
# and what the bug is. The first seven are the bugs that survived a review round (issue 14).
MUTANTS = [
    ("kl-direction", "src/backend/cpu_scores.c",
     "kl += exp(lpt) * (lpt - (b[i] - ls));",
     "kl += exp(b[i] - ls) * ((b[i] - ls) - lpt);",
     "test_eval_kl|test_ops", "eval kl computes KL(student ‖ teacher)"),
    ("adam-bc1", "src/train/optim.c",
     ".bc1 = 1.0f - powf(c->beta1, (float)o->step),", ".bc1 = 1.0f,",
     "test_optim", "AdamW first-moment bias correction dropped"),
    ("adam-bc2", "src/train/optim.c",
     ".bc2 = 1.0f - powf(c->beta2, (float)o->step),", ".bc2 = 1.0f,",
     "test_optim", "AdamW second-moment bias correction dropped"),
    ("decay-mask", "src/train/optim.c",
     "a.weight_decay = p->decay ? c->weight_decay : 0.0f;", "a.weight_decay = c->weight_decay;",
     "test_optim", "weight decay applied to norms, gates and sinks"),
    ("accum-stage2", "src/train/distill.c",
     "1.0f / (float)o->accum, dfinal, o->train_all ? r->g->lm_head : ae_ptr_null(),",
     "1.0f, dfinal, o->train_all ? r->g->lm_head : ae_ptr_null(),",
     "test_distill_wiring|test_distill", "stage-2 KL gradient not divided by --accum"),
    ("cosine-layer", "src/train/distill.c",
     "c->be->cosine_rows(c->be, c->rows, c->da, h, ae_train_acts_hidden(c->ta, l), c->N, c->D, c->scale);",
     "c->be->cosine_rows(c->be, c->rows, c->da, h, ae_train_acts_hidden(c->ta, l > 1 ? l - 1 : l), c->N, c->D, c->scale);",
     "test_distill_grad", "stage-2 cosine term's gradient against the teacher layer below"),
    ("top-p-edge", "src/infer/sample.c",
     "if (cum >= s->p.top_p) {", "if (cum >= s->p.top_p - 1e-3) {",
     "test_sample", "top-p cuts off a little early"),
    # attention
    ("attn-scale", "src/model/attn_gateswa.c",
     "float gswa_attn_scale(const ae_gswa_dims *d) { return 1.0f / sqrtf((float)d->hd); }",
     "float gswa_attn_scale(const ae_gswa_dims *d) { return 1.0f / sqrtf((float)d->hd + 1.0f); }",
     "test_model|test_gateswa", "attention scale 1/sqrt(hd + 1)"),
    ("window-off-by-one", "src/backend/cpu_attention.c",
     "if (a->window > 0 && qpos - a->window + 1 > lo) lo = qpos - a->window + 1;",
     "if (a->window > 0 && qpos - a->window > lo) lo = qpos - a->window;",
     "test_gateswa|test_ops", "sliding window keeps W + 1 positions"),
    ("sinks-dropped", "src/backend/cpu_attention.c",
     "double sum = r->sink ? exp((double)sink - mx) : 0.0;", "double sum = 0.0;",
     "test_gateswa|test_ops|test_grad_ops", "attention sinks left out of the softmax denominator"),
    ("mla-kv-split", "src/model/attn_mla.c",
     "be->copy_rows(be, V, dv, ae_ptr_at(kvb, (size_t)dn), dkv, rows, dv);",
     "be->copy_rows(be, V, dv, ae_ptr_at(kvb, (size_t)(dn > 0 ? dn - 1 : 0)), dkv, rows, dv);",
     "test_mla", "MLA's V read one column early from kv_b's output"),
    # RoPE
    ("rope-freq", "src/backend/cpu_rope.c",
     "float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i) / rd));",
     "float inv_freq = (float)(1.0 / pow(theta, (double)(2 * i + 1) / rd));",
     "test_model|test_ops", "RoPE frequencies shifted"),
    ("rope-sign", "src/backend/cpu_rope.c",
     "float c = cosf(ang), s = sign * sinf(ang);", "float c = cosf(ang), s = -sign * sinf(ang);",
     "test_model|test_ops", "RoPE rotates the wrong way"),
    # norms, activations, MoE
    ("rmsnorm-mean", "src/backend/cpu_norm.c",
     "return 1.0 / sqrt(ss / D + eps);", "return 1.0 / sqrt(ss / (D + 1) + eps);",
     "test_model|test_ops", "RMSNorm divides by D + 1"),
    ("swiglu-sign", "src/backend/cpu_elementwise.c",
     "for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];",
     "for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(g[i])) * u[i];",
     "test_model|test_ops", "SiLU with the wrong sign"),
    ("moe-renorm", "src/backend/cpu_moe.c",
     "for (int j = 0; j < k; j++) wts[j] /= s;", "for (int j = 0; j < k; j++) wts[j] /= s + 1e-2f;",
     "test_model|test_ops", "MoE top-k weights renormalised wrongly"),
    # backward ops (test_grad_ops: finite differences of the double forwards)
    ("rmsnorm-bwd-r3", "src/backend/cpu_norm.c",
     "double c = ri * ri * ri * gx / D;", "double c = ri * ri * gx / D;",
     "test_grad_ops", "RMSNorm backward's r³ term loses a factor r"),
    ("attn-bwd-delta", "src/backend/cpu_attention.c",
     "float ds = pj * (cpu_dotf(dov, attn_v(a, v, j, kh), a->dv) - delta[r]);",
     "float ds = pj * cpu_dotf(dov, attn_v(a, v, j, kh), a->dv);",
     "test_grad_ops", "attention backward's dq without the −D term"),
    ("silu-bwd", "src/backend/cpu_elementwise.c",
     "dg[i] = gy * ui * s * (1.0f + gi * (1.0f - s));", "dg[i] = gy * ui * s;",
     "test_grad_ops", "SwiGLU backward takes σ(g) for silu'(g)"),
    # losses
    ("nll-target", "src/backend/cpu_scores.c",
     "o[t] = (float)(ae_logsumexp(zt, V) - (double)zt[y[t]]);",
     "o[t] = (float)(ae_logsumexp(zt, V) - (double)zt[(y[t] + 1) % V]);",
     "test_eval_ppl|test_loss|test_ops", "NLL of the neighbouring token"),
    ("kd-grad-scale", "src/train/loss.c",
     "float inv_tau = 1.0f / tau, gscale = grad_scale * tau / (float)N;",
     "float inv_tau = 1.0f / tau, gscale = grad_scale / (float)N;",
     "test_loss", "KD gradient loses its temperature factor"),
    # data parallelism (issue 12): caught by the multi-rank CPU tests (mpirun)
    ("dp-every-micro", "src/train/distill_dp.c",
     "return a % ae_comm_size(r->o->comm) == ae_comm_rank(r->o->comm);", "return 1;",
     "test_dist_train", "every rank runs every micro-batch of a step (the gradient counted N times)"),
    ("dp-shard-norm", "src/train/distill_dp.c",
     "return ae_comm_allreduce_host(r->o->comm, sumsq, 1);", "return AE_OK;",
     "test_dist_train", "sharded states clip by this rank's share of the gradient norm only"),
    # loader, tokenizer, eval
    ("bf16-convert", "src/core/dtype.c",
     "float ae_bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }",
     "float ae_bf16_to_f32(uint16_t h) { return bits_to_f32(((uint32_t)h << 16) | 1u); }",
     "test_core|test_safetensors|test_model", "bf16 to f32 conversion sets a stray low bit"),
    ("bpe-rank-order", "src/tok/bpe.c",
     "return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;",
     "return a->rank != b->rank ? a->rank < b->rank : a->pos > b->pos;",
     "test_tokenizer", "BPE merges of equal rank applied right to left"),
    ("ppl-window", "src/eval/windows.c",
     "it->next += (size_t)it->ctx;",
     "it->next += (size_t)it->ctx - (it->ctx > 1);",
     "test_eval_ppl", "eval ppl windows overlap by one token (a token scored twice)"),
]


def sh(cmd, cwd, env=None, quiet=True):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=True, text=True,
                       stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    return r.returncode, (r.stdout or "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--keep", help="scratch folder to create or reuse (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--hints-only", action="store_true",
                    help="run only the chosen mutants' hint tests (baseline included), never the whole suite")
    a = ap.parse_args()
    if a.list:
        for m in MUTANTS:
            print(f"{m[0]:18} {m[1]:32} {m[5]}")
        return 0
    repo = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
    shared = os.path.join(os.path.dirname(repo), "shared")
    if not os.path.isdir(shared):
        print(f"mutate: {shared} not found: the suite needs ../shared (skips would count as kills)",
              file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not a.only or m[0] in a.only.split(",")]
    scratch = a.keep or tempfile.mkdtemp(prefix="ae-mutate-")
    tree = os.path.join(scratch, "main")
    os.makedirs(scratch, exist_ok=True)
    if not os.path.lexists(os.path.join(scratch, "shared")):
        os.symlink(shared, os.path.join(scratch, "shared"))
    if os.path.isdir(tree):
        shutil.rmtree(os.path.join(tree, "src"))
        shutil.rmtree(os.path.join(tree, "tests"))
    os.makedirs(tree, exist_ok=True)
    sh(f"git -C {repo} archive HEAD | tar -x -C {tree}", repo)
    commit = subprocess.check_output(["git", "-C", repo, "rev-parse", "--short", "HEAD"], text=True).strip()
    env = dict(os.environ, AE_REQUIRE_SHARED="1", OMP_NUM_THREADS="1")
    build = os.path.join(tree, "build-mutate")
    build_cmd = (f"cmake -S . -B build-mutate -DAE_CUDA=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null && "
                 f"cmake --build build-mutate -j{a.jobs}")
    test_cmd = f"ctest --test-dir build-mutate -j{a.jobs} --stop-on-failure --timeout 900 -E '^test_export_hf$'"
    hint_cmd = lambda hints: f"ctest --test-dir build-mutate -j{a.jobs} --timeout 900 -R '^({hints})$'"
    if a.hints_only:  # the baseline: the chosen mutants' hint tests alone
        test_cmd = hint_cmd("|".join(sorted({m[4] for m in chosen})))
    print(f"mutate: commit {commit}, scratch {tree}, {len(chosen)} mutants", flush=True)
    rc, out = sh(build_cmd, tree, env)
    if rc:
        print(out[-3000:])
        print("mutate: the unmutated tree does not build", file=sys.stderr)
        return 2
    t0 = time.time()
    rc, out = sh(test_cmd, tree, env)
    if rc:
        print(out[-3000:])
        print("mutate: the unmutated tree fails its tests; nothing to measure", file=sys.stderr)
        return 2
    print(f"mutate: baseline {'hint tests pass' if a.hints_only else 'suite passes'} "
          f"({time.time() - t0:.0f} s)", flush=True)

    rows, bad = [], 0
    for mid, rel, old, new, hint, what in chosen:
        path = os.path.join(tree, rel)
        src = open(path, encoding="utf-8").read()
        n = src.count(old)
        if n != 1:
            rows.append((mid, "STALE", f"text found {n} times in {rel}", what))
            bad += 1
            continue
        t0 = time.time()
        open(path, "w", encoding="utf-8").write(src.replace(old, new))
        try:
            rc, out = sh(build_cmd, tree, env)
            if rc:
                verdict, by = "KILLED", "compile error"
            else:
                rc, out = sh(hint_cmd(hint), tree, env)
                if rc:
                    verdict, by = "KILLED", failed_tests(out)
                elif a.hints_only:
                    verdict, by = "MISSED", f"not by {hint} (the rest of the suite not run)"
                else:
                    rc, out = sh(test_cmd, tree, env)
                    verdict, by = ("KILLED", failed_tests(out) + " (not by its hint)") if rc else ("SURVIVED", "-")
        finally:
            open(path, "w", encoding="utf-8").write(src)
        if verdict != "KILLED":
            bad += 1
        rows.append((mid, verdict, by, what))
        print(f"  {mid:18} {verdict:8} {time.time() - t0:5.0f} s  {by}", flush=True)
    sh(build_cmd, tree, env)  # leave the scratch build unmutated
    print()
    print(f"| mutant | bug | result | caught by |")
    print(f"|---|---|---|---|")
    for mid, verdict, by, what in rows:
        print(f"| `{mid}` | {what} | {verdict} | {by} |")
    killed = sum(r[1] == "KILLED" for r in rows)
    print(f"\nmutate: {killed} of {len(rows)} killed at commit {commit}")
    if not a.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if bad == 0 else 1


def failed_tests(out):
    names = [l.split("-", 1)[1].strip().split()[0] for l in out.splitlines()
             if l.strip().startswith(tuple("0123456789")) and "- " in l]
    names = [n for n in names if n.startswith("test_")]
    return ", ".join(sorted(set(names))) or "a test"


if __name__ == "__main__":
    sys.exit(main())
