// Attention forward and backward on the CUDA backend, at training shapes.
//   bench_attn [--reps R] [--case NAME]
// Cases: Qwen3-8B layer (Hq 32, Hkv 8, d 128) at T 4096 and 32768, full causal and sliding
// window 1024; the MLA materialised shape (Hq = Hkv = 32, dk 192, dv 128) at T 4096, causal.
// q, k, v, dout BF16 (N(0,1)); dq, dk, dv F32 (dk, dv accumulated into); no sinks.
// Each op is run once to warm up, then R times (default 5), each timed alone (sync before and
// after); the best and the mean are printed. Two rows per case:
//   fwd / bwd             the inference forward (may split the keys) and the backward as it
//                         runs without a saved forward (it recomputes out and the log-sum-exp)
//   fwd+lse / bwd saved   the training forward (ae_attn_args.lse: writes the rows' log-sum-exp,
//                         unsplit) and the backward given that out and lse (the training path
//                         since mla_train.c / attn_gateswa.c keep them); "gain" = bwd / bwd saved
// TFLOP/s count the work the mask leaves: pairs = Σ_t (visible keys of query t), then
//   forward  2·pairs·Hq·(dk + dv)
//   backward 2·pairs·Hq·(3·dk + 2·dv)  (S, dP, dV, dK, dQ: 2.5x the forward at dk = dv)
// the model FLOPs, whatever the kernels recompute. AE_CUDA_ATTN_BWD=ref times the CUDA-core
// backward (slow: seconds at T 32768), AE_CUDA_ATTN_BWD=fused / split / wgmma one tensor-core
// backward (default: wgmma on an H100/H200 for d 128 and 192/128, with or without a window,
// else split), AE_CUDA_ATTN=ref the reference forward.
//
//   bench_attn --fwd-kernels [--reps R]
// The forward's prefill kernels side by side (cuda_attention.cu) on the teachers' and the MLA
// student's shapes (fwd_shapes: Qwen3-8B, -1.7B (also with a 1024 window), -30B-A3B heads, MLA
// 192/128), causal: B (flash, mma.sync; AE_ATTN_WGMMA=0), kernel F's synchronous form
// (AE_ATTN_WGMMA=sync) and its warp-specialised form (=ws), with the log-sum-exp (the training
// calls) and F's also without; TFLOP/s as above, the relative L2 difference between the outputs
// of F and B, and whether F's two forms wrote the same bits (they run the same arithmetic). On
// other GPUs or builds without sm_90a the F rows fail (F asked for where it cannot run).
//
//   bench_attn --bwd-paths [--reps R]
// The backward's tensor-core paths (cuda_attention_bwd_tc.cu, _wgmma.cu) at bench_distill's
// shapes (B 2 sequences of T 4096, causal, one op call per sequence as mla_train.c /
// attn_gateswa.c make): Qwen3-1.7B (Hq 16 / Hkv 8, d 128) and its MLA student (Hq = Hkv = 16,
// dk 192, dv 128), Qwen3-8B (32 / 8, d 128) and its MLA student (32 = 32, 192 / 128), and
// GateSWA's sliding layers at both sizes (d 128, window 1024: wgmma by default since its run of
// 2026-11-30, 1.39x split). Per shape: the training forward (fwd+lse), then the backward from it split
// (AE_CUDA_ATTN_BWD=split: dK/dV kernel + dQ kernel on mma.sync, 7 products), fused
// (AE_CUDA_ATTN_BWD=fused: 5 products) and wgmma (AE_CUDA_ATTN_BWD=wgmma: the split path on
// Hopper's warpgroup multiplies; on other GPUs the dispatcher runs split and the columns match)
// and wgfused (AE_CUDA_ATTN_BWD=wgfused: the Hopper dK/dV kernel adding dQ in a fixed order, 5
// products; compared with wgmma); ms for the B calls, TFLOP/s as above, the speed-ups and the
// relative L2 difference of each one's dq from split's (wgfused: from wgmma's). "[ran X]": the
// kernels the dispatcher ran for that column (ae_cuda_attn_bwd_kernels, backend/cuda.h: its own
// decision); "default runs": what it runs
// with AE_CUDA_ATTN_BWD unset. AE_BENCH_BWD_SHAPES=NAME,NAME: only the shapes named (e.g.
// mla-1.7b,qwen3-8b); AE_BENCH_BWD_KV_BF16=1: dk, dv in BF16 (as the training's gradients).
//
//   bench_attn --decode [--reps R] [--dec-splits "V1;V2;..."] [--case PART]
// Batch-1 decode attention: T = 1 query at position S − 1 through be->attention exactly as
// attn_gateswa.c calls it at decode (ae_attn_dense over kv_cache.c's dense layout: k, v (rows,
// Hkv, d), rows = S, or a ring of W rows with window W), Qwen3-8B heads (Hq 32, Hkv 8, d 128):
// S = 1024, 4096, 32768 causal and GateSWA's ring W = 1024 at S = 4096 and 32768; Qwen3-30B-A3B
// heads (Hq 32, Hkv 4: groups of 8) at S = 4096 and 32768 (--case PART: only the cases whose
// name contains PART). Each case
// holds enough copies of its cache (>= 256 MiB in all, 5x the H200's L2) that the calls read
// DRAM as decode does (between two layers' attention the weights stream through L2), and a call
// cycles through them. Per rep: three 2 GiB device copies fill the queue (~3 ms: the host queues
// every call before the GPU reaches them: no launch gaps, as in a CUDA graph), then events on the
// backend's stream around CALLS calls (64, or one per copy); time per call = best rep / calls.
// GB/s = K + V bytes the call must read (keys x Hkv x (dk + dv) x 2) / time, and % copy against
// the device copy rate measured the same way in the same run (the 2 GiB copy_rows, read +
// written, best of 5). "plan": the kernel and split-KV choice (ae_cuda_attn_last). Each case
// runs once per --dec-splits value, set as AE_ATTN_DEC_SPLIT ("default": unset; default list
// "default;1;2;4;8;16;32;64;128;per_sm=4;per_sm=8;min_keys=64"), and each of those with both
// decode kernels: "dec" column 1 = kernel G (k_attn_decode, the split merge in its launch), 0 =
// kernel B + the combine launch (AE_ATTN_DECODE=1 / 0); kernel G twice, "pipe" column 1 = its
// pipelined key loop, 0 = the batched one (AE_DEC_PIPE=1 / 0; "-" for kernel B).
//
//   bench_attn --decode-mla [--reps R] [--mla-splits "V1;V2;..."]
//   bench_attn --decode-mla-fused [--reps R] [--mla-splits "V1;V2;..."]  (see its section)
// Batch-1 absorbed MLA decode (the Qwen3-8B MLA student's attention: Hq 32 query heads over one
// latent head, rows of R + dr = 512 + 64 = 576 values, v = the first 512): T = 1 query at
// position S − 1, S = 1024, 4096, 32768, 131072, called exactly as attn_mla.c calls it at decode
// (dense: be->attention over the cache (S, 576), k = v = the cache, scale 1/sqrt(128)), and the
// same row through be->attention_paged over the cache as a pool of 16-row pages in a shuffled
// block-table order (the serving engine's layout; from AE_CUDA_PAGED_TC_KEYS keys, 4096 unset,
// the row goes to the same kernels, below that to k_paged_attn: cuda_paged.cu). Copies of the
// cache (>= 256 MiB in all) are cycled and the queue is filled first as for --decode; time per
// call = best rep / calls, GB/s = S x 576 x 2 bytes / time, % copy against the same run's copy
// rate. Each case runs once per --mla-splits value, set as AE_CUDA_MLA_SPLITS (the key-range
// splits of kernels D and E; "default": unset; default list "default;8;16;32;64;128"); paged rows
// on k_paged_attn, which that variable does not reach, run once (splits "-"). "plan" is
// ae_cuda_mla_last (kernel, stages, row tiles, splits, keys per row tile; ae_cuda_paged_last for
// the k_paged_attn rows), and |x-def|/|def| compares each output with the default split's
// (rounding differences only: the splits merge in a fixed order; 0 for the default itself: the
// same bits again).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "bench_queue.h"
#include "bench_time.h"
#include "core/log.h"

typedef struct {
    const char *name;
    int T, Hq, Hkv, dk, dv, window;
} bench_case;

