// The expert GEMMs of one MoE layer's training pass on the CUDA backend: the grouped ops
// (expert_matmul, expert_matmul_bwd: slot offsets read on the device, a few launches) against
// the per-expert path they replaced in train/moe_train.c (the offsets downloaded, then one
// ae_matmul / ae_matmul_bwd per expert on its slot rows).
//   bench_moe [--tokens T] [--reps R]
//   bench_moe --ffn [--tokens T] [--reps R]
// Shape: Qwen3-30B-A3B (D 2048, Im 768, E 128, K 8), T tokens (default 4096) routed to K distinct
// uniformly random experts, so S = T·K slot rows grouped by expert. Inputs and weights BF16
// (N(0,1)), o and the weight gradients F32 (as the training pass keeps them). Rows timed:
//   fwd       gate and up (x·W_gᵀ, x·W_uᵀ) and down (act·W_dᵀ)        2·S·D·Im·3 FLOPs
//   bwd dx    the input gradients of down, then of gate + up           2·S·D·Im·3
//   bwd dx+dW the same plus the three expert weight gradients          2·S·D·Im·6
// (silu, routing and combine are not included). Each is run once to warm up, then R times
// (default 5), each timed alone (sync before and after); best and mean printed. The grouped
// fwd row takes the wgmma kernel where AE_MOE_WGMMA says (backend/cuda_moe_wgmma.cu).
// --ffn: the inference MoE block instead, moe_ffn forward (plan, gate/up GEMM with silu, down
// GEMM, combine; y F32) at T = 4096 and 32768 tokens (or T), each with AE_MOE_WGMMA=ws (the
// warp-specialised wgmma kernel) with the down GEMM's per-slot rows o in bf16 (the default) and
// in fp32 (AE_MOE_DOWN_BF16=0), and AE_MOE_WGMMA=0 (mma.sync k_expert_gemm, bf16 rows), TFLOP/s
// of its expert GEMMs (2·T·K·D·Im·3 FLOPs). moe_ffn works in chunks of tokens whose temporaries
// fit AE_MOE_CHUNK_MIB (default 1024: 23797 tokens here with bf16 rows, 13785 with fp32 rows).
//   bench_moe --decode [--reps R]
// moe_ffn at decode sizes, T = 1, 2, 4, 8, 16, 32 tokens, each with AE_MOE_GEMV=0 (the grouped
// path) and 1 (the GEMV path, backend/cuda_moe_decode.cu, where T·K <= 256), y of the backend's
// activation dtype, to pick the GEMV path's threshold (kMoeGemvDefaultSlots). The weights must
// come from DRAM as in a decode step (between two calls of one layer the other layers' weights
// stream through the 50 MB L2): 4 copies of the layer's experts (4.8 GB) and 8 routings per T
// (K distinct uniformly random experts per token), call i on copy i % 4 with routing i % 8, so a
// call's weights were last read 4 calls (>= 300 MB of reads) before. Per rep: three 2 GiB device
// copies fill the queue (the host queues every call before the GPU reaches them: no launch gaps,
// as in a CUDA graph), then events on the backend's stream around 64 calls; us/call = best rep /
// 64. Bytes of a call: the distinct experts' weights (3·Im·D bf16 each) + x + y, averaged over the
// 8 routings; "% copy" against the device copy rate measured the same way in the same run (a
// 2 GiB copy_rows, read + written, best of 5), as bench_attn --decode. "path": what ran
// (ae_cuda_moe_last); "default": what AE_MOE_GEMV unset picks at that T.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "bench_queue.h"
#include "bench_time.h"
#include "core/dtype.h"
#include "core/log.h"
#include "core/rng.h"

enum { D = 2048, IM = 768, E = 128, K = 8 };

typedef struct {
    const ae_backend *be;
    int S;
    int32_t off[E + 1];  // host copy (the per-expert path downloads it each pass, as it did)
    ae_ptr doff;         // (E + 1) I32
    ae_ptr xe, g, u, act, o, dslot, dg, du; // (S, D) / (S, Im) rows; o F32
    ae_ptr w[3], gw[3];  // gate, up (E, Im, D); down (E, D, Im); gradients F32
    int with_dw;
} moe_bufs;

