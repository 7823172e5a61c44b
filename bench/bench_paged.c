// Paged attention on one device, without the serving engine: the `attention_paged` op as one
// engine decode step calls it for one layer (one query row per sequence, each at the end of its
// context, runs given), against the same rows all on the CUDA-core decode kernel (k_paged_attn)
// and, for one sequence, against the non-paged `attention` op over a contiguous cache (the
// decode path of `generate` / bench_infer). With --prefill C: one sequence's prefill chunk of C
// rows at the end of each context instead (the engine's chunks are 2048 rows on cuda), and for
// MLA also the materialised form the engine takes for long chunks (forward_paged.c).
//   bench_paged [--device cuda] [--shapes teacher,mla,gateswa] [--ctx 1024,8192,32768]
//               [--seqs 1,8,32] [--iters 10] [--reps 5] [--layers 1] [--prefill C]
// Shapes (one attention layer of the 8B models, bf16 cache on cuda):
//   teacher  Qwen3-8B: 32 query heads, 8 kv heads, d 128 (K and V rows of 8·128 each)
//   mla      qwen3-8b-mla, absorbed: 32 heads over one 576-wide latent (dk 576 = 512 + rope 64,
//            dv 512 = the latent's first 512 values, k == v rows)
//   gateswa  a sliding layer of qwen3-8b-gateswa: as teacher, window 1024
// The cache: pages of 16 positions (attnedit serve's default) shuffled over the pool; a page
// row holds `layers` layers' K/V (the engine interleaves all layers of a position in one row;
// only layer 0 is read), default 1. Modes, per (shape, context, sequences):
//   paged   attention_paged with the default dispatch (runs of one row each)
//   cc      the same call with every row on k_paged_attn + k_paged_combine (AE_CUDA_PAGED_TC_MIN
//           and AE_CUDA_PAGED_TC_KEYS set to 1e9, AE_PAGED_DECODE_FOLD=0 around the call);
//           decode only
//   fold    the same with AE_PAGED_DECODE_FOLD=1: every row on k_paged_decode (one launch, the
//           split merge folded in; cuda_paged_decode.cu), its batched key loop (AE_DEC_PIPE=0);
//           decode only
//   foldp   fold with the pipelined key loop (AE_DEC_PIPE=1: cp.async ring, tensor-core scores)
//   dense   one sequence only: `attention` with T = 1 (C) over a contiguous (ctx, kv heads, d)
//           cache
//   mat     MLA prefill only: paged_gather of the sequence's ctx latents, then
//           mla_attend_materialized (K/V of the 32 heads decompressed by a random kv_b_proj,
//           d 128/128 attention on tensor cores)
//   prow    prefill, teacher/gateswa: paged with AE_ATTN_WGMMA_PAGED=row (kernel F reads every
//           key row through attn_key_off)
//   pfast   the same with AE_ATTN_WGMMA_PAGED=fast (F's power-of-two page addressing)
//   gather  the same with AE_PAGED_F_GATHER=1 (the chunk's visible K/V rows gathered into a
//           contiguous temporary, then the contiguous kernel; the gather is timed too)
// Prefill chunks (paged, and dense for teacher/gateswa) run on Hopper's kernel F or on kernel B
// as AE_ATTN_WGMMA says (=1 / =0; unset: the default dispatch): run it once with each to A/B them.
// Printed: ms and µs per call (best of `reps` timings of `iters` calls between syncs), the cache
// bytes the rows can see divided by that time (GB/s; decode only), ms·36 (the attention of one
// step of a 36-layer model) and, for cc / fold, the plan of the short rows (ae_cuda_paged_last).
// The decode rows of issue 9 (1/8/32 sequences at 1K/8K/32K, Qwen3-8B heads) are the defaults:
//   bench_paged --shapes teacher,gateswa
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/log.h"
#include "core/rng.h"
#include "model/mla_internal.h"

enum { PAGE = 16, MAX_LIST = 16, MODEL_LAYERS = 36 };

typedef struct {
    const char *name;
    int Hq, Hkv, dk, dv, window, shared; // shared: v is the first dv values of k's rows
} shape;

static const shape k_shapes[] = {
    {"teacher", 32, 8, 128, 128, 0, 0},
    {"mla", 32, 1, 576, 512, 0, 1},
    {"gateswa", 32, 8, 128, 128, 1024, 0},
};