static const bench_case k_cases[] = {
    {"qwen3-8b-4k-causal", 4096, 32, 8, 128, 128, 0},
    {"qwen3-8b-4k-w1024", 4096, 32, 8, 128, 128, 1024},
    {"qwen3-8b-32k-causal", 32768, 32, 8, 128, 128, 0},
    {"qwen3-8b-32k-w1024", 32768, 32, 8, 128, 128, 1024},
    {"mla-192-128-4k-causal", 4096, 32, 32, 192, 128, 0},
};

// Visible (query, key) pairs of T queries at positions 0..T-1.
static double visible_pairs(int T, int window) {
    double n = 0;
    for (int t = 0; t < T; t++) n += window > 0 && window < t + 1 ? window : t + 1;
    return n;
}

typedef struct {
    const ae_backend *be;
    ae_attn_args a;     // lse null
    ae_attn_args a_lse; // a with lse
    ae_ptr q, k, v, out, dout, dq, dk, dv; // q (T, Hq, dk), k (T, Hkv, dk), v (T, Hkv, dv) ...
    ae_ptr lse;                            // (T, Hq) F32
} attn_bufs;

static void run_fwd(void *p) {
    attn_bufs *b = p;
    b->be->attention(b->be, &b->a, b->out, b->q, b->k, b->v);
}

static void run_fwd_lse(void *p) {
    attn_bufs *b = p;
    b->be->attention(b->be, &b->a_lse, b->out, b->q, b->k, b->v);
}

static void run_bwd(void *p) {
    attn_bufs *b = p;
    b->be->attention_bwd(b->be, &b->a, b->dq, b->dk, b->dv, ae_ptr_null(), b->dout, ae_ptr_null(),
                         b->q, b->k, b->v);
}

// Needs out and lse from run_fwd_lse.
static void run_bwd_saved(void *p) {
    attn_bufs *b = p;
    b->be->attention_bwd(b->be, &b->a_lse, b->dq, b->dk, b->dv, ae_ptr_null(), b->dout, b->out,
                         b->q, b->k, b->v);
}

static int bench_one(const ae_backend *be, const bench_case *c, int reps) {
    const size_t T = (size_t)c->T;
    const size_t nq = T * c->Hq * c->dk, nk = T * c->Hkv * c->dk, nv = T * c->Hkv * c->dv;
    const size_t no = T * c->Hq * c->dv;
    attn_bufs b = {.be = be};
    b.a = ae_attn_dense(c->T, 0, c->Hq, c->Hkv, c->dk, c->dv, c->window,
                        1.0f / sqrtf((float)c->dk), ae_ptr_null());
    b.q = be->alloc(be, nq, AE_DT_BF16), b.k = be->alloc(be, nk, AE_DT_BF16);
    b.v = be->alloc(be, nv, AE_DT_BF16), b.out = be->alloc(be, no, AE_DT_BF16);
    b.dout = be->alloc(be, no, AE_DT_BF16), b.dq = be->alloc(be, nq, AE_DT_F32);
    b.dk = be->alloc(be, nk, AE_DT_F32), b.dv = be->alloc(be, nv, AE_DT_F32);
    b.lse = be->alloc(be, T * c->Hq, AE_DT_F32);
    b.a_lse = b.a;
    b.a_lse.lse = b.lse;
    int rc = 1;
    if (ae_ptr_is_null(b.q) || ae_ptr_is_null(b.k) || ae_ptr_is_null(b.v) ||
        ae_ptr_is_null(b.out) || ae_ptr_is_null(b.dout) || ae_ptr_is_null(b.dq) ||
        ae_ptr_is_null(b.dk) || ae_ptr_is_null(b.dv) || ae_ptr_is_null(b.lse)) {
        fprintf(stderr, "bench_attn: %s: out of device memory: %s\n", c->name, ae_last_error());
        goto done;
    }
    be->fill_normal(be, b.q, nq, 1.0f, 1);
    be->fill_normal(be, b.k, nk, 1.0f, 2);
    be->fill_normal(be, b.v, nv, 1.0f, 3);
    be->fill_normal(be, b.dout, no, 1.0f, 4);
    be->fill(be, b.dk, nk, 0.0f);
    be->fill(be, b.dv, nv, 0.0f);
    bench_timing tf, tb, tfl, tbs; // run_fwd_lse leaves out and lse for run_bwd_saved
    if (bench_time_op(be, run_fwd, &b, reps, &tf) || bench_time_op(be, run_bwd, &b, reps, &tb) ||
        bench_time_op(be, run_fwd_lse, &b, reps, &tfl) ||
        bench_time_op(be, run_bwd_saved, &b, reps, &tbs)) {
        fprintf(stderr, "bench_attn: %s: %s\n", c->name, ae_last_error());
        goto done;
    }
    const double pairs = visible_pairs(c->T, c->window);
    const double ff = 2.0 * pairs * c->Hq * (c->dk + c->dv);
    const double fb = 2.0 * pairs * c->Hq * (3.0 * c->dk + 2.0 * c->dv);
    char shape[96];
    int sw = snprintf(shape, sizeof shape, "T=%-6d Hq=%d Hkv=%d dk=%d dv=%d W=%-5d", c->T, c->Hq,
                      c->Hkv, c->dk, c->dv, c->window);
    printf("%-22s %s fwd     %8.3f ms (mean %8.3f) %6.1f TFLOP/s   bwd       %9.3f ms (mean "
           "%9.3f) %6.1f TFLOP/s\n",
           c->name, shape, tf.best * 1e3, tf.mean * 1e3, ff / tf.best * 1e-12, tb.best * 1e3,
           tb.mean * 1e3, fb / tb.best * 1e-12);
    printf("%-22s %*s fwd+lse %8.3f ms (mean %8.3f) %6.1f TFLOP/s   bwd saved %9.3f ms (mean "
           "%9.3f) %6.1f TFLOP/s   gain %.2fx\n",
           c->name, sw, "", tfl.best * 1e3, tfl.mean * 1e3, ff / tfl.best * 1e-12, tbs.best * 1e3,
           tbs.mean * 1e3, fb / tbs.best * 1e-12, tb.best / tbs.best);
    fflush(stdout);
    rc = 0;
done:
    be->free(be, b.q), be->free(be, b.k), be->free(be, b.v), be->free(be, b.out);
    be->free(be, b.dout), be->free(be, b.dq), be->free(be, b.dk), be->free(be, b.dv);
    be->free(be, b.lse);
    return rc;
}

// ---- forward kernels B vs F (--fwd-kernels) -------------------------------------------------------

// Relative L2 difference ||x − y|| / ||y|| of n device values (downloaded as F32); -1 on failure.
static double device_rel_diff(const ae_backend *be, ae_ptr x, ae_ptr y, size_t n) {
    float *hx = malloc(n * sizeof(float)), *hy = malloc(n * sizeof(float));
    double num = 0, den = 0;
    int ok = hx && hy && be->download(be, hx, AE_DT_F32, x, n) == AE_OK &&
             be->download(be, hy, AE_DT_F32, y, n) == AE_OK;
    for (size_t i = 0; ok && i < n; i++) {
        double d = (double)hx[i] - hy[i];
        num += d * d;
        den += (double)hy[i] * hy[i];
    }
    free(hx), free(hy);
    return ok ? sqrt(num / (den > 0 ? den : 1)) : -1;
}

// Times the forward (b->out; with lse when use_lse) under AE_ATTN_WGMMA=env.
static int time_fwd_kernel(attn_bufs *b, const char *env, int use_lse, int reps, bench_timing *t) {
    setenv("AE_ATTN_WGMMA", env, 1);
    int rc = bench_time_op(b->be, use_lse ? run_fwd_lse : run_fwd, b, reps, t);
    unsetenv("AE_ATTN_WGMMA");
    return rc;
}

// The shapes of --fwd-kernels: the teachers' and the MLA student's prefill and training calls.
typedef struct {
    const char *name;
    int T, Hq, Hkv, dk, dv, window;
} fwd_shape;

static const fwd_shape fwd_shapes[] = {
    {"qwen3-8b", 4096, 32, 8, 128, 128, 0},     {"qwen3-8b", 16384, 32, 8, 128, 128, 0},
    {"qwen3-8b", 32768, 32, 8, 128, 128, 0},    {"qwen3-1.7b", 4096, 16, 8, 128, 128, 0},
    {"qwen3-1.7b-swa", 4096, 16, 8, 128, 128, 1024}, {"mla-1.7b", 4096, 16, 16, 192, 128, 0},
    {"mla-8b", 4096, 32, 32, 192, 128, 0},      {"qwen3-30b-a3b", 4096, 32, 4, 128, 128, 0},
    {"qwen3-30b-a3b", 32768, 32, 4, 128, 128, 0},
};