static void fwd_grouped(void *p) {
    moe_bufs *b = p;
    const ae_backend *be = b->be;
    ae_ptr gu[2] = {b->g, b->u};
    be->expert_matmul(be, 2, gu, b->xe, b->w, b->doff, b->S, E, IM, D);
    be->expert_matmul(be, 1, &b->o, b->act, &b->w[2], b->doff, b->S, E, D, IM);
}

static void bwd_grouped(void *p) {
    moe_bufs *b = p;
    const ae_backend *be = b->be;
    ae_ptr dgu[2] = {b->dg, b->du};
    be->expert_matmul_bwd(be, 1, b->dg, b->with_dw ? &b->gw[2] : NULL, &b->dslot, b->act, &b->w[2],
                          b->doff, b->S, E, D, IM, 0);
    be->expert_matmul_bwd(be, 2, b->dslot, b->with_dw ? b->gw : NULL, dgu, b->xe, b->w, b->doff,
                          b->S, E, IM, D, 0);
}

static void download_offsets(moe_bufs *b) {
    int32_t tmp[E + 1];
    b->be->download(b->be, tmp, AE_DT_I32, b->doff, (size_t)E + 1); // the old path's sync
}

static void fwd_per_expert(void *p) {
    moe_bufs *b = p;
    const ae_backend *be = b->be;
    download_offsets(b);
    size_t per = (size_t)IM * D;
    for (int e = 0; e < E; e++) {
        int n = b->off[e + 1] - b->off[e], p0 = b->off[e];
        if (n == 0) continue;
        ae_ptr ys[2] = {ae_ptr_at(b->g, (size_t)p0 * IM), ae_ptr_at(b->u, (size_t)p0 * IM)};
        ae_ptr ws[2] = {ae_ptr_at(b->w[0], per * e), ae_ptr_at(b->w[1], per * e)};
        int Ns[2] = {IM, IM};
        ae_matmul_group(be, 2, ys, ae_ptr_at(b->xe, (size_t)p0 * D), ws, Ns, n, D);
    }
    for (int e = 0; e < E; e++) {
        int n = b->off[e + 1] - b->off[e], p0 = b->off[e];
        if (n == 0) continue;
        ae_matmul(be, ae_ptr_at(b->o, (size_t)p0 * D), ae_ptr_at(b->act, (size_t)p0 * IM),
                  ae_ptr_at(b->w[2], per * e), n, IM, D);
    }
}

static void bwd_per_expert(void *p) {
    moe_bufs *b = p;
    const ae_backend *be = b->be;
    size_t per = (size_t)IM * D;
    be->fill(be, b->dg, (size_t)b->S * IM, 0.0f);
    for (int e = 0; e < E; e++) {
        int n = b->off[e + 1] - b->off[e], p0 = b->off[e];
        if (n == 0) continue;
        ae_ptr gd = b->with_dw ? ae_ptr_at(b->gw[2], per * e) : ae_ptr_null();
        ae_matmul_bwd(be, ae_ptr_at(b->dg, (size_t)p0 * IM), gd, ae_ptr_at(b->dslot, (size_t)p0 * D),
                      ae_ptr_at(b->act, (size_t)p0 * IM), ae_ptr_at(b->w[2], per * e), n, IM, D);
    }
    be->fill(be, b->dslot, (size_t)b->S * D, 0.0f);
    for (int e = 0; e < E; e++) {
        int n = b->off[e + 1] - b->off[e], p0 = b->off[e];
        if (n == 0) continue;
        for (int i = 0; i < 2; i++) {
            ae_ptr gwi = b->with_dw ? ae_ptr_at(b->gw[i], per * e) : ae_ptr_null();
            ae_ptr dyi = ae_ptr_at(i ? b->du : b->dg, (size_t)p0 * IM);
            ae_matmul_bwd(be, ae_ptr_at(b->dslot, (size_t)p0 * D), gwi, dyi,
                          ae_ptr_at(b->xe, (size_t)p0 * D), ae_ptr_at(b->w[i], per * e), n, D, IM);
        }
    }
}

// Slot offsets of T tokens each routed to K distinct uniformly random experts; the experts
// themselves into idx (T, K) when idx is not null.
static int route(int T, int32_t *off, int32_t *idx) {
    ae_rng r;
    ae_rng_seed(&r, 7);
    int count[E] = {0};
    for (int t = 0; t < T; t++) {
        int taken[E] = {0};
        for (int k = 0; k < K; k++) {
            int e;
            do e = (int)(ae_rng_u64(&r) % E);
            while (taken[e]);
            taken[e] = 1, count[e]++;
            if (idx) idx[(size_t)t * K + k] = e;
        }
    }
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + count[e];
    return off[E];
}