typedef struct {
    const ae_backend *be;
    ae_paged_attn_args pa;
    ae_attn_args dense;
    ae_ptr out, q, k, v;          // paged: pool (k, v into it), q (N, Hq, dk), out (N, Hq, dv)
    ae_ptr dq, dk, dv, dout;      // dense, one sequence: q (nq, Hq, dk), k/v (ctx, Hkv, d)
    int nq, ctx;                  // query rows per sequence (1: decode), positions per sequence
    int64_t ld;                   // page row stride (elements)
    int mat;                      // 1: the MLA materialised form below is set up
    ae_mla mla;                   // random 8B-student MLA weights (kv_b_proj used)
    mla_kv_bufs kv;               // (ctx, 32, ·) decompressed K/V
    ae_ptr latc, mq, mout;        // latc (ctx, 576) gathered, mq (nq, 32, 128), mout (nq, 32, 128)
} bench_case;

// Parses "a,b,c" into v (at most MAX_LIST values >= 1); the count, 0 when malformed.
static int parse_list(const char *s, int *v) {
    int n = 0;
    while (*s && n < MAX_LIST) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > (1L << 24) || (*end && *end != ',')) return 0;
        v[n++] = (int)x;
        s = *end ? end + 1 : end;
    }
    return *s ? 0 : n;
}