// One shape: B (AE_ATTN_WGMMA=0), F's synchronous form (=sync) and F's warp-specialised form
// (=ws), each with the log-sum-exp (the training calls), F's two forms also without it; the
// relative L2 difference of F's output to B's and whether F's two forms wrote the same bits.
static int bench_fwd_shape(const ae_backend *be, const fwd_shape *c, int reps) {
    const size_t T = (size_t)c->T, nq = T * c->Hq * c->dk, nk = T * c->Hkv * c->dk;
    const size_t nv = T * c->Hkv * c->dv, no = T * c->Hq * c->dv;
    attn_bufs b = {.be = be};
    b.a = ae_attn_dense(c->T, 0, c->Hq, c->Hkv, c->dk, c->dv, c->window,
                        1.0f / sqrtf((float)c->dk), ae_ptr_null());
    b.q = be->alloc(be, nq, AE_DT_BF16), b.k = be->alloc(be, nk, AE_DT_BF16);
    b.v = be->alloc(be, nv, AE_DT_BF16), b.lse = be->alloc(be, T * c->Hq, AE_DT_F32);
    ae_ptr outs[3] = {be->alloc(be, no, AE_DT_BF16), be->alloc(be, no, AE_DT_BF16),
                      be->alloc(be, no, AE_DT_BF16)}; // B, F sync, F ws
    b.a_lse = b.a;
    b.a_lse.lse = b.lse;
    int rc = 0;
    if (ae_ptr_is_null(b.q) || ae_ptr_is_null(b.k) || ae_ptr_is_null(b.v) ||
        ae_ptr_is_null(b.lse) || ae_ptr_is_null(outs[0]) || ae_ptr_is_null(outs[1]) ||
        ae_ptr_is_null(outs[2])) {
        fprintf(stderr, "bench_attn: %s T=%zu: out of device memory: %s\n", c->name, T,
                ae_last_error());
        rc = 1;
    } else {
        be->fill_normal(be, b.q, nq, 1.0f, 1);
        be->fill_normal(be, b.k, nk, 1.0f, 2);
        be->fill_normal(be, b.v, nv, 1.0f, 3);
        static const char *const env[3] = {"0", "sync", "ws"};
        bench_timing tl[3], tn[3];
        for (int k = 0; k < 3 && !rc; k++) {
            b.out = outs[k];
            rc = time_fwd_kernel(&b, env[k], 1, reps, &tl[k]) ||
                 (k > 0 && time_fwd_kernel(&b, env[k], 0, reps, &tn[k]));
        }
        if (rc) {
            fprintf(stderr, "bench_attn: %s T=%zu: %s\n", c->name, T, ae_last_error());
        } else {
            const double fl = 2.0 * visible_pairs(c->T, c->window) * c->Hq * (c->dk + c->dv);
            const double diff = device_rel_diff(be, outs[2], outs[0], no);
            const int same = device_rel_diff(be, outs[2], outs[1], no) == 0.0;
            printf("fwd-kernels %-14s T=%-6zu Hq=%-2d Hkv=%-2d dk=%d dv=%d W=%-4d   "
                   "B %7.3f ms %5.1f   F-sync %7.3f ms %5.1f (no lse %5.1f)   "
                   "F-ws %7.3f ms %5.1f (no lse %5.1f) TFLOP/s   ws/sync %.2fx   "
                   "|ws-B|/|B| %.2e   ws bits = sync bits: %s\n",
                   c->name, T, c->Hq, c->Hkv, c->dk, c->dv, c->window, tl[0].best * 1e3,
                   fl / tl[0].best * 1e-12, tl[1].best * 1e3, fl / tl[1].best * 1e-12,
                   fl / tn[1].best * 1e-12, tl[2].best * 1e3, fl / tl[2].best * 1e-12,
                   fl / tn[2].best * 1e-12, tl[1].best / tl[2].best, diff, same ? "yes" : "NO");
            fflush(stdout);
        }
    }
    be->free(be, b.q), be->free(be, b.k), be->free(be, b.v), be->free(be, b.lse);
    for (int k = 0; k < 3; k++) be->free(be, outs[k]);
    return rc;
}

static int bench_fwd_kernels(const ae_backend *be, int reps) {
    int rc = 0;
    for (size_t i = 0; i < sizeof fwd_shapes / sizeof *fwd_shapes; i++)
        rc |= bench_fwd_shape(be, &fwd_shapes[i], reps);
    return rc;
}

// ---- backward paths split vs fused vs wgmma vs wgfused (--bwd-paths) -------------------------

typedef struct {
    const char *name;
    int B, T, Hq, Hkv, dk, dv, window; // window 0: causal over the whole sequence
} bwd_shape;

// B sequences' buffers (sequence i at offset i·T·H·d of each) and the op arguments of one.
typedef struct {
    attn_bufs b;
    int B;
    size_t nq, nk, nv, no; // elements of one sequence
} batch_bufs;

static void run_fwd_lse_batch(void *p) {
    batch_bufs *x = p;
    const attn_bufs *b = &x->b;
    ae_attn_args a = b->a_lse;
    for (int i = 0; i < x->B; i++) {
        a.lse = ae_ptr_at(b->lse, (size_t)i * b->a.T * b->a.Hq);
        b->be->attention(b->be, &a, ae_ptr_at(b->out, i * x->no), ae_ptr_at(b->q, i * x->nq),
                         ae_ptr_at(b->k, i * x->nk), ae_ptr_at(b->v, i * x->nv));
    }
}

// Needs out and lse from run_fwd_lse_batch.
static void run_bwd_saved_batch(void *p) {
    batch_bufs *x = p;
    const attn_bufs *b = &x->b;
    ae_attn_args a = b->a_lse;
    for (int i = 0; i < x->B; i++) {
        a.lse = ae_ptr_at(b->lse, (size_t)i * b->a.T * b->a.Hq);
        b->be->attention_bwd(b->be, &a, ae_ptr_at(b->dq, i * x->nq), ae_ptr_at(b->dk, i * x->nk),
                             ae_ptr_at(b->dv, i * x->nv), ae_ptr_null(),
                             ae_ptr_at(b->dout, i * x->no), ae_ptr_at(b->out, i * x->no),
                             ae_ptr_at(b->q, i * x->nq), ae_ptr_at(b->k, i * x->nk),
                             ae_ptr_at(b->v, i * x->nv));
    }
}

// The kernels the backward runs for `a` under the current AE_CUDA_ATTN_BWD (the dispatcher's
// own decision, ae_cuda_attn_bwd_kernels).
static const char *bwd_kernels(const ae_backend *be, const ae_attn_args *a) {
#ifdef AE_HAVE_CUDA
    return ae_cuda_attn_bwd_kernels(be, a);
#else
    (void)be, (void)a;
    return "(no cuda build)"; // not reached: opening the cuda backend fails first
#endif
}

// Times the saved backward under AE_CUDA_ATTN_BWD=path, leaving its dq in `dq` and the name of
// the kernels that ran in *kernels.
static int time_bwd_path(batch_bufs *x, const char *path, ae_ptr dq, int reps, bench_timing *t,
                         const char **kernels) {
    setenv("AE_CUDA_ATTN_BWD", path, 1);
    *kernels = bwd_kernels(x->b.be, &x->b.a_lse);
    ae_ptr keep = x->b.dq;
    x->b.dq = dq;
    int rc = bench_time_op(x->b.be, run_bwd_saved_batch, x, reps, t);
    x->b.dq = keep;
    unsetenv("AE_CUDA_ATTN_BWD");
    return rc;
}