typedef struct {
    const ae_backend *be;
    int T;
    ae_ptr y, x, idx, wts, w[3]; // y (T, D) F32; x (T, D) BF16; idx, wts (T, K); w as moe_bufs
} ffn_bufs;

static void ffn_forward(void *p) {
    ffn_bufs *f = p;
    f->be->moe_ffn(f->be, f->y, f->x, f->idx, f->wts, f->w[0], f->w[1], f->w[2], f->T, D, IM, E,
                   K);
}

// moe_ffn at T tokens in each configuration of the --ffn rows (w: the three expert weights); 0
// on success.
static int bench_ffn(const ae_backend *be, const ae_ptr *w, int T, int reps) {
    ffn_bufs f = {be, T, {0}, {0}, {0}, {0}, {w[0], w[1], w[2]}};
    int32_t off[E + 1], *idx = malloc(sizeof(int32_t) * (size_t)T * K);
    float *wts = malloc(sizeof(float) * (size_t)T * K);
    if (!idx || !wts) {
        fprintf(stderr, "bench_moe: out of host memory\n");
        free(idx), free(wts);
        return 1;
    }
    route(T, off, idx);
    for (size_t i = 0; i < (size_t)T * K; i++) wts[i] = 1.0f / K;
    ae_scratch s;
    ae_scratch_init(&s, be);
    f.y = ae_scratch_alloc(&s, (size_t)T * D, AE_DT_F32);
    f.x = ae_scratch_alloc(&s, (size_t)T * D, AE_DT_BF16);
    f.idx = ae_scratch_alloc(&s, (size_t)T * K, AE_DT_I32);
    f.wts = ae_scratch_alloc(&s, (size_t)T * K, AE_DT_F32);
    int rc = 1;
    if (s.failed) {
        fprintf(stderr, "bench_moe: out of device memory: %s\n", ae_last_error());
        goto done;
    }
    if (be->upload(be, f.idx, idx, AE_DT_I32, (size_t)T * K) != AE_OK ||
        be->upload(be, f.wts, wts, AE_DT_F32, (size_t)T * K) != AE_OK)
        goto done;
    be->fill_normal(be, f.x, (size_t)T * D, 1.0f, 1);
    const double flops = 2.0 * T * K * (double)D * IM * 3;
    // AE_MOE_WGMMA, AE_MOE_DOWN_BF16: ws with bf16 rows (the default) and fp32 rows (the A/B of
    // the rows' dtype), then mma.sync
    static const struct {
        const char *wgmma, *down_bf16, *name;
    } cfg[] = {{"ws", "1", "ws rows bf16"}, {"ws", "0", "ws rows f32"},
               {"0", "1", "mma.sync rows bf16"}};
    enum { NCFG = sizeof cfg / sizeof cfg[0] };
    double best[NCFG] = {0};
    for (int m = 0; m < NCFG; m++) {
        bench_timing t;
        setenv("AE_MOE_WGMMA", cfg[m].wgmma, 1);
        setenv("AE_MOE_DOWN_BF16", cfg[m].down_bf16, 1);
        if (bench_time_op(be, ffn_forward, &f, reps, &t)) {
            fprintf(stderr, "bench_moe: moe_ffn T=%d %s: %s\n", T, cfg[m].name, ae_last_error());
            goto done;
        }
        best[m] = t.best;
        printf("moe_ffn T=%-6d %-18s %8.3f ms (mean %8.3f) %6.1f TFLOP/s\n", T, cfg[m].name,
               t.best * 1e3, t.mean * 1e3, flops / t.best * 1e-12);
        fflush(stdout);
    }
    printf("moe_ffn T=%-6d bf16 rows gain %.3fx, ws over mma.sync %.2fx\n", T, best[1] / best[0],
           best[2] / best[0]);
    rc = 0;
done:
    unsetenv("AE_MOE_WGMMA"), unsetenv("AE_MOE_DOWN_BF16");
    ae_scratch_free(&s);
    free(idx), free(wts);
    return rc;
}