static void set_env(const char *name, const char *value) {
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

typedef enum {
    MODE_PAGED,
    MODE_CC,
    MODE_DENSE,
    MODE_MAT,
    MODE_ROW,
    MODE_FAST,
    MODE_GATHER,
    MODE_FOLD,
    MODE_FOLDP
} bench_mode;
#define MODE_COUNT (MODE_FOLDP + 1)
#define MODE_ENV_MAX 4

// Environment variables a mode sets around its calls (restored after): up to MODE_ENV_MAX.
typedef struct {
    const char *name[MODE_ENV_MAX], *value[MODE_ENV_MAX];
} mode_env;
static const mode_env k_mode_env[MODE_COUNT] = {
    [MODE_CC] = {{"AE_CUDA_PAGED_TC_MIN", "AE_CUDA_PAGED_TC_KEYS", "AE_PAGED_DECODE_FOLD"},
                 {"1000000000", "1000000000", "0"}},
    [MODE_FOLD] = {{"AE_CUDA_PAGED_TC_MIN", "AE_CUDA_PAGED_TC_KEYS", "AE_PAGED_DECODE_FOLD",
                    "AE_DEC_PIPE"},
                   {"1000000000", "1000000000", "1", "0"}},
    [MODE_FOLDP] = {{"AE_CUDA_PAGED_TC_MIN", "AE_CUDA_PAGED_TC_KEYS", "AE_PAGED_DECODE_FOLD",
                     "AE_DEC_PIPE"},
                    {"1000000000", "1000000000", "1", "1"}},
    [MODE_ROW] = {{"AE_ATTN_WGMMA_PAGED"}, {"row"}},
    [MODE_FAST] = {{"AE_ATTN_WGMMA_PAGED"}, {"fast"}},
    [MODE_GATHER] = {{"AE_PAGED_F_GATHER"}, {"1"}},
};

// The plan of the last attention_paged call's short rows (ae_cuda_paged_last), "" without CUDA.
static const char *paged_plan(void) {
#ifdef AE_HAVE_CUDA
    return ae_cuda_paged_last();
#else
    return "";
#endif
}

static void call(const bench_case *c, bench_mode mode) {
    const ae_backend *be = c->be;
    if (mode == MODE_DENSE) {
        be->attention(be, &c->dense, c->dout, c->dq, c->dk, c->dv);
    } else if (mode == MODE_MAT) {
        const int Cd = ae_mla_cache_dim(&c->mla.d);
        be->paged_gather(be, c->latc, Cd, c->k, c->pa.page_stride, PAGE, c->ld,
                         c->pa.block_table, c->ctx, Cd);
        mla_attend_materialized(be, &c->mla, c->nq, c->ctx - c->nq, c->mq, c->latc, Cd, &c->kv,
                                c->mout);
    } else {
        be->attention_paged(be, &c->pa, c->out, c->q, c->k, c->v);
    }
}

// The materialised MLA form of a prefill chunk (one sequence): qwen3-8b-mla's dims (D 4096,
// 32 heads, latent 512 + rope 64, nope 64, v 128), random weights. 0 when it does not fit.
static int setup_mat(bench_case *c, ae_scratch *s) {
    const ae_backend *be = c->be;
    ae_mla_dims d = {.D = 4096, .H = 32, .kv_lora_rank = 512, .dn = 64, .dr = 64, .dv = 128,
                     .rope_theta = 1e6, .eps = 1e-6f};
    if (ae_mla_init(&c->mla, &d, be) != AE_OK) return 0;
    ae_rng rng;
    ae_rng_seed(&rng, 9);
    if (ae_mla_init_random(&c->mla, 0.02f, &rng) != AE_OK) return 0;
    c->latc = ae_scratch_alloc(s, (size_t)c->ctx * ae_mla_cache_dim(&d), be->act_dtype);
    c->mq = ae_scratch_alloc(s, (size_t)c->nq * d.H * (d.dn + d.dr), be->act_dtype);
    c->mout = ae_scratch_alloc(s, (size_t)c->nq * d.H * d.dv, be->act_dtype);
    if (!mla_kv_alloc(s, &d, c->ctx, &c->kv)) return 0;
    be->fill_normal(be, c->mq, (size_t)c->nq * d.H * (d.dn + d.dr), 1.0f, 6);
    c->mat = 1;
    return 1;
}

// Best ms per call over reps timings of iters calls (after one warm-up call); < 0 on failure.
static double time_mode(const bench_case *c, bench_mode mode, int iters, int reps) {
    const mode_env *env = &k_mode_env[mode];
    char *old[MODE_ENV_MAX] = {NULL};
    for (int i = 0; i < MODE_ENV_MAX && env->name[i]; i++) {
        const char *o = getenv(env->name[i]);
        old[i] = o ? strdup(o) : NULL;
        setenv(env->name[i], env->value[i], 1);
    }
    double best = -1.0;
    call(c, mode);
    if (c->be->sync(c->be) == AE_OK) {
        best = 1e30;
        for (int r = 0; r < reps && best >= 0; r++) {
            double t0 = ae_time_now();
            for (int i = 0; i < iters; i++) call(c, mode);
            if (c->be->sync(c->be) != AE_OK) best = -1.0;
            double ms = (ae_time_now() - t0) * 1e3 / iters;
            if (best >= 0 && ms < best) best = ms;
        }
    }
    for (int i = 0; i < MODE_ENV_MAX && env->name[i]; i++) {
        set_env(env->name[i], old[i]);
        free(old[i]);
    }
    return best;
}

// The paged cache of nseq sequences of ctx positions (pages shuffled), c->nq query rows per
// sequence at positions ctx − nq .. ctx − 1, and (nseq = 1) the dense cache. 0 when it does not
// fit.
static int setup(bench_case *c, ae_scratch *s, const shape *sh, int ctx, int nseq, int layers,
                 int32_t *table_h, int32_t *seq_h, int32_t *pos_h, ae_paged_run *runs) {
    const ae_backend *be = c->be;
    ae_dtype at = be->act_dtype;
    const int nq = c->nq, N = nseq * nq;
    const int kw = sh->Hkv * sh->dk, row = sh->shared ? kw : kw + sh->Hkv * sh->dv;
    const int64_t ld = (int64_t)row * layers, page_stride = ld * PAGE;
    const int nb = (ctx + PAGE - 1) / PAGE, npages = nb * nseq;
    ae_rng rng;
    ae_rng_seed(&rng, 5);
    for (int i = 0; i < npages; i++) table_h[i] = i;
    for (int i = npages - 1; i > 0; i--) { // page tables out of order
        int j = (int)(ae_rng_u64(&rng) % (uint64_t)(i + 1));
        int32_t t = table_h[i];
        table_h[i] = table_h[j], table_h[j] = t;
    }
    for (int r = 0; r < nseq; r++) {
        for (int t = 0; t < nq; t++) seq_h[r * nq + t] = r, pos_h[r * nq + t] = ctx - nq + t;
        runs[r] = (ae_paged_run){.first = r * nq, .n = nq, .seq = r, .pos0 = ctx - nq};
    }
    c->ctx = ctx, c->ld = ld;
    size_t npool = (size_t)npages * (size_t)page_stride;
    c->k = ae_scratch_alloc(s, npool, at);
    c->v = sh->shared ? c->k : ae_ptr_at(c->k, (size_t)kw);
    c->q = ae_scratch_alloc(s, (size_t)N * sh->Hq * sh->dk, at);
    c->out = ae_scratch_alloc(s, (size_t)N * sh->Hq * sh->dv, at);
    ae_ptr tab = ae_scratch_alloc(s, (size_t)npages, AE_DT_I32);
    ae_ptr sq = ae_scratch_alloc(s, (size_t)N, AE_DT_I32);
    ae_ptr ps = ae_scratch_alloc(s, (size_t)N, AE_DT_I32);
    if (nseq == 1) {
        c->dq = ae_scratch_alloc(s, (size_t)nq * sh->Hq * sh->dk, at);
        c->dk = ae_scratch_alloc(s, (size_t)ctx * kw, at);
        c->dv = sh->shared ? c->dk : ae_scratch_alloc(s, (size_t)ctx * sh->Hkv * sh->dv, at);
        c->dout = ae_scratch_alloc(s, (size_t)nq * sh->Hq * sh->dv, at);
    }
    if (s->failed || be->upload(be, tab, table_h, AE_DT_I32, (size_t)npages) != AE_OK ||
        be->upload(be, sq, seq_h, AE_DT_I32, (size_t)N) != AE_OK ||
        be->upload(be, ps, pos_h, AE_DT_I32, (size_t)N) != AE_OK)
        return 0;
    be->fill_normal(be, c->k, npool, 1.0f, 1);
    be->fill_normal(be, c->q, (size_t)N * sh->Hq * sh->dk, 1.0f, 2);
    const float scale = 1.0f / sqrtf(sh->shared ? 128.0f : (float)sh->dk); // mla: nope + rope
    c->pa = (ae_paged_attn_args){.N = N, .Hq = sh->Hq, .Hkv = sh->Hkv, .dk = sh->dk,
                                 .dv = sh->dv, .page_size = PAGE, .max_blocks = nb,
                                 .page_stride = page_stride, .k_stride = (int)ld,
                                 .v_stride = (int)ld, .window = sh->window, .scale = scale,
                                 .sinks = ae_ptr_null(), .seq = sq, .pos = ps,
                                 .block_table = tab, .n_runs = nseq, .runs = runs};
    if (nseq == 1) {
        be->fill_normal(be, c->dk, (size_t)ctx * kw, 1.0f, 3);
        if (!sh->shared) be->fill_normal(be, c->dv, (size_t)ctx * sh->Hkv * sh->dv, 1.0f, 4);
        be->fill_normal(be, c->dq, (size_t)nq * sh->Hq * sh->dk, 1.0f, 5);
        c->dense = ae_attn_dense(nq, ctx - nq, sh->Hq, sh->Hkv, sh->dk, sh->dv, sh->window, scale,
                                 ae_ptr_null());
        if (sh->shared) c->dense.v_stride = c->dense.k_stride;
    }
    if (nq > 1 && sh->shared && nseq == 1 && be->paged_gather && !setup_mat(c, s)) return 0;
    return be->sync(be) == AE_OK;
}

// nq: query rows per sequence (1: decode; C: a prefill chunk, one sequence).
static void run_case(const ae_backend *be, const shape *sh, int ctx, int nseq, int nq, int layers,
                     int iters, int reps) {
    const int nb = (ctx + PAGE - 1) / PAGE;
    const size_t N = (size_t)nseq * nq;
    int32_t *table_h = malloc(sizeof(int32_t) * (size_t)nb * nseq);
    int32_t *seq_h = malloc(sizeof(int32_t) * N), *pos_h = malloc(sizeof(int32_t) * N);
    ae_paged_run *runs = malloc(sizeof *runs * (size_t)nseq);
    bench_case c;
    memset(&c, 0, sizeof c);
    c.be = be;
    c.nq = nq;
    ae_scratch s;
    ae_scratch_init(&s, be);
    if (!table_h || !seq_h || !pos_h || !runs ||
        !setup(&c, &s, sh, ctx, nseq, layers, table_h, seq_h, pos_h, runs)) {
        printf("%-8s %6d %5d  (does not fit: %s)\n", sh->name, ctx, nseq, ae_last_error());
    } else {
        const int keys = sh->window > 0 && sh->window < ctx ? sh->window : ctx;
        const int row_bytes = (sh->Hkv * sh->dk + (sh->shared ? 0 : sh->Hkv * sh->dv)) *
                              (int)ae_dtype_size(be->act_dtype);
        const double bytes = (double)nseq * keys * row_bytes;
        static const char *names[MODE_COUNT] = {"paged", "cc",   "dense",  "mat",
                                                "prow",  "pfast", "gather", "fold", "foldp"};
        for (int m = MODE_PAGED; m < MODE_COUNT; m++) {
            const int f_modes = m == MODE_ROW || m == MODE_FAST || m == MODE_GATHER;
            if ((m == MODE_DENSE && nseq != 1) || (m == MODE_MAT && !c.mat) ||
                ((m == MODE_CC || m == MODE_FOLD || m == MODE_FOLDP) && nq > 1) || // decode only
                (f_modes && (nq == 1 || sh->shared))) // kernel F's prefill chunks only
                continue;
            double ms = time_mode(&c, (bench_mode)m, iters, reps);
            if (ms < 0) printf("%-8s %6d %5d  %-6s failed: %s\n", sh->name, ctx, nseq, names[m],
                               ae_last_error());
            else if (nq > 1) printf("%-8s %6d %5d  %-6s %9.4f %8.1f %8s %9.2f\n", sh->name, ctx,
                                    nseq, names[m], ms, ms * 1e3, "-", ms * MODEL_LAYERS);
            else printf("%-8s %6d %5d  %-6s %9.4f %8.1f %8.1f %9.2f  %s\n", sh->name, ctx, nseq,
                        names[m], ms, ms * 1e3, bytes / (ms * 1e-3) / 1e9, ms * MODEL_LAYERS,
                        m == MODE_CC || m == MODE_FOLD || m == MODE_FOLDP ? paged_plan() : "");
        }
    }
    fflush(stdout);
    ae_mla_free(&c.mla);
    ae_scratch_free(&s);
    free(table_h), free(seq_h), free(pos_h), free(runs);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_paged [--device cuda] [--shapes teacher,mla,gateswa] "
                    "[--ctx 1024,8192,32768] [--seqs 1,8,32] [--iters 10] [--reps 5] "
                    "[--layers 1] [--prefill C]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *device = "cuda", *shapes = "teacher,mla,gateswa";
    int ctx[MAX_LIST] = {1024, 8192, 32768}, nctx = 3, seqs[MAX_LIST] = {1, 8, 32}, nseqs = 3;
    int iters = 10, reps = 5, layers = 1, prefill = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(argv[i], "--device")) device = v;
        else if (!strcmp(argv[i], "--shapes")) shapes = v;
        else if (!strcmp(argv[i], "--ctx")) nctx = parse_list(v, ctx);
        else if (!strcmp(argv[i], "--seqs")) nseqs = parse_list(v, seqs);
        else if (!strcmp(argv[i], "--iters")) iters = atoi(v);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(v);
        else if (!strcmp(argv[i], "--layers")) layers = atoi(v);
        else if (!strcmp(argv[i], "--prefill")) prefill = atoi(v);
        else return usage();
        i++;
    }
    if (nctx < 1 || nseqs < 1 || iters < 1 || reps < 1 || layers < 1 || prefill < 0) {
        fprintf(stderr, "bench_paged: --ctx and --seqs take lists of positive integers "
                        "(a,b,c); --iters, --reps, --layers must be >= 1, --prefill >= 0\n");
        return 2;
    }
    for (int i = 0; i < nctx && prefill > 0; i++)
        if (ctx[i] < prefill) {
            fprintf(stderr, "bench_paged: --ctx %d is shorter than the --prefill chunk (%d)\n",
                    ctx[i], prefill);
            return 2;
        }
    const ae_backend *be;
    if (ae_backend_open(device, &be) != AE_OK) {
        fprintf(stderr, "bench_paged: no %s backend: %s\n", device, ae_last_error());
        return 1;
    }
    printf("device: %s   pages of %d positions, %d layer(s) per page row, best of %d x %d calls"
           "%s\n", be->device, PAGE, layers, reps, iters,
           prefill > 0 ? "; one prefill chunk per context (--prefill)" : "");
    printf("%-8s %6s %5s  %-6s %9s %8s %8s %9s\n", "shape", "ctx", "seqs", "mode", "ms/call",
           "us/call", "GB/s", "ms x36");
    int found = 0;
    for (size_t k = 0; k < sizeof k_shapes / sizeof *k_shapes; k++) {
        const shape *sh = &k_shapes[k];
        char list[256];
        snprintf(list, sizeof list, ",%s,", shapes);
        char key[32];
        snprintf(key, sizeof key, ",%s,", sh->name);
        if (!strstr(list, key)) continue;
        found++;
        for (int i = 0; i < nctx; i++) {
            if (prefill > 0) { // one sequence
                run_case(be, sh, ctx[i], 1, prefill, layers, iters, reps);
                continue;
            }
            for (int j = 0; j < nseqs; j++)
                run_case(be, sh, ctx[i], seqs[j], 1, layers, iters, reps);
        }
    }
    ae_backend_close(be);
    if (!found) {
        fprintf(stderr, "bench_paged: --shapes names none of teacher, mla, gateswa\n");
        return 2;
    }
    return 0;
}