static int bench_bwd_one(const ae_backend *be, const bwd_shape *c, int reps) {
    batch_bufs x = {.b = {.be = be}, .B = c->B};
    attn_bufs *b = &x.b;
    const size_t T = (size_t)c->T, B = (size_t)c->B;
    x.nq = T * c->Hq * c->dk, x.nk = T * c->Hkv * c->dk, x.nv = T * c->Hkv * c->dv;
    x.no = T * c->Hq * c->dv;
    b->a = ae_attn_dense(c->T, 0, c->Hq, c->Hkv, c->dk, c->dv, c->window,
                         1.0f / sqrtf((float)c->dk), ae_ptr_null());
    b->a_lse = b->a;
    b->q = be->alloc(be, B * x.nq, AE_DT_BF16), b->k = be->alloc(be, B * x.nk, AE_DT_BF16);
    b->v = be->alloc(be, B * x.nv, AE_DT_BF16), b->out = be->alloc(be, B * x.no, AE_DT_BF16);
    b->dout = be->alloc(be, B * x.no, AE_DT_BF16), b->dq = be->alloc(be, B * x.nq, AE_DT_F32);
    // dk, dv: F32, or BF16 as the training's gradient buffers with AE_BENCH_BWD_KV_BF16=1
    const char *kvb = getenv("AE_BENCH_BWD_KV_BF16");
    const ae_dtype kv_dt = kvb && !strcmp(kvb, "1") ? AE_DT_BF16 : AE_DT_F32;
    b->dk = be->alloc(be, B * x.nk, kv_dt), b->dv = be->alloc(be, B * x.nv, kv_dt);
    b->lse = be->alloc(be, B * T * c->Hq, AE_DT_F32);
    ae_ptr dq_fused = be->alloc(be, B * x.nq, AE_DT_F32);
    ae_ptr dq_wg = be->alloc(be, B * x.nq, AE_DT_F32);
    ae_ptr dq_wf = be->alloc(be, B * x.nq, AE_DT_F32);
    int rc = 1;
    if (ae_ptr_is_null(b->q) || ae_ptr_is_null(b->k) || ae_ptr_is_null(b->v) ||
        ae_ptr_is_null(b->out) || ae_ptr_is_null(b->dout) || ae_ptr_is_null(b->dq) ||
        ae_ptr_is_null(b->dk) || ae_ptr_is_null(b->dv) || ae_ptr_is_null(b->lse) ||
        ae_ptr_is_null(dq_fused) || ae_ptr_is_null(dq_wg) || ae_ptr_is_null(dq_wf)) {
        fprintf(stderr, "bench_attn: %s: out of device memory: %s\n", c->name, ae_last_error());
        goto done;
    }
    be->fill_normal(be, b->q, B * x.nq, 1.0f, 1);
    be->fill_normal(be, b->k, B * x.nk, 1.0f, 2);
    be->fill_normal(be, b->v, B * x.nv, 1.0f, 3);
    be->fill_normal(be, b->dout, B * x.no, 1.0f, 4);
    be->fill(be, b->dk, B * x.nk, 0.0f);
    be->fill(be, b->dv, B * x.nv, 0.0f);
    bench_timing tf, ts, tu, tw, twf; // forward with lse, backward split, fused, wgmma, wgfused
    const char *ks, *ku, *kw, *kwf;   // the kernels each ran (ae_cuda_attn_bwd_kernels)
    if (bench_time_op(be, run_fwd_lse_batch, &x, reps, &tf) ||
        time_bwd_path(&x, "split", b->dq, reps, &ts, &ks) ||
        time_bwd_path(&x, "fused", dq_fused, reps, &tu, &ku) ||
        time_bwd_path(&x, "wgmma", dq_wg, reps, &tw, &kw) ||
        time_bwd_path(&x, "wgfused", dq_wf, reps, &twf, &kwf)) {
        fprintf(stderr, "bench_attn: %s: %s\n", c->name, ae_last_error());
        goto done;
    }
    const double pairs = B * visible_pairs(c->T, c->window);
    const double ff = 2.0 * pairs * c->Hq * (c->dk + c->dv);
    const double fb = 2.0 * pairs * c->Hq * (3.0 * c->dk + 2.0 * c->dv);
    const char *kd = bwd_kernels(be, &b->a_lse); // what the default runs (time_bwd_path unset it)
    char mask[32];
    if (c->window > 0) snprintf(mask, sizeof mask, "window %d", c->window);
    else snprintf(mask, sizeof mask, "causal");
    printf("bwd-paths %-10s B=%d T=%d Hq=%-2d Hkv=%-2d dk=%d dv=%d %-11s fwd+lse %7.3f ms %6.1f "
           "TFLOP/s   bwd split [ran %s] %7.3f ms %6.1f TFLOP/s   bwd fused [ran %s] %7.3f ms "
           "%6.1f TFLOP/s   fused/split %.2fx   |dq fused-split|/|split| %.2e   bwd wgmma [ran %s] "
           "%7.3f ms %6.1f TFLOP/s   wgmma/split %.2fx   |dq wgmma-split|/|split| %.2e   "
           "bwd wgfused [ran %s] %7.3f ms %6.1f TFLOP/s   wgfused/wgmma %.2fx   "
           "|dq wgfused-wgmma|/|wgmma| %.2e   default runs %s\n",
           c->name, c->B, c->T, c->Hq, c->Hkv, c->dk, c->dv, mask, tf.best * 1e3,
           ff / tf.best * 1e-12, ks, ts.best * 1e3, fb / ts.best * 1e-12, ku, tu.best * 1e3,
           fb / tu.best * 1e-12, ts.best / tu.best, device_rel_diff(be, dq_fused, b->dq, B * x.nq),
           kw, tw.best * 1e3, fb / tw.best * 1e-12, ts.best / tw.best,
           device_rel_diff(be, dq_wg, b->dq, B * x.nq), kwf, twf.best * 1e3,
           fb / twf.best * 1e-12, tw.best / twf.best, device_rel_diff(be, dq_wf, dq_wg, B * x.nq),
           kd);
    fflush(stdout);
    rc = 0;
done:
    be->free(be, b->q), be->free(be, b->k), be->free(be, b->v), be->free(be, b->out);
    be->free(be, b->dout), be->free(be, b->dq), be->free(be, b->dk), be->free(be, b->dv);
    be->free(be, b->lse), be->free(be, dq_fused), be->free(be, dq_wg), be->free(be, dq_wf);
    return rc;
}

static int bench_bwd_paths(const ae_backend *be, int reps) {
    static const bwd_shape shapes[] = {
        {"qwen3-1.7b", 2, 4096, 16, 8, 128, 128, 0},
        {"mla-1.7b", 2, 4096, 16, 16, 192, 128, 0},
        {"qwen3-8b", 2, 4096, 32, 8, 128, 128, 0},
        {"mla-8b", 2, 4096, 32, 32, 192, 128, 0},
        // GateSWA's sliding layers (W 1024): the wgmma backward takes them under
        // AE_CUDA_ATTN_BWD=wgmma; the default runs split there until this row says otherwise
        {"gswa-1.7b", 2, 4096, 16, 8, 128, 128, 1024},
        {"gswa-8b", 2, 4096, 32, 8, 128, 128, 1024},
    };
    int rc = 0;
    const char *only = getenv("AE_BENCH_BWD_SHAPES");
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        if (!only || strstr(only, shapes[i].name)) rc |= bench_bwd_one(be, &shapes[i], reps);
    return rc;
}

// ---- batch-1 decode (--decode) ----------------------------------------------------------------

#ifdef AE_HAVE_CUDA
typedef struct {
    const char *name;
    int S, window; // keys up to position S − 1; window W > 0: a ring of W rows
    int hkv;       // kv heads (of DEC_HQ query heads): 8 Qwen3-8B, 4 Qwen3-30B-A3B (groups of 8)
} dec_case;

static const dec_case k_dec_cases[] = {
    {"qwen3-8b-dec-1k", 1024, 0, 8},          {"qwen3-8b-dec-4k", 4096, 0, 8},
    {"qwen3-8b-dec-32k", 32768, 0, 8},        {"gateswa-8b-dec-4k-w1024", 4096, 1024, 8},
    {"gateswa-8b-dec-32k-w1024", 32768, 1024, 8}, {"qwen3-30b-a3b-dec-4k", 4096, 0, 4},
    {"qwen3-30b-a3b-dec-32k", 32768, 0, 4},
};

enum { DEC_HQ = 32, DEC_D = 128, DEC_MAX_COPIES = 64, DEC_MIN_CALLS = 64 };

typedef struct {
    ae_attn_args a;
    int copies, keys;
    ae_ptr q, out, k[DEC_MAX_COPIES], v[DEC_MAX_COPIES];
} dec_bufs;

static void dec_free(const ae_backend *be, dec_bufs *b) {
    for (int c = 0; c < b->copies; c++) be->free(be, b->k[c]), be->free(be, b->v[c]);
    be->free(be, b->q), be->free(be, b->out);
}