// --ffn: moe_ffn at the given token counts (weights N(0, 0.02), shared by all).
static int main_ffn(const ae_backend *be, const int *Ts, int nT, int reps) {
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr w[3];
    size_t nw = (size_t)E * IM * D;
    for (int i = 0; i < 3; i++) w[i] = ae_scratch_alloc(&s, nw, AE_DT_BF16);
    int rc = 1;
    if (s.failed) {
        fprintf(stderr, "bench_moe: out of device memory: %s\n", ae_last_error());
        goto done;
    }
    for (int i = 0; i < 3; i++) be->fill_normal(be, w[i], nw, 0.02f, 10 + (uint64_t)i);
    const char *chunk = getenv("AE_MOE_CHUNK_MIB");
    printf("device: %s   moe_ffn forward, Qwen3-30B-A3B experts (D %d, Im %d, E %d, K %d), y "
           "F32, AE_MOE_CHUNK_MIB=%s, best of %d (after 1 warm-up); TFLOP/s of the expert GEMMs "
           "(2·T·K·D·Im·3)\n", be->device, D, IM, E, K, chunk ? chunk : "(1024)", reps);
    for (int i = 0; i < nT; i++)
        if (bench_ffn(be, w, Ts[i], reps)) goto done;
    rc = 0;
done:
    ae_scratch_free(&s);
    return rc;
}

// ---- decode sizes (--decode) ----------------------------------------------------------------

#ifdef AE_HAVE_CUDA
enum { DEC_COPIES = 4, DEC_ROUTES = 8, DEC_CALLS = 64, DEC_MAX_T = 32 };

typedef struct {
    int T;
    ae_ptr y, x, idx[DEC_ROUTES], wts[DEC_ROUTES]; // y (T, D) act; x (T, D) BF16; idx, wts (T, K)
    const ae_ptr *w;                               // DEC_COPIES x (gate, up, down)
    double experts;                                // distinct experts per call, mean
} dec_bufs;

// Call i (ctx: the dec_bufs): the weights and routing of copy i.
static void dec_call(const ae_backend *be, void *ctx, int i) {
    const dec_bufs *b = ctx;
    const ae_ptr *w = b->w + 3 * (i % DEC_COPIES);
    const int r = i % DEC_ROUTES;
    be->moe_ffn(be, b->y, b->x, b->idx[r], b->wts[r], w[0], w[1], w[2], b->T, D, IM, E, K);
}

// Seconds per call under the current AE_MOE_GEMV, best of reps; < 0 on an error.
static double dec_time(const ae_backend *be, const dec_bufs *b, bench_queue *q, int reps) {
    return bench_queue_time(be, q, dec_call, (void *)b, DEC_ROUTES, DEC_CALLS, reps);
}

// The routings of T tokens (seeds 100 + r) uploaded into b; b->experts their mean count of
// distinct experts. 0 on success.
static int dec_routes(const ae_backend *be, ae_scratch *s, dec_bufs *b) {
    const size_t ns = (size_t)b->T * K;
    int32_t idx[DEC_MAX_T * K];
    float wts[DEC_MAX_T * K];
    for (size_t i = 0; i < ns; i++) wts[i] = 1.0f / K;
    b->experts = 0;
    for (int r = 0; r < DEC_ROUTES; r++) {
        ae_rng g;
        ae_rng_seed(&g, 100 + (uint64_t)r);
        int used[E] = {0}, distinct = 0;
        for (int t = 0; t < b->T; t++)
            for (int k = 0; k < K; k++) {
                int e, dup;
                do { // distinct experts within a token, as the router gives
                    e = (int)(ae_rng_u64(&g) % E), dup = 0;
                    for (int j = 0; j < k; j++) dup |= idx[t * K + j] == e;
                } while (dup);
                idx[t * K + k] = e;
                distinct += !used[e], used[e] = 1;
            }
        b->experts += (double)distinct / DEC_ROUTES;
        b->idx[r] = ae_scratch_alloc(s, ns, AE_DT_I32);
        b->wts[r] = ae_scratch_alloc(s, ns, AE_DT_F32);
        if (s->failed || be->upload(be, b->idx[r], idx, AE_DT_I32, ns) != AE_OK ||
            be->upload(be, b->wts[r], wts, AE_DT_F32, ns) != AE_OK)
            return 1;
    }
    return 0;
}