// The caches of one case: rows = S (or the ring's W), k and v (rows, Hkv, d) N(0, 1).
static int dec_alloc(const ae_backend *be, const dec_case *c, dec_bufs *b) {
    memset(b, 0, sizeof *b);
    const int rows = c->window > 0 ? c->window : c->S;
    const size_t nkv = (size_t)rows * c->hkv * DEC_D, copy_bytes = 2 * nkv * 2;
    size_t copies = ((size_t)256 << 20) / copy_bytes + 1;
    b->copies = copies > DEC_MAX_COPIES ? DEC_MAX_COPIES : (int)copies;
    b->keys = c->window > 0 && c->window < c->S ? c->window : c->S;
    b->a = ae_attn_dense(1, c->S - 1, DEC_HQ, c->hkv, DEC_D, DEC_D, c->window,
                         1.0f / sqrtf((float)DEC_D), ae_ptr_null());
    b->a.ring = c->window > 0 ? c->window : 0;
    b->q = be->alloc(be, (size_t)DEC_HQ * DEC_D, AE_DT_BF16);
    b->out = be->alloc(be, (size_t)DEC_HQ * DEC_D, AE_DT_BF16);
    int ok = !ae_ptr_is_null(b->q) && !ae_ptr_is_null(b->out);
    for (int i = 0; i < b->copies && ok; i++) {
        b->k[i] = be->alloc(be, nkv, AE_DT_BF16), b->v[i] = be->alloc(be, nkv, AE_DT_BF16);
        ok = !ae_ptr_is_null(b->k[i]) && !ae_ptr_is_null(b->v[i]);
        if (ok) {
            be->fill_normal(be, b->k[i], nkv, 1.0f, 10 + 2 * (uint64_t)i);
            be->fill_normal(be, b->v[i], nkv, 1.0f, 11 + 2 * (uint64_t)i);
        }
    }
    if (ok) be->fill_normal(be, b->q, (size_t)DEC_HQ * DEC_D, 1.0f, 9);
    return ok ? 0 : 1;
}

// Call i (ctx: the dec_bufs): the query against cache copy i mod copies.
static void dec_call(const ae_backend *be, void *ctx, int i) {
    dec_bufs *b = ctx;
    const int c = i % b->copies;
    be->attention(be, &b->a, b->out, b->q, b->k[c], b->v[c]);
}

// Seconds per call under the current AE_ATTN_DEC_SPLIT, best of reps; < 0 on an error.
static double dec_time(const ae_backend *be, dec_bufs *b, bench_queue *q, int reps) {
    const int calls = b->copies > DEC_MIN_CALLS ? b->copies : DEC_MIN_CALLS;
    return bench_queue_time(be, q, dec_call, b, b->copies, calls, reps);
}

static int bench_decode(const ae_backend *be, int reps, const char *splits, const char *only) {
    bench_queue t;
    if (bench_queue_open(be, &t)) {
        fprintf(stderr, "bench_attn --decode: cannot set up the timer: %s\n", ae_last_error());
        bench_queue_close(be, &t);
        return 1;
    }
    const double copy = bench_queue_copy_rate(be, &t);
    const char *saved = getenv("AE_ATTN_DEC_SPLIT");
    char *saved_copy = saved ? strdup(saved) : NULL;
    const char *saved_dec = getenv("AE_ATTN_DECODE");
    char *saved_dec_copy = saved_dec ? strdup(saved_dec) : NULL;
    const char *saved_pipe = getenv("AE_DEC_PIPE");
    char *saved_pipe_copy = saved_pipe ? strdup(saved_pipe) : NULL;
    printf("decode attention, T = 1, Hq %d, d %d, bf16 (Hkv in the case's name: 8 for Qwen3-8B, "
           "4 for Qwen3-30B-A3B); device copy rate %.0f GB/s; "
           "time per call = best of %d reps (events, queue filled first)\n",
           DEC_HQ, DEC_D, copy * 1e-9, reps);
    printf("%-26s %6s %-14s %3s %4s %9s %8s %7s   %s\n", "case", "keys", "AE_ATTN_DEC_SPLIT",
           "dec", "pipe", "us/call", "GB/s", "% copy", "plan");
    int rc = 0;
    for (size_t ci = 0; ci < sizeof k_dec_cases / sizeof *k_dec_cases; ci++) {
        const dec_case *c = &k_dec_cases[ci];
        if (only && !strstr(c->name, only)) continue;
        dec_bufs b;
        if (dec_alloc(be, c, &b)) {
            fprintf(stderr, "bench_attn --decode: %s: out of device memory: %s\n", c->name,
                    ae_last_error());
            dec_free(be, &b);
            rc = 1;
            continue;
        }
        const double bytes = (double)b.keys * c->hkv * (2.0 * DEC_D) * 2;
        char list[512];
        snprintf(list, sizeof list, "%s", splits);
        int bad = 0; // an error in this case: its other settings are skipped
        for (char *v = strtok(list, ";"); v && !bad; v = strtok(NULL, ";")) {
            if (!strcmp(v, "default") || !*v) unsetenv("AE_ATTN_DEC_SPLIT");
            else setenv("AE_ATTN_DEC_SPLIT", v, 1);
            // kernel G pipelined, kernel G batched, then kernel B + combine
            for (int run = 0; run < 3; run++) {
                const int dec = run < 2, pipe = run == 0;
                setenv("AE_ATTN_DECODE", dec ? "1" : "0", 1);
                setenv("AE_DEC_PIPE", pipe ? "1" : "0", 1);
                const double sec = dec_time(be, &b, &t, reps);
                if (sec <= 0) {
                    fprintf(stderr, "bench_attn --decode: %s [%s, AE_ATTN_DECODE=%d, "
                                    "AE_DEC_PIPE=%d]: %s\n",
                            c->name, v, dec, pipe, ae_last_error());
                    rc = bad = 1;
                    break;
                }
                be->attention(be, &b.a, b.out, b.q, b.k[0], b.v[0]); // the plan of this setting
                printf("%-26s %6d %-14s %3d %4s %9.2f %8.0f %6.1f%%   %s\n", c->name, b.keys, v,
                       dec, dec ? (pipe ? "1" : "0") : "-", sec * 1e6, bytes / sec * 1e-9,
                       copy > 0 ? 100.0 * bytes / sec / copy : 0.0, ae_cuda_attn_last());
                fflush(stdout);
            }
        }
        if (be->sync(be) != AE_OK) rc = 1;
        dec_free(be, &b);
    }
    if (saved_copy) setenv("AE_ATTN_DEC_SPLIT", saved_copy, 1);
    else unsetenv("AE_ATTN_DEC_SPLIT");
    if (saved_dec_copy) setenv("AE_ATTN_DECODE", saved_dec_copy, 1);
    else unsetenv("AE_ATTN_DECODE");
    if (saved_pipe_copy) setenv("AE_DEC_PIPE", saved_pipe_copy, 1);
    else unsetenv("AE_DEC_PIPE");
    free(saved_copy), free(saved_dec_copy), free(saved_pipe_copy);
    bench_queue_close(be, &t);
    return rc;
}
// ---- batch-1 absorbed MLA decode (--decode-mla) ----------------------------------------------------

enum { MLA_HQ = 32, MLA_R = 512, MLA_CD = 576, MLA_PAGE = 16, MLA_MAX_COPIES = 256 };

typedef struct {
    int S, copies;
    ae_attn_args a;
    ae_paged_attn_args pa;
    ae_paged_run run;
    ae_ptr q, out, cache[MLA_MAX_COPIES]; // q (1, Hq, 576), out (1, Hq, 512), cache (S, 576)
    ae_ptr seq, pos, table;               // the paged row: (1), (1) I32, table (1, S / 16) I32
} mla_bufs;

static void mla_free(const ae_backend *be, mla_bufs *b) {
    for (int c = 0; c < b->copies; c++) be->free(be, b->cache[c]);
    be->free(be, b->q), be->free(be, b->out);
    be->free(be, b->seq), be->free(be, b->pos), be->free(be, b->table);
}

// Uploads n host int32 values into a new device I32 buffer (null on failure).
static ae_ptr mla_upload_i32(const ae_backend *be, const int32_t *x, size_t n) {
    ae_ptr d = be->alloc(be, n, AE_DT_I32);
    if (!ae_ptr_is_null(d) && be->upload(be, d, x, AE_DT_I32, n) != AE_OK) {
        be->free(be, d);
        return ae_ptr_null();
    }
    return d;
}

// The caches of one case (copies x (S, 576) N(0, 1)), q, and the paged row's seq, pos and
// block table (pages of the pool in a fixed shuffled order).
static int mla_alloc(const ae_backend *be, int S, mla_bufs *b) {
    memset(b, 0, sizeof *b);
    b->S = S;
    const size_t n = (size_t)S * MLA_CD, copies = ((size_t)256 << 20) / (n * 2) + 1;
    b->copies = copies > MLA_MAX_COPIES ? MLA_MAX_COPIES : (int)copies;
    b->a = (ae_attn_args){.T = 1, .pos0 = S - 1, .Hq = MLA_HQ, .Hkv = 1, .dk = MLA_CD,
                          .dv = MLA_R, .k_stride = MLA_CD, .v_stride = MLA_CD,
                          .scale = 1.0f / sqrtf(128.0f), .sinks = ae_ptr_null()};
    const int blocks = S / MLA_PAGE;
    int32_t *tab = malloc((size_t)blocks * sizeof *tab);
    if (!tab) return 1;
    for (int i = 0; i < blocks; i++) tab[i] = i;
    uint64_t x = 0x9e3779b97f4a7c15ull; // Fisher-Yates with a fixed xorshift sequence
    for (int i = blocks - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const int j = (int)(x % (uint64_t)(i + 1));
        const int32_t t = tab[i];
        tab[i] = tab[j], tab[j] = t;
    }
    const int32_t seq = 0, pos = S - 1;
    b->seq = mla_upload_i32(be, &seq, 1), b->pos = mla_upload_i32(be, &pos, 1);
    b->table = mla_upload_i32(be, tab, (size_t)blocks);
    free(tab);
    b->run = (ae_paged_run){.first = 0, .n = 1, .seq = 0, .pos0 = S - 1};
    b->pa = (ae_paged_attn_args){.N = 1, .Hq = MLA_HQ, .Hkv = 1, .dk = MLA_CD, .dv = MLA_R,
                                 .page_size = MLA_PAGE, .max_blocks = blocks,
                                 .page_stride = (int64_t)MLA_PAGE * MLA_CD, .k_stride = MLA_CD,
                                 .v_stride = MLA_CD, .scale = b->a.scale, .sinks = ae_ptr_null(),
                                 .seq = b->seq, .pos = b->pos, .block_table = b->table,
                                 .n_runs = 1, .runs = &b->run};
    b->q = be->alloc(be, (size_t)MLA_HQ * MLA_CD, AE_DT_BF16);
    b->out = be->alloc(be, (size_t)MLA_HQ * MLA_R, AE_DT_BF16);
    int ok = !ae_ptr_is_null(b->q) && !ae_ptr_is_null(b->out) && !ae_ptr_is_null(b->seq) &&
             !ae_ptr_is_null(b->pos) && !ae_ptr_is_null(b->table);
    for (int i = 0; i < b->copies && ok; i++) {
        b->cache[i] = be->alloc(be, n, AE_DT_BF16);
        ok = !ae_ptr_is_null(b->cache[i]);
        if (ok) be->fill_normal(be, b->cache[i], n, 1.0f, 20 + (uint64_t)i);
    }
    if (ok) be->fill_normal(be, b->q, (size_t)MLA_HQ * MLA_CD, 1.0f, 19);
    return ok ? 0 : 1;
}

static void mla_call(const ae_backend *be, mla_bufs *b, int paged, int c, ae_ptr out) {
    if (paged) be->attention_paged(be, &b->pa, out, b->q, b->cache[c], b->cache[c]);
    else be->attention(be, &b->a, out, b->q, b->cache[c], b->cache[c]);
}

typedef struct {
    mla_bufs *b;
    int paged;
} mla_ctx;

// Call i (ctx: an mla_ctx): the query against latent cache copy i mod copies.
static void mla_call_q(const ae_backend *be, void *ctx, int i) {
    const mla_ctx *m = ctx;
    mla_call(be, m->b, m->paged, i % m->b->copies, m->b->out);
}

// Seconds per call (the current AE_CUDA_MLA_SPLITS), best of reps; < 0 on an error.
static double mla_time(const ae_backend *be, mla_bufs *b, int paged, bench_queue *t, int reps) {
    const int calls = b->copies > DEC_MIN_CALLS ? b->copies : DEC_MIN_CALLS;
    mla_ctx m = {b, paged};
    return bench_queue_time(be, t, mla_call_q, &m, b->copies, calls, reps);
}

// 1 when every ';'-separated value of `list` is "default" or a split count AE_CUDA_MLA_SPLITS
// takes (1..1024), else 0 after naming the bad value (the backend ignores other values).
static int mla_splits_valid(const char *list) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *v = strtok(buf, ";"); v; v = strtok(NULL, ";")) {
        char *end = NULL;
        const long n = strtol(v, &end, 10);
        if (strcmp(v, "default") != 0 && (*end || n < 1 || n > 1024)) {
            fprintf(stderr, "bench_attn --mla-splits: \"%s\" is neither \"default\" nor a split "
                            "count 1..1024\n", v);
            return 0;
        }
    }
    return 1;
}

// 1 when the paged row of S keys stays on k_paged_attn (cuda_paged.cu: rows under
// AE_CUDA_PAGED_TC_KEYS keys, 4096 unset), where AE_CUDA_MLA_SPLITS does not apply.
static int mla_paged_scalar(int S) {
    const char *env = getenv("AE_CUDA_PAGED_TC_KEYS");
    const int n = env ? atoi(env) : 0;
    return S < (n >= 1 ? n : 4096);
}

// Sets AE_CUDA_MLA_SPLITS to one --mla-splits value ("default": unset).
static void mla_set_splits(const char *v) {
    if (!strcmp(v, "default")) unsetenv("AE_CUDA_MLA_SPLITS");
    else setenv("AE_CUDA_MLA_SPLITS", v, 1);
}

// One row of the table: the time of the current setting, then its output (copy 0) against ref
// and its plan. 1 on an error.
static int mla_row(const ae_backend *be, mla_bufs *b, int paged, bench_queue *t, int reps,
                   const char *label, ae_ptr ref, double copy) {
    const double sec = mla_time(be, b, paged, t, reps);
    if (sec <= 0) {
        fprintf(stderr, "bench_attn --decode-mla: S=%d %s AE_CUDA_MLA_SPLITS=%s: %s\n", b->S,
                paged ? "paged" : "dense", label, ae_last_error());
        return 1;
    }
    mla_call(be, b, paged, 0, b->out);
    char plan[200];
    snprintf(plan, sizeof plan, "%s",
             paged && mla_paged_scalar(b->S) ? ae_cuda_paged_last() : ae_cuda_mla_last());
    const double diff = device_rel_diff(be, b->out, ref, (size_t)MLA_HQ * MLA_R);
    const double bytes = (double)b->S * MLA_CD * 2;
    printf("%-7s %6d %-8s %9.2f %8.0f %6.1f%% %12.2e   %s\n", paged ? "paged" : "dense", b->S,
           label, sec * 1e6, bytes / sec * 1e-9, copy > 0 ? 100.0 * bytes / sec / copy : 0.0, diff,
           plan);
    fflush(stdout);
    return 0;
}

// Every --mla-splits value on one (cache, layout) case; ref gets the default split's output.
static int mla_case(const ae_backend *be, mla_bufs *b, int paged, bench_queue *t, int reps,
                    const char *splits, ae_ptr ref, double copy) {
    unsetenv("AE_CUDA_MLA_SPLITS");
    mla_call(be, b, paged, 0, ref);
    if (paged && mla_paged_scalar(b->S)) return mla_row(be, b, paged, t, reps, "-", ref, copy);
    char list[512];
    snprintf(list, sizeof list, "%s", splits);
    int rc = 0;
    for (char *v = strtok(list, ";"); v && !rc; v = strtok(NULL, ";")) {
        mla_set_splits(v);
        rc = mla_row(be, b, paged, t, reps, v, ref, copy);
    }
    return rc;
}