// One T: both paths timed; 0 on success.
static int dec_one(const ae_backend *be, const ae_ptr *w, bench_queue *t, double copy, int T,
                   int reps) {
    dec_bufs b = {.T = T, .w = w};
    ae_scratch s;
    ae_scratch_init(&s, be);
    const ae_dtype ydt = be->act_dtype;
    b.y = ae_scratch_alloc(&s, (size_t)T * D, ydt);
    b.x = ae_scratch_alloc(&s, (size_t)T * D, AE_DT_BF16);
    int rc = 1;
    if (s.failed || dec_routes(be, &s, &b)) {
        fprintf(stderr, "bench_moe --decode: T=%d: set-up failed: %s\n", T, ae_last_error());
        goto done;
    }
    be->fill_normal(be, b.x, (size_t)T * D, 1.0f, 1);
    unsetenv("AE_MOE_GEMV");
    dec_call(be, &b, 0);
    const char *def = ae_cuda_moe_last();
    const double bytes = b.experts * 3.0 * IM * D * 2 +
                         (double)T * D * (2 + ae_dtype_size(ydt));
    for (int m = 0; m < 2; m++) {
        setenv("AE_MOE_GEMV", m ? "1" : "0", 1);
        const double sec = dec_time(be, &b, t, reps);
        if (sec <= 0) {
            fprintf(stderr, "bench_moe --decode: T=%d AE_MOE_GEMV=%d: %s\n", T, m,
                    ae_last_error());
            goto done;
        }
        dec_call(be, &b, 0); // the path of this setting
        printf("%4d %5d %7.1f %11d %-8s %9.2f %8.0f %6.1f%%   %s\n", T, T * K, b.experts, m,
               ae_cuda_moe_last(), sec * 1e6, bytes / sec * 1e-9,
               copy > 0 ? 100.0 * bytes / sec / copy : 0.0, def);
        fflush(stdout);
    }
    rc = be->sync(be) != AE_OK;
done:
    unsetenv("AE_MOE_GEMV");
    ae_scratch_free(&s);
    return rc;
}

static int main_decode(const ae_backend *be, int reps) {
    bench_queue t = {0};
    ae_scratch s;
    ae_scratch_init(&s, be);
    ae_ptr w[3 * DEC_COPIES];
    const size_t nw = (size_t)E * IM * D;
    for (int i = 0; i < 3 * DEC_COPIES; i++) w[i] = ae_scratch_alloc(&s, nw, AE_DT_BF16);
    int rc = 1;
    if (s.failed || bench_queue_open(be, &t)) {
        fprintf(stderr, "bench_moe --decode: cannot set up: %s\n", ae_last_error());
        goto done;
    }
    for (int i = 0; i < 3 * DEC_COPIES; i++) be->fill_normal(be, w[i], nw, 0.02f, 10 + (uint64_t)i);
    const double copy = bench_queue_copy_rate(be, &t);
    printf("device: %s   moe_ffn at decode sizes, Qwen3-30B-A3B experts (D %d, Im %d, E %d, K %d), "
           "y %s; device copy rate %.0f GB/s; time per call = best of %d reps of %d calls "
           "(events, queue filled first), weights from DRAM (%d copies, %d routings)\n",
           be->device, D, IM, E, K, ae_dtype_name(be->act_dtype), copy * 1e-9, reps, DEC_CALLS,
           DEC_COPIES, DEC_ROUTES);
    printf("%4s %5s %7s %11s %-8s %9s %8s %7s   %s\n", "T", "slots", "experts", "AE_MOE_GEMV",
           "path", "us/call", "GB/s", "% copy", "default");
    const int Ts[] = {1, 2, 4, 8, 16, 32};
    rc = 0;
    for (size_t i = 0; i < sizeof Ts / sizeof *Ts; i++) rc |= dec_one(be, w, &t, copy, Ts[i], reps);
done:
    bench_queue_close(be, &t);
    ae_scratch_free(&s);
    return rc;
}
#else
static int main_decode(const ae_backend *be, int reps) {
    (void)be, (void)reps;
    return 1; // not reached: opening the cuda backend fails first
}
#endif