static int bench_decode_mla(const ae_backend *be, int reps, const char *splits) {
    static const int Ss[] = {1024, 4096, 32768, 131072};
    if (!mla_splits_valid(splits)) return 1;
    bench_queue t;
    ae_ptr ref = be->alloc(be, (size_t)MLA_HQ * MLA_R, AE_DT_BF16); // (1, Hq, 512): default split's
    if (bench_queue_open(be, &t) || ae_ptr_is_null(ref)) {
        fprintf(stderr, "bench_attn --decode-mla: cannot set up the timer: %s\n", ae_last_error());
        bench_queue_close(be, &t);
        if (!ae_ptr_is_null(ref)) be->free(be, ref);
        return 1;
    }
    const double copy = bench_queue_copy_rate(be, &t);
    const char *saved = getenv("AE_CUDA_MLA_SPLITS");
    char *saved_copy = saved ? strdup(saved) : NULL;
    printf("absorbed MLA decode attention, T = 1, Hq %d, latent %d (v: first %d), bf16; device "
           "copy rate %.0f GB/s; time per call = best of %d reps (events, queue filled first); "
           "AE_CUDA_MLA_SPLITS over \"%s\"\n",
           MLA_HQ, MLA_CD, MLA_R, copy * 1e-9, reps, splits);
    printf("%-7s %6s %-8s %9s %8s %7s %12s   %s\n", "cache", "keys", "splits", "us/call", "GB/s",
           "% copy", "|x-def|/|def|", "plan");
    int rc = 0;
    for (size_t si = 0; si < sizeof Ss / sizeof *Ss; si++) {
        mla_bufs b;
        if (mla_alloc(be, Ss[si], &b)) {
            fprintf(stderr, "bench_attn --decode-mla: S=%d: out of memory: %s\n", Ss[si],
                    ae_last_error());
            mla_free(be, &b);
            rc = 1;
            continue;
        }
        for (int paged = 0; paged < 2; paged++)
            if (mla_case(be, &b, paged, &t, reps, splits, ref, copy)) rc = 1;
        if (be->sync(be) != AE_OK) rc = 1;
        mla_free(be, &b);
    }
    if (saved_copy) setenv("AE_CUDA_MLA_SPLITS", saved_copy, 1);
    else unsetenv("AE_CUDA_MLA_SPLITS");
    free(saved_copy);
    bench_queue_close(be, &t);
    be->free(be, ref);
    return rc;
}
#else
static int bench_decode(const ae_backend *be, int reps, const char *splits, const char *only) {
    (void)only, (void)be, (void)reps, (void)splits;
    return 1; // not reached: opening the cuda backend fails first
}
static int bench_decode_mla(const ae_backend *be, int reps, const char *splits) {
    (void)be, (void)reps, (void)splits;
    return 1; // not reached: opening the cuda backend fails first
}
#endif

// ---- one MLA layer's absorbed decode, three launches against five (--decode-mla-fused) --------
// Qwen3-8B MLA 512+64 (H 32, R 512, dr 64, dn 64, dv 128), T = 1, after the q/kv projections:
// "five" = mla_decode_prep, the q-absorb gemm, attention (kernel E + combine), the W_uv gemm
// (AE_MLA_FUSE=0's ops); "three" = mla_decode_absorb (prep + W_uk, one launch) and
// mla_decode_attend (E + the merge·W_uv launch). Each call reads its own copy of the latent
// cache and of kv_b_proj (copies rotate over 256 MiB, so both come from DRAM as in a decode
// step). Printed: µs a layer for each, their ratio, the bytes the three launches read from DRAM
// (latent + W_uk + W_uv) as % of the copy rate, |three − five| / |five| of o, and E's plan.
#ifdef AE_HAVE_CUDA
enum { MF_H = 32, MF_R = 512, MF_DR = 64, MF_DN = 64, MF_DV = 128, MF_CD = MF_R + MF_DR,
       MF_DQ = MF_DN + MF_DR, MF_DKV = MF_DN + MF_DV };

typedef struct {
    int S, copies, fused;
    ae_ptr cache[MLA_MAX_COPIES], wkvb[MLA_MAX_COPIES]; // (S, 576), (H·(dn+dv), R) each
    ae_ptr q, qt, ctx, o, w, pos; // (1,H,dq) (1,H,576) (1,H,R) (1,H,dv) (R) (1) I32
} mf_bufs;

static void mf_free(const ae_backend *be, mf_bufs *b) {
    for (int c = 0; c < b->copies; c++) be->free(be, b->cache[c]), be->free(be, b->wkvb[c]);
    be->free(be, b->q), be->free(be, b->qt), be->free(be, b->ctx), be->free(be, b->o);
    be->free(be, b->w), be->free(be, b->pos);
}

static int mf_alloc(const ae_backend *be, int S, mf_bufs *b) {
    memset(b, 0, sizeof *b);
    b->S = S;
    const size_t nc = (size_t)S * MF_CD, nw = (size_t)MF_H * MF_DKV * MF_R;
    const size_t copies = ((size_t)256 << 20) / ((nc + nw) * 2) + 1;
    b->copies = copies > MLA_MAX_COPIES ? MLA_MAX_COPIES : (int)copies;
    b->q = be->alloc(be, (size_t)MF_H * MF_DQ, AE_DT_BF16);
    b->qt = be->alloc(be, (size_t)MF_H * MF_CD, AE_DT_BF16);
    b->ctx = be->alloc(be, (size_t)MF_H * MF_R, AE_DT_BF16);
    b->o = be->alloc(be, (size_t)MF_H * MF_DV, AE_DT_BF16);
    b->w = be->alloc(be, MF_R, AE_DT_BF16);
    const int32_t pos = S - 1;
    b->pos = mla_upload_i32(be, &pos, 1);
    int ok = !ae_ptr_is_null(b->q) && !ae_ptr_is_null(b->qt) && !ae_ptr_is_null(b->ctx) &&
             !ae_ptr_is_null(b->o) && !ae_ptr_is_null(b->w) && !ae_ptr_is_null(b->pos);
    for (int i = 0; i < b->copies && ok; i++) {
        b->cache[i] = be->alloc(be, nc, AE_DT_BF16);
        b->wkvb[i] = be->alloc(be, nw, AE_DT_BF16);
        ok = !ae_ptr_is_null(b->cache[i]) && !ae_ptr_is_null(b->wkvb[i]);
        if (ok) be->fill_normal(be, b->cache[i], nc, 1.0f, 40 + (uint64_t)i);
        if (ok) be->fill_normal(be, b->wkvb[i], nw, 0.05f, 600 + (uint64_t)i);
    }
    if (ok) be->fill_normal(be, b->q, (size_t)MF_H * MF_DQ, 1.0f, 39);
    if (ok) be->fill(be, b->w, MF_R, 1.0f);
    return ok ? 0 : 1;
}

// One layer's absorbed decode on copy c: the three launches (b->fused) or the five.
static void mf_call(const ae_backend *be, void *ctx, int i) {
    mf_bufs *b = ctx;
    const int c = i % b->copies;
    ae_ptr row = ae_ptr_at(b->cache[c], (size_t)(b->S - 1) * MF_CD);
    ae_mla_prep_args pa = {.T = 1, .H = MF_H, .R = MF_R, .dr = MF_DR, .dn = MF_DN, .ldkv = MF_CD,
                           .eps = 1e-6f, .theta = 1e6, .mode = AE_ROPE_INTERLEAVED};
    ae_attn_args aa = {.T = 1, .pos0 = b->S - 1, .Hq = MF_H, .Hkv = 1, .dk = MF_CD, .dv = MF_R,
                       .k_stride = MF_CD, .v_stride = MF_CD, .scale = 1.0f / sqrtf(128.0f),
                       .sinks = ae_ptr_null()};
    const int64_t sw = (int64_t)MF_DKV * MF_R;
    ae_ptr wuv = ae_ptr_at(b->wkvb[c], (size_t)MF_DN * MF_R);
    if (b->fused) {
        be->mla_decode_absorb(be, &pa, row, b->q, b->qt, b->w, b->wkvb[c], sw, b->pos);
        be->mla_decode_attend(be, &aa, b->o, b->qt, b->cache[c], wuv, sw, MF_DV);
        return;
    }
    be->mla_decode_prep(be, &pa, row, b->q, b->qt, b->w, b->pos);
    ae_gemm_args ga = {.M = 1, .N = MF_R, .K = MF_DN, .batch = MF_H, .lda = MF_H * MF_DQ,
                       .ldb = MF_R, .ldy = MF_H * MF_CD, .sa = MF_DQ, .sb = sw, .sy = MF_CD,
                       .alpha = 1.0f};
    be->gemm(be, &ga, b->qt, b->q, b->wkvb[c]);
    be->attention(be, &aa, b->ctx, b->qt, b->cache[c], b->cache[c]);
    ae_gemm_args gb = {.M = 1, .N = MF_DV, .K = MF_R, .batch = MF_H, .trans_b = 1,
                       .lda = MF_H * MF_R, .ldb = MF_R, .ldy = MF_H * MF_DV, .sa = MF_R,
                       .sb = sw, .sy = MF_DV, .alpha = 1.0f};
    be->gemm(be, &gb, b->o, b->ctx, wuv);
}

// Seconds per layer with b->fused as set, and o of copy 0 into out; < 0 on an error.
static double mf_time(const ae_backend *be, mf_bufs *b, bench_queue *t, int reps, ae_ptr out) {
    const int calls = b->copies > DEC_MIN_CALLS ? b->copies : DEC_MIN_CALLS;
    const double sec = bench_queue_time(be, t, mf_call, b, b->copies, calls, reps);
    mf_call(be, b, 0);
    be->copy_rows(be, out, MF_DV, b->o, MF_DV, MF_H, MF_DV);
    return sec;
}

static int bench_decode_mla_fused(const ae_backend *be, int reps, const char *splits) {
    static const int Ss[] = {1024, 4096, 32768};
    if (!mla_splits_valid(splits)) return 1;
    if (!be->mla_decode_absorb || !be->mla_decode_attend) {
        fprintf(stderr, "bench_attn --decode-mla-fused: the backend has no fused MLA decode ops\n");
        return 1;
    }
    bench_queue t;
    ae_ptr o5 = be->alloc(be, (size_t)MF_H * MF_DV, AE_DT_BF16);
    ae_ptr o3 = be->alloc(be, (size_t)MF_H * MF_DV, AE_DT_BF16);
    if (bench_queue_open(be, &t) || ae_ptr_is_null(o5) || ae_ptr_is_null(o3)) {
        fprintf(stderr, "bench_attn --decode-mla-fused: cannot set up: %s\n", ae_last_error());
        bench_queue_close(be, &t);
        be->free(be, o5), be->free(be, o3);
        return 1;
    }
    const double copy = bench_queue_copy_rate(be, &t);
    printf("absorbed MLA decode, one layer (H %d, R %d, dr %d, dn %d, dv %d), T = 1, after the "
           "q/kv projections: five launches (prep, W_uk gemm, E, combine, W_uv gemm) vs three "
           "(absorb, E, merge+W_uv); copy rate %.0f GB/s; best of %d reps; AE_CUDA_MLA_SPLITS "
           "over \"%s\"\n", MF_H, MF_R, MF_DR, MF_DN, MF_DV, copy * 1e-9, reps, splits);
    printf("%6s %-8s %10s %10s %7s %8s %12s   %s\n", "keys", "splits", "five us", "three us",
           "5/3", "3: %copy", "|3-5|/|5|", "plan (three)");
    int rc = 0;
    for (size_t si = 0; si < sizeof Ss / sizeof *Ss && !rc; si++) {
        mf_bufs b;
        if (mf_alloc(be, Ss[si], &b)) {
            fprintf(stderr, "bench_attn --decode-mla-fused: S=%d: out of memory: %s\n", Ss[si],
                    ae_last_error());
            mf_free(be, &b);
            rc = 1;
            break;
        }
        char list[512];
        snprintf(list, sizeof list, "%s", splits);
        for (char *v = strtok(list, ";"); v && !rc; v = strtok(NULL, ";")) {
            mla_set_splits(v);
            b.fused = 0;
            const double s5 = mf_time(be, &b, &t, reps, o5);
            b.fused = 1;
            const double s3 = mf_time(be, &b, &t, reps, o3);
            char plan[200];
            snprintf(plan, sizeof plan, "%s", ae_cuda_mla_last());
            if (s5 <= 0 || s3 <= 0) {
                fprintf(stderr, "bench_attn --decode-mla-fused: S=%d: %s\n", b.S, ae_last_error());
                rc = 1;
                break;
            }
            // DRAM bytes of the three launches: the latent rows, W_uk and W_uv (kv_b_proj)
            const double bytes = ((double)b.S * MF_CD + (double)MF_H * MF_DKV * MF_R) * 2;
            printf("%6d %-8s %10.2f %10.2f %6.2fx %7.1f%% %12.2e   %s\n", b.S, v, s5 * 1e6,
                   s3 * 1e6, s5 / s3, 100.0 * bytes / s3 / copy,
                   device_rel_diff(be, o3, o5, (size_t)MF_H * MF_DV), plan);
            fflush(stdout);
        }
        if (be->sync(be) != AE_OK) rc = 1;
        mf_free(be, &b);
    }
    unsetenv("AE_CUDA_MLA_SPLITS");
    bench_queue_close(be, &t);
    be->free(be, o5), be->free(be, o3);
    return rc;
}
#else
static int bench_decode_mla_fused(const ae_backend *be, int reps, const char *splits) {
    (void)be, (void)reps, (void)splits;
    return 1; // not reached: opening the cuda backend fails first
}
#endif

int main(int argc, char **argv) {
    int reps = 5, fwd_kernels = 0, bwd_paths = 0, decode = 0, decode_mla = 0;
    const char *only = NULL;
    const char *dec_splits = "default;1;2;4;8;16;32;64;128;per_sm=4;per_sm=8;min_keys=64";
    const char *mla_splits = "default;8;16;32;64;128";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--fwd-kernels")) fwd_kernels = 1;
        else if (!strcmp(argv[i], "--bwd-paths")) bwd_paths = 1;
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else if (!strcmp(argv[i], "--decode-mla")) decode_mla = 1;
        else if (!strcmp(argv[i], "--decode-mla-fused")) decode_mla = 2;
        else if (!strcmp(argv[i], "--dec-splits") && i + 1 < argc) dec_splits = argv[++i];
        else if (!strcmp(argv[i], "--mla-splits") && i + 1 < argc) mla_splits = argv[++i];
        else {
            fprintf(stderr, "usage: bench_attn [--reps R] [--case NAME | --fwd-kernels | "
                            "--bwd-paths | --decode [--dec-splits \"V1;V2;..\"] | "
                            "--decode-mla[-fused] [--mla-splits \"V1;V2;..\"]]\ncases:");
            for (size_t c = 0; c < sizeof k_cases / sizeof *k_cases; c++)
                fprintf(stderr, " %s", k_cases[c].name);
            fprintf(stderr, "\n");
            return 2;
        }
    }
    if (reps < 1) {
        fprintf(stderr, "bench_attn: --reps must be >= 1\n");
        return 2;
    }
    const ae_backend *be;
    if (ae_backend_open("cuda", &be) != AE_OK) {
        fprintf(stderr, "bench_attn: no cuda backend: %s\n", ae_last_error());
        return 1;
    }
    const char *fe = getenv("AE_CUDA_ATTN"), *be_env = getenv("AE_CUDA_ATTN_BWD");
    printf("device: %s   q k v dout bf16, dq dk dv f32, best of %d (after 1 warm-up)   "
           "AE_CUDA_ATTN=%s AE_CUDA_ATTN_BWD=%s\n",
           be->device, reps, fe ? fe : "", be_env ? be_env : "");
    if (decode_mla) {
        int rc = decode_mla == 2 ? bench_decode_mla_fused(be, reps, mla_splits)
                                 : bench_decode_mla(be, reps, mla_splits);
        ae_backend_close(be);
        return rc;
    }
    if (decode) {
        int rc = bench_decode(be, reps, dec_splits, only);
        ae_backend_close(be);
        return rc;
    }
    if (fwd_kernels || bwd_paths) {
        int rc = fwd_kernels ? bench_fwd_kernels(be, reps) : 0;
        if (bwd_paths) rc |= bench_bwd_paths(be, reps);
        ae_backend_close(be);
        return rc;
    }
    int rc = 0, ran = 0;
    for (size_t c = 0; c < sizeof k_cases / sizeof *k_cases; c++) {
        if (only && strcmp(only, k_cases[c].name)) continue;
        ran++;
        rc |= bench_one(be, &k_cases[c], reps);
    }
    if (!ran) {
        fprintf(stderr, "bench_attn: no case named %s\n", only);
        rc = 2;
    }
    ae_backend_close(be);
    return rc;
}