int main(int argc, char **argv) {
    int reps = 5, T = 4096, ffn = 0, T_given = 0, decode = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]), T_given = 1;
        else if (!strcmp(argv[i], "--ffn")) ffn = 1;
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else {
            fprintf(stderr, "usage: bench_moe [--ffn] [--tokens T] [--reps R] | --decode "
                            "[--reps R]\n");
            return 2;
        }
    }
    if (reps < 1 || T < 1 || T > (1 << 20)) {
        fprintf(stderr, "bench_moe: --reps must be >= 1 and --tokens in 1..%d\n", 1 << 20);
        return 2;
    }
    const ae_backend *be;
    if (ae_backend_open("cuda", &be) != AE_OK) {
        fprintf(stderr, "bench_moe: no cuda backend: %s\n", ae_last_error());
        return 1;
    }
    if (decode) {
        int rc = main_decode(be, reps);
        ae_backend_close(be);
        return rc;
    }
    if (ffn) {
        const int Ts[2] = {4096, 32768};
        int rc = T_given ? main_ffn(be, &T, 1, reps) : main_ffn(be, Ts, 2, reps);
        ae_backend_close(be);
        return rc;
    }
    moe_bufs b;
    memset(&b, 0, sizeof b);
    b.be = be, b.S = route(T, b.off, NULL);
    size_t S = (size_t)b.S, nw = (size_t)E * IM * D;
    ae_scratch s;
    ae_scratch_init(&s, be);
    b.doff = ae_scratch_alloc(&s, E + 1, AE_DT_I32);
    b.xe = ae_scratch_alloc(&s, S * D, AE_DT_BF16), b.dslot = ae_scratch_alloc(&s, S * D, AE_DT_BF16);
    b.o = ae_scratch_alloc(&s, S * D, AE_DT_F32);
    ae_ptr *rows[5] = {&b.g, &b.u, &b.act, &b.dg, &b.du};
    for (int i = 0; i < 5; i++) *rows[i] = ae_scratch_alloc(&s, S * IM, AE_DT_BF16);
    for (int i = 0; i < 3; i++) {
        b.w[i] = ae_scratch_alloc(&s, nw, AE_DT_BF16);
        b.gw[i] = ae_scratch_alloc(&s, nw, AE_DT_F32);
    }
    int rc = 1;
    if (s.failed) {
        fprintf(stderr, "bench_moe: out of device memory: %s\n", ae_last_error());
        goto done;
    }
    if (be->upload(be, b.doff, b.off, AE_DT_I32, E + 1) != AE_OK) goto done;
    be->fill_normal(be, b.xe, S * D, 1.0f, 1), be->fill_normal(be, b.dslot, S * D, 1.0f, 2);
    for (int i = 0; i < 5; i++) be->fill_normal(be, *rows[i], S * IM, 1.0f, 3 + (uint64_t)i);
    for (int i = 0; i < 3; i++) {
        be->fill_normal(be, b.w[i], nw, 0.02f, 10 + (uint64_t)i);
        be->fill(be, b.gw[i], nw, 0.0f);
    }
    printf("device: %s   Qwen3-30B-A3B experts (D %d, Im %d, E %d, K %d), %d tokens = %zu slot "
           "rows, best of %d (after 1 warm-up)\n", be->device, D, IM, E, K, T, S, reps);
    const double f3 = 2.0 * (double)S * D * IM * 3;
    struct {
        const char *name;
        void (*grouped)(void *), (*per_expert)(void *);
        int with_dw;
        double flops;
    } rowsv[3] = {{"fwd", fwd_grouped, fwd_per_expert, 0, f3},
                  {"bwd dx", bwd_grouped, bwd_per_expert, 0, f3},
                  {"bwd dx+dW", bwd_grouped, bwd_per_expert, 1, 2 * f3}};
    for (int i = 0; i < 3; i++) {
        bench_timing tg, tp;
        b.with_dw = rowsv[i].with_dw;
        if (bench_time_op(be, rowsv[i].grouped, &b, reps, &tg) ||
            bench_time_op(be, rowsv[i].per_expert, &b, reps, &tp)) {
            fprintf(stderr, "bench_moe: %s: %s\n", rowsv[i].name, ae_last_error());
            goto done;
        }
        printf("%-10s grouped %8.3f ms (mean %8.3f) %6.1f TFLOP/s   per-expert %8.3f ms (mean "
               "%8.3f) %6.1f TFLOP/s   gain %.2fx\n",
               rowsv[i].name, tg.best * 1e3, tg.mean * 1e3, rowsv[i].flops / tg.best * 1e-12,
               tp.best * 1e3, tp.mean * 1e3, rowsv[i].flops / tp.best * 1e-12, tp.best / tg.best);
        fflush(stdout);
    }
    rc = 0;
done:
    ae_scratch_free(&s);
    ae_backend_close(be);
    return rc;
}
