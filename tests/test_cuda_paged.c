// The CUDA paged KV cache ops (backend/cuda_paged.cu) against the CPU reference
// (backend/cpu_paged.c), in the style of test_backend_ops: inputs rounded to bf16 first so both
// backends see identical numbers; the CUDA backend opened with NaN-poisoned allocations. Cases:
// GQA at Qwen3-8B head shapes, sliding window with released blocks and sinks, the absorbed-MLA
// layout (576/512, k == v rows), odd page sizes, decode rows and prefill chunks of sequences of
// very different lengths in one call; few rows over long contexts (the split-KV path: batch 1
// decode at Qwen3-8B and MLA shapes, short and long rows together so that some key chunks are
// empty, window and sinks), and dims that are not multiples of 8 (the scalar-load path).
// Prefill runs (ae_paged_run): with runs the CUDA op computes runs of 16+ rows on the tensor-core
// kernels B (GQA/GateSWA) and D/E (absorbed MLA) reading keys through the block table, the other
// rows with its decode kernel: mixed batches (decode rows first, then chunks), pages shuffled over
// the pool, page sizes that do not divide the chunks, windows with released blocks (-1) before
// them, sinks, runs over 2-4K keys, rows outside every run, and AE_CUDA_PAGED_TC_MIN=1 (every run,
// decode rows too, on tensor cores: their split-KV paths); decode rows over 4096+ keys take the
// tensor cores by default (32K rows, rows at the threshold, windows, MLA 576/512); kernel F
// (Hopper wgmma) forced on the runs with AE_ATTN_WGMMA=1 (test_runs_wgmma), its power-of-two
// page addressing and the gathered runs (test_runs_wgmma_fast). Where the
// tensor-core path must have run, the output with runs must also differ somewhere from the
// output without (bf16-rounded weights in B/D/E, fp32 in the decode kernel): proof that the runs
// reached the kernels. Decode rows on k_paged_decode (test_decode_fold: 1..64 sequences, 1..33001
// keys, pages of 16 and 7, odd page counts, windows with released pages, sinks, G 1/4/8, d 64
// and 128): the plan (ae_cuda_paged_last) names the kernel and its split bound, three calls give
// the same bits (the ticket counters reset), AE_PAGED_DECODE_FOLD=0 runs k_paged_attn again.
// paged_store and paged_gather must be exact; attention within TOL_ATTN (relative L2; bf16 output). Needs a CUDA
// build and a GPU (exit 77 = skipped otherwise).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda.h"
#include "backend/ops.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "util/testutil.h"

#define TOL_ATTN 1e-2

static const ae_backend *g_gpu, *g_cpu;

static float bf16r(float x) { return ae_bf16_to_f32(ae_f32_to_bf16(x)); }

// Whether the GPU is a Hopper H100 / H200 (compute capability 9.0): there kernel F
// (AE_ATTN_WGMMA=1) must run, elsewhere it declines and kernel B runs.
static int hopper(const ae_backend *be) {
    return be->device && (strstr(be->device, "H100") || strstr(be->device, "H200"));
}

static void fill(float *x, size_t n, ae_rng *r) {
    ae_test_fill_normal(x, n, 1.0f, r);
    for (size_t i = 0; i < n; i++) x[i] = bf16r(x[i]);
}

static ae_ptr up(const ae_backend *be, const void *h, size_t n, ae_dtype src, ae_dtype dt) {
    ae_ptr p = be->alloc(be, n ? n : 1, dt);
    assert_non_null(p.data);
    assert_int_equal(be->upload(be, p, h, src, n), AE_OK);
    return p;
}

typedef struct {
    int Hq, Hkv, dk, dv, window, sinks, shared, P, nseq;
    const int *len, *nq;
    int runs;   // 0: no runs; 1: one run per sequence; 2: runs of the odd sequences only
    int tc_min; // > 0: AE_CUDA_PAGED_TC_MIN during the call
    int expect_tc; // 1: some run must take the tensor-core path (the outputs must differ)
    const char *wgmma; // non-null: AE_ATTN_WGMMA during the call with runs ("1": kernel F)
    const char *paged; // non-null: AE_ATTN_WGMMA_PAGED during the call with runs ("fast": F's
                       // power-of-two page addressing; other page sizes keep attn_key_off)
    int gather;        // 1: AE_PAGED_F_GATHER=1 during the call with runs (contiguous copy)
    int fold;          // > 0: fold_check on the GPU call (no runs); 2: its plan must split
} pcase;

// Sets (value non-null) or unsets environment variable `name`.
static void env_set(const char *name, const char *value) {
    if (value) setenv(name, value, 1);
    else unsetenv(name);
}

// The CUDA output of `pa` with AE_ATTN_WGMMA = wgmma, AE_ATTN_WGMMA_PAGED = paged and
// AE_PAGED_F_GATHER = gather (null: unset) during the call; out poisoned first. Caller frees.
static float *call_env(const ae_paged_attn_args *pa, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v,
                       size_t nout, const char *wgmma, const char *paged, const char *gather) {
    g_gpu->fill(g_gpu, out, nout, NAN);
    env_set("AE_ATTN_WGMMA", wgmma);
    env_set("AE_ATTN_WGMMA_PAGED", paged);
    env_set("AE_PAGED_F_GATHER", gather);
    g_gpu->attention_paged(g_gpu, pa, out, q, k, v);
    env_set("AE_ATTN_WGMMA", NULL);
    env_set("AE_ATTN_WGMMA_PAGED", NULL);
    env_set("AE_PAGED_F_GATHER", NULL);
    float *h = malloc(sizeof(float) * nout);
    assert_int_equal(g_gpu->download(g_gpu, h, AE_DT_F32, out, nout), AE_OK);
    return h;
}

// The plan of the last attention_paged call (ae_cuda_paged_last).
static const char *paged_last(void) {
#ifdef AE_HAVE_CUDA // (a build without CUDA skips in main, before any test)
    return ae_cuda_paged_last();
#else
    return "none";
#endif
}

// The CUDA output of `pa` with AE_PAGED_DECODE_FOLD = fold during the call, out poisoned first;
// the plan must start with `kernel`. Caller frees.
static float *call_fold(const ae_paged_attn_args *pa, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v,
                        size_t nout, const char *fold, const char *kernel) {
    g_gpu->fill(g_gpu, out, nout, NAN);
    setenv("AE_PAGED_DECODE_FOLD", fold, 1);
    g_gpu->attention_paged(g_gpu, pa, out, q, k, v);
    unsetenv("AE_PAGED_DECODE_FOLD");
    const char *plan = paged_last();
    if (strncmp(plan, kernel, strlen(kernel)) != 0)
        fail_msg("AE_PAGED_DECODE_FOLD=%s ran \"%s\", expected \"%s\"", fold, plan, kernel);
    float *h = malloc(sizeof(float) * nout);
    assert_int_equal(g_gpu->download(g_gpu, h, AE_DT_F32, out, nout), AE_OK);
    return h;
}

// The decode rows on k_paged_decode (AE_PAGED_DECODE_FOLD=1, whatever the compiled default):
// the plan names it (and, split_min > 1, a split bound of at least split_min: the folded merge
// ran), within TOL_ATTN of the cpu (ref), and three calls in a row (fresh NaN-poisoned outputs)
// give the first call's bits: a ticket counter left non-zero by a call would make the next
// call's merge run early (partials missing) or never (NaN left). With AE_PAGED_DECODE_FOLD=0 the
// old kernels run again (k_paged_attn, + k_paged_combine when split) and are close too.
static void fold_check(const ae_paged_attn_args *pa, ae_ptr out, ae_ptr q, ae_ptr k, ae_ptr v,
                       size_t nout, const float *ref, int split_min) {
    float *first = call_fold(pa, out, q, k, v, nout, "1", "fold (k_paged_decode)");
    int splits = 0;
    const char *at = strstr(paged_last(), "splits ");
    if (at) splits = atoi(at + 7);
    double err = ae_test_rel_err(first, ref, nout);
    size_t bad = 0;
    for (size_t i = 0; i < nout; i++) bad += !isfinite(first[i]);
    for (int rep = 1; rep < 3; rep++) {
        float *h = call_fold(pa, out, q, k, v, nout, "1", "fold (k_paged_decode)");
        assert_memory_equal(h, first, sizeof(float) * nout);
        free(h);
    }
    float *old = call_fold(pa, out, q, k, v, nout, "0", "k_paged_attn");
    double err_old = ae_test_rel_err(old, ref, nout);
    size_t differ = 0;
    for (size_t i = 0; i < nout; i++) differ += old[i] != first[i];
    printf("  k_paged_decode (split bound %d): rel err %.2e, bits stable over 3 calls; "
           "k_paged_attn: rel err %.2e, %zu of %zu values differ\n",
           splits, err, err_old, differ, nout);
    assert_true(bad == 0);
    assert_true(err < TOL_ATTN);
    assert_true(err_old < TOL_ATTN);
    assert_true(splits >= split_min);
    free(first);
    free(old);
}

// The runs of mode c->runs for rows laid out as run() lays them out (sequence by sequence).
static int make_runs(const pcase *c, ae_paged_run *runs) {
    int n = 0, r0 = 0;
    for (int s = 0; s < c->nseq; s++) {
        if (c->runs == 1 || (c->runs == 2 && s % 2 == 1))
            runs[n++] = (ae_paged_run){.first = r0, .n = c->nq[s], .seq = s,
                                       .pos0 = c->len[s] - c->nq[s]};
        r0 += c->nq[s];
    }
    return n;
}

// paged_gather of every sequence's rows (one call per sequence, its block-table row) out of the
// pool must give back the stored rows exactly, in position order (rows of `row` values into
// rows of row + 3, the padding untouched).
static void gather_check(const ae_backend *be, ae_ptr pool, int64_t page_stride, int P, int row,
                         ae_ptr table, int maxb, const pcase *c, const float *kv) {
    const int ldd = row + 3;
    size_t j0 = 0;
    for (int s = 0; s < c->nseq; s++) {
        const int S = c->len[s];
        size_t n = (size_t)S * ldd;
        ae_ptr d = be->alloc(be, n, be->act_dtype);
        assert_non_null(d.data);
        be->fill(be, d, n, -7.0f);
        be->paged_gather(be, d, ldd, pool, page_stride, P, row,
                         ae_ptr_at(table, (size_t)s * maxb), S, row);
        float *h = malloc(sizeof(float) * n);
        assert_int_equal(be->download(be, h, AE_DT_F32, d, n), AE_OK);
        for (int j = 0; j < S; j++)
            for (int e = 0; e < ldd; e++)
                assert_true(h[(size_t)j * ldd + e] ==
                            (e < row ? kv[(j0 + (size_t)j) * row + e] : -7.0f));
        free(h);
        be->free(be, d);
        j0 += (size_t)S;
    }
}

static void run(const pcase *c) {
    ae_rng rng;
    ae_rng_seed(&rng, 77 + c->dk + c->P);
    int kw = c->Hkv * c->dk, row = c->shared ? kw : kw + c->Hkv * c->dv, P = c->P;
    int64_t page_stride = (int64_t)P * row + 8;
    int maxb = 0, nb_total = 0, N = 0, S_total = 0;
    for (int s = 0; s < c->nseq; s++) {
        int b = (c->len[s] + P - 1) / P;
        maxb = b > maxb ? b : maxb;
        nb_total += b;
        N += c->nq[s];
        S_total += c->len[s];
    }
    int n_pages = nb_total + 3;
    int32_t *perm = malloc(sizeof(int32_t) * n_pages); // pages shuffled over the pool
    for (int i = 0; i < n_pages; i++) perm[i] = i;
    for (int i = n_pages - 1; i > 0; i--) {
        int j = (int)(ae_rng_uniform(&rng) * (i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t *table = malloc(sizeof(int32_t) * c->nseq * maxb), *slot = malloc(sizeof(int32_t) * S_total);
    int32_t *released = malloc(sizeof(int32_t) * c->nseq * maxb);
    int32_t *seq = malloc(sizeof(int32_t) * N), *pos = malloc(sizeof(int32_t) * N);
    float *kv = malloc(sizeof(float) * (size_t)S_total * row);
    float *q = malloc(sizeof(float) * (size_t)N * c->Hq * c->dk), sinks[128];
    fill(kv, (size_t)S_total * row, &rng);
    fill(q, (size_t)N * c->Hq * c->dk, &rng);
    ae_test_fill_normal(sinks, (size_t)c->Hq, 1.0f, &rng);
    for (int i = 0; i < c->Hq; i++) sinks[i] = bf16r(sinks[i]);
    for (int i = 0; i < c->nseq * maxb; i++) table[i] = -1;
    int page = 0, j0 = 0, r0 = 0;
    for (int s = 0; s < c->nseq; s++) {
        int S = c->len[s], T = c->nq[s], nb = (S + P - 1) / P;
        for (int b = 0; b < nb; b++) table[s * maxb + b] = perm[page++];
        for (int j = 0; j < S; j++) slot[j0 + j] = table[s * maxb + j / P] * P + j % P;
        for (int t = 0; t < T; t++) {
            seq[r0 + t] = s;
            pos[r0 + t] = S - T + t;
        }
        j0 += S;
        r0 += T;
    }
    ae_paged_run runs[64];
    assert_true(c->nseq <= 64);
    int n_runs = make_runs(c, runs);
    float *res[2], *plain = NULL; // plain: the CUDA output without runs
    float *flash = NULL; // with c->wgmma on a Hopper GPU: the output with runs on kernel B
    size_t nout = (size_t)N * c->Hq * c->dv, npool = (size_t)n_pages * page_stride;
    float *pool_cpu = NULL;
    for (int b = 0; b < 2; b++) {
        const ae_backend *be = b ? g_gpu : g_cpu;
        ae_dtype at = be->act_dtype;
        float *zero = calloc(npool, sizeof(float));
        ae_ptr pool = up(be, zero, npool, AE_DT_F32, at);
        free(zero);
        ae_ptr src = up(be, kv, (size_t)S_total * row, AE_DT_F32, at);
        ae_ptr sl = up(be, slot, (size_t)S_total, AE_DT_I32, AE_DT_I32);
        be->paged_store(be, pool, page_stride, P, row, src, row, sl, S_total, row);
        ae_ptr tb = up(be, table, (size_t)c->nseq * maxb, AE_DT_I32, AE_DT_I32);
        gather_check(be, pool, page_stride, P, row, tb, maxb, c, kv);
        be->free(be, tb);
        // release the blocks behind every query's window after the store, in a copy: the next
        // backend's store and gather need the whole table
        memcpy(released, table, sizeof(int32_t) * c->nseq * maxb);
        if (c->window > 0)
            for (int s = 0; s < c->nseq; s++) {
                int lo = c->len[s] - c->nq[s] - c->window + 1;
                for (int k = 0; k < maxb && (k + 1) * P <= lo; k++) released[s * maxb + k] = -1;
            }
        tb = up(be, released, (size_t)c->nseq * maxb, AE_DT_I32, AE_DT_I32);
        ae_ptr sq = up(be, seq, (size_t)N, AE_DT_I32, AE_DT_I32);
        ae_ptr ps = up(be, pos, (size_t)N, AE_DT_I32, AE_DT_I32);
        ae_ptr qq = up(be, q, (size_t)N * c->Hq * c->dk, AE_DT_F32, at);
        ae_ptr sk = c->sinks ? up(be, sinks, (size_t)c->Hq, AE_DT_F32, AE_DT_F32) : ae_ptr_null();
        ae_ptr out = be->alloc(be, nout, at);
        ae_paged_attn_args pa = {.N = N, .Hq = c->Hq, .Hkv = c->Hkv, .dk = c->dk, .dv = c->dv,
                                 .page_size = P, .max_blocks = maxb, .page_stride = page_stride,
                                 .k_stride = row, .v_stride = row, .window = c->window,
                                 .scale = 1.0f / sqrtf((float)c->dk), .sinks = sk, .seq = sq,
                                 .pos = ps, .block_table = tb, .n_runs = n_runs, .runs = runs};
        ae_ptr vv = c->shared ? pool : ae_ptr_at(pool, (size_t)kw);
        char tcm[16];
        snprintf(tcm, sizeof tcm, "%d", c->tc_min);
        if (b && c->tc_min > 0) setenv("AE_CUDA_PAGED_TC_MIN", tcm, 1);
        if (b && c->wgmma) setenv("AE_ATTN_WGMMA", c->wgmma, 1);
        if (b && c->paged) setenv("AE_ATTN_WGMMA_PAGED", c->paged, 1);
        if (b && c->gather) setenv("AE_PAGED_F_GATHER", "1", 1);
        be->attention_paged(be, &pa, out, qq, pool, vv);
        unsetenv("AE_CUDA_PAGED_TC_MIN");
        unsetenv("AE_ATTN_WGMMA");
        unsetenv("AE_ATTN_WGMMA_PAGED");
        unsetenv("AE_PAGED_F_GATHER");
        res[b] = malloc(sizeof(float) * nout);
        assert_int_equal(be->download(be, res[b], AE_DT_F32, out, nout), AE_OK);
        if (b && n_runs) { // the same call without runs: every row on the decode kernel
            pa.n_runs = 0;
            pa.runs = NULL;
            be->fill(be, out, nout, NAN);
            be->attention_paged(be, &pa, out, qq, pool, vv);
            plain = malloc(sizeof(float) * nout);
            assert_int_equal(be->download(be, plain, AE_DT_F32, out, nout), AE_OK);
            pa.n_runs = n_runs;
            pa.runs = runs;
        }
        if (b && c->fold) fold_check(&pa, out, qq, pool, vv, nout, res[0], c->fold > 1 ? 2 : 1);
        if (b && c->wgmma && hopper(be)) // the runs on kernel B (AE_ATTN_WGMMA=0)
            flash = call_env(&pa, out, qq, pool, vv, nout, "0", NULL, NULL);
        if (b && c->wgmma && (c->paged || c->gather) && hopper(be)) {
            // kernel F over pages with attn_key_off (AE_ATTN_WGMMA_PAGED=row, no gather) must
            // give the same bits as the fast path / the gather: the same key rows land in the
            // same tile positions (a gathered run's tile t still holds keys kb + 128t), and the
            // arithmetic is the same
            float *ref = call_env(&pa, out, qq, pool, vv, nout, c->wgmma, "row", NULL);
            size_t ndiff = 0;
            for (size_t i = 0; i < nout; i++)
                ndiff += memcmp(&ref[i], &res[1][i], sizeof(float)) != 0;
            printf("  kernel F %s%s against its attn_key_off path: %zu of %zu values differ\n",
                   c->paged ? "AE_ATTN_WGMMA_PAGED=" : "",
                   c->paged ? c->paged : "AE_PAGED_F_GATHER=1", ndiff, nout);
            assert_true(ndiff == 0);
            free(ref);
        }
        float *pl = malloc(sizeof(float) * npool);
        assert_int_equal(be->download(be, pl, AE_DT_F32, pool, npool), AE_OK);
        if (!b) pool_cpu = pl;
        else { // the stored rows are exact copies of bf16 values on both backends
            for (size_t i = 0; i < npool; i++) assert_true(pl[i] == pool_cpu[i]);
            free(pl);
        }
        ae_ptr all[] = {pool, src, sl, tb, sq, ps, qq, sk, out};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) be->free(be, all[i]);
    }
    double err = ae_test_rel_err(res[1], res[0], nout);
    int finite = 1;
    for (size_t i = 0; i < nout; i++) finite &= isfinite(res[1][i]) != 0;
    size_t differ = 0; // elements where the runs changed the CUDA result
    for (size_t i = 0; plain && i < nout; i++) differ += plain[i] != res[1][i];
    size_t differ_b = 0; // elements where kernel F's runs differ from kernel B's (rounding)
    for (size_t i = 0; flash && i < nout; i++) differ_b += flash[i] != res[1][i];
    printf("paged Hq %d Hkv %d dk %d dv %d window %d sinks %d shared %d P %d, %d rows, %d runs "
           "(mode %d, tc_min %d%s%s): rel err %.2e; %zu of %zu values differ from the call "
           "without runs\n",
           c->Hq, c->Hkv, c->dk, c->dv, c->window, c->sinks, c->shared, P, N, n_runs, c->runs,
           c->tc_min, c->wgmma ? ", AE_ATTN_WGMMA=" : "", c->wgmma ? c->wgmma : "", err, differ,
           nout);
    if (flash)
        printf("  kernel F (AE_ATTN_WGMMA=%s) against kernel B: %zu of %zu values differ, "
               "rel %.2e\n", c->wgmma, differ_b, nout, ae_test_rel_err(res[1], flash, nout));
    assert_true(finite);
    assert_true(err < TOL_ATTN);
    if (plain) assert_true(ae_test_rel_err(plain, res[0], nout) < TOL_ATTN);
    if (c->expect_tc && g_gpu->act_dtype == AE_DT_BF16) assert_true(differ > 0);
    if (flash) assert_true(differ_b > 0); // kernel F ran: its roundings are not B's
    free(plain);
    free(flash);
    free(perm);
    free(res[0]);
    free(res[1]);
    free(pool_cpu);
    free(table);
    free(released);
    free(slot);
    free(seq);
    free(pos);
    free(kv);
    free(q);
}

static const int k_len[] = {1, 17, 300, 2050, 64};
static const int k_nq[] = {1, 1, 1, 33, 64};

static void test_gqa(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 5, .len = k_len, .nq = k_nq};
    run(&c);
    c.P = 7;
    c.Hq = 4, c.Hkv = 2, c.dk = c.dv = 32; // qwen3-micro
    run(&c);
}

static void test_window_sinks(void **st) {
    (void)st;
    pcase c = {.Hq = 16, .Hkv = 4, .dk = 128, .dv = 128, .window = 128, .sinks = 1, .P = 16,
               .nseq = 5, .len = k_len, .nq = k_nq};
    run(&c);
}

static void test_mla(void **st) {
    (void)st;
    pcase c = {.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 5,
               .len = k_len, .nq = k_nq};
    run(&c);
    c.Hq = 32, c.dk = 288, c.dv = 256, c.P = 5;
    run(&c);
}

// Few query rows over long contexts: the CUDA op splits each row's keys into chunks (split-KV)
// and merges them; rows shorter than a chunk leave chunks empty.
static const int k_len1[] = {3000};
static const int k_nq1[] = {1};
static const int k_len3[] = {5, 1200, 4000};
static const int k_nq3[] = {1, 1, 2};
static const int k_lenm[] = {2500, 40};
static const int k_nqm[] = {3, 1};
static const int k_lenp[] = {1500, 300};
static const int k_nqp[] = {200, 100};

static void test_split(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 1, .len = k_len1,
               .nq = k_nq1}; // Qwen3-8B decode, batch 1
    run(&c);
    c = (pcase){.Hq = 16, .Hkv = 4, .dk = 128, .dv = 128, .window = 1024, .sinks = 1, .P = 16,
                .nseq = 3, .len = k_len3, .nq = k_nq3}; // GateSWA: window, sinks, empty chunks
    run(&c);
    c.window = 0; // full attention, sinks, rows of 5 to 4000 keys
    run(&c);
    c = (pcase){.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 2,
                .len = k_lenm, .nq = k_nqm}; // absorbed MLA decode
    run(&c);
    c.sinks = 1, c.P = 5;
    run(&c);
}

// Prefill chunks: enough (row, head) blocks that the keys are not split (one pass, sink added
// in the attention kernel itself).
static void test_prefill(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .window = 256, .sinks = 1, .P = 16,
               .nseq = 2, .len = k_lenp, .nq = k_nqp};
    run(&c);
    c.window = 0;
    run(&c);
    static const int len[] = {700, 300};
    c = (pcase){.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 2,
                .len = len, .nq = k_nqp};
    run(&c);
}

// dk, dv not multiples of 8 (and Hq not a multiple of 4): the scalar-load path, split and not.
static void test_odd_dims(void **st) {
    (void)st;
    pcase c = {.Hq = 6, .Hkv = 2, .dk = 36, .dv = 20, .sinks = 1, .P = 7, .nseq = 5,
               .len = k_len, .nq = k_nq};
    run(&c);
    c.nseq = 3, c.len = k_len3, c.nq = k_nq3, c.window = 300;
    run(&c);
    c.nseq = 5, c.len = k_len, c.nq = k_nq, c.runs = 1; // runs, but no tensor-core kernel: same path
    run(&c);
}

// ---- prefill runs (tensor-core kernels in paged mode) --------------------------------------------

// Decode rows first (sequences 0-2), then chunks of 33 and 64 rows: the engine's order.
static void test_runs_mixed(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 5, .len = k_len,
               .nq = k_nq, .runs = 1, .expect_tc = 1}; // Qwen3-8B heads
    run(&c);
    c.P = 7; // pages of 7 positions: chunks start and end inside pages
    run(&c);
    c.Hq = 4, c.Hkv = 2, c.dk = c.dv = 32; // qwen3-micro
    run(&c);
    c.runs = 2; // runs of sequences 1 and 3 only: rows outside runs before, between and after
    run(&c);
}

// GateSWA: sliding window with the blocks before it released (-1), sinks.
static void test_runs_window_sinks(void **st) {
    (void)st;
    pcase c = {.Hq = 16, .Hkv = 4, .dk = 128, .dv = 128, .window = 128, .sinks = 1, .P = 16,
               .nseq = 5, .len = k_len, .nq = k_nq, .runs = 1, .expect_tc = 1};
    run(&c);
    c.P = 5, c.window = 40; // windows shorter than a chunk, pages not dividing either
    run(&c);
}

// Absorbed MLA (k == v rows): kernel E for runs of T·Hq <= 64 rows, D above.
static void test_runs_mla(void **st) {
    (void)st;
    pcase c = {.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 5,
               .len = k_len, .nq = k_nq, .runs = 1, .expect_tc = 1};
    run(&c);
    c.Hq = 32, c.dk = 288, c.dv = 256, c.P = 5;
    run(&c);
    static const int len[] = {40, 18}, nq[] = {2, 18}; // runs of 2 and 18 positions, 4 heads
    c = (pcase){.Hq = 4, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .sinks = 1, .P = 16,
                .nseq = 2, .len = len, .nq = nq, .runs = 1, .expect_tc = 1};
    run(&c);
}

// Long runs: a whole 2048-token prompt from position 0 (kernel B with 128-row blocks) and a
// 512-token chunk over 3000 keys, after a decode row; the same as GateSWA (window 1024, sinks)
// and for absorbed MLA.
static const int k_lenl[] = {1, 3000, 2048};
static const int k_nql[] = {1, 512, 2048};

static void test_runs_long(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 3, .len = k_lenl,
               .nq = k_nql, .runs = 1, .expect_tc = 1};
    run(&c);
    c.window = 1024, c.sinks = 1, c.P = 7;
    run(&c);
    static const int len[] = {1, 2500}, nq[] = {1, 256};
    c = (pcase){.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 2,
                .len = len, .nq = nq, .runs = 1, .expect_tc = 1};
    run(&c);
}

// A chunk before the decode rows, and a 9-row run (below the threshold: decode kernel, in one
// range with the decode row before it).
static void test_runs_order(void **st) {
    (void)st;
    static const int len[] = {2050, 1, 300}, nq[] = {64, 1, 9};
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .window = 256, .sinks = 1, .P = 16,
               .nseq = 3, .len = len, .nq = nq, .runs = 1, .expect_tc = 1};
    run(&c);
}

// AE_CUDA_PAGED_TC_MIN=1: every run on tensor cores, decode rows (runs of 1) included: kernel B
// and E with one query position over long keys (their split-KV paths through pages).
static void test_runs_tc_all(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 5, .len = k_len,
               .nq = k_nq, .runs = 1, .tc_min = 1, .expect_tc = 1};
    run(&c);
    c = (pcase){.Hq = 16, .Hkv = 4, .dk = 128, .dv = 128, .window = 1024, .sinks = 1, .P = 16,
                .nseq = 3, .len = k_len3, .nq = k_nq3, .runs = 1, .tc_min = 1, .expect_tc = 1};
    run(&c);
    c = (pcase){.Hq = 16, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 2,
                .len = k_lenm, .nq = k_nqm, .runs = 1, .tc_min = 1, .expect_tc = 1};
    run(&c);
}

// Kernel F (Hopper wgmma) on the prefill runs, forced (AE_ATTN_WGMMA=1; =simple once): keys
// read row by row through the shuffled block table (attn_key_off), pages of 16 and 64 (a 128-key
// tile spans 8 or 2 pages; chunks start and end inside pages), chunks at pos0 > 0 whose keys
// run to pos0 + n (a 512-row chunk over 3000 keys, a whole 2048-row prompt from 0), a decode row
// first (below tc_min: the decode kernel, also with F forced), Qwen3-8B heads (G = 4), G = 1 and
// 8; GateSWA windows (1024, and 200: not a tile multiple) with the pages before each run's
// window released (-1: F must never read them), sinks; dk = 192 / dv = 128 (MLA materialised).
// On GPUs other than an H200 (or builds without sm_90a) F declines and B runs: same results.
static void test_runs_wgmma(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 3, .len = k_lenl,
               .nq = k_nql, .runs = 1, .expect_tc = 1, .wgmma = "1"};
    run(&c);
    c.P = 64;
    run(&c);
    c.window = 1024, c.sinks = 1; // GateSWA, released pages
    run(&c);
    c.P = 16, c.wgmma = "simple";
    run(&c);
    static const int len[] = {1, 1500, 700}, nq[] = {1, 300, 700};
    c = (pcase){.Hq = 16, .Hkv = 2, .dk = 128, .dv = 128, .window = 200, .sinks = 1, .P = 16,
                .nseq = 3, .len = len, .nq = nq, .runs = 1, .expect_tc = 1, .wgmma = "1"}; // G = 8
    run(&c);
    c.Hq = 4, c.Hkv = 4, c.P = 64, c.window = 0; // G = 1
    run(&c);
    c.dk = 192, c.Hq = 8, c.Hkv = 2, c.P = 16, c.window = 300; // MLA materialised dims
    run(&c);
}

// Kernel F's power-of-two page addressing (AE_ATTN_WGMMA_PAGED=fast, WG_KEYS_PAGED2) and the
// gathered runs (AE_PAGED_F_GATHER=1) on test_runs_wgmma's shapes, against the CPU (TOL_ATTN as
// everywhere here: bf16 P and output) and, on an H200, bit for bit against F's attn_key_off
// path: pages of 16 and 64 (tiles spanning 8 and 2 pages), 8 (smaller than a thread's 16-row
// step), a window of 1024 with released pages, the overlapped and the simple schedule, G = 8
// with window 200 (tiles not starting on a page), dk = 192 (K's third half); pages of 24 (not a
// power of two: "fast" must keep attn_key_off). The gather: pages of 16, 24, a window with
// released pages (only the window's rows gathered), dk = 192.
static void test_runs_wgmma_fast(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 3, .len = k_lenl,
               .nq = k_nql, .runs = 1, .expect_tc = 1, .wgmma = "1", .paged = "fast"};
    run(&c);
    c.P = 64, c.window = 1024, c.sinks = 1; // GateSWA, released pages
    run(&c);
    c.P = 8, c.wgmma = "simple";
    run(&c);
    c.P = 24, c.wgmma = "1"; // not a power of two
    run(&c);
    c.P = 16, c.window = 0, c.sinks = 0, c.paged = NULL, c.gather = 1;
    run(&c);
    c.P = 24, c.window = 1024, c.sinks = 1;
    run(&c);
    static const int len[] = {1, 1500, 700}, nq[] = {1, 300, 700};
    c = (pcase){.Hq = 16, .Hkv = 2, .dk = 128, .dv = 128, .window = 200, .sinks = 1, .P = 16,
                .nseq = 3, .len = len, .nq = nq, .runs = 1, .expect_tc = 1, .wgmma = "1",
                .paged = "fast"}; // G = 8
    run(&c);
    c.dk = 192, c.Hq = 8, c.Hkv = 2, c.P = 32, c.window = 300; // MLA materialised dims
    run(&c);
    c.paged = NULL, c.gather = 1;
    run(&c);
}

// Decode over long contexts (the default thresholds, no AE_CUDA_PAGED_TC_*): rows whose last
// position sees 4096+ keys go to the tensor-core kernels one run at a time, shorter ones to
// k_paged_attn in one launch; the call without runs puts every row on k_paged_attn (its split-KV
// over many pages). Qwen3-8B heads: a 32K row (2049 pages of 16, not a multiple of the page or
// of a split), rows at 4096 keys (tensor cores) and 4095 (decode kernel), a 3-row run over 9001
// keys, short rows between them; pages shuffled over the pool.
static const int k_lend[] = {32771, 5, 4096, 9001, 4095, 700};
static const int k_nqd[] = {1, 1, 1, 3, 1, 1};

static void test_decode_long(void **st) {
    (void)st;
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 6, .len = k_lend,
               .nq = k_nqd, .runs = 1, .expect_tc = 1};
    run(&c);
    c.P = 7, c.runs = 2; // pages of 7; the even sequences outside runs (decode kernel)
    run(&c);
    // GateSWA: window 4500 (the long rows see 4500 keys: tensor cores, the released pages
    // before the window never read), sinks, 4 heads per group
    static const int len[] = {9000, 12, 4600, 33000}, nq[] = {1, 1, 1, 1};
    c = (pcase){.Hq = 16, .Hkv = 4, .dk = 128, .dv = 128, .window = 4500, .sinks = 1, .P = 7,
                .nseq = 4, .len = len, .nq = nq, .runs = 1, .expect_tc = 1};
    run(&c);
}

// Absorbed MLA decode over long latents (kernel E through pages): 32 heads (the 8B students),
// a 32K row, a 2-row run whose last row sees 4097 keys, short rows; pages of 5 and 16.
static void test_decode_long_mla(void **st) {
    (void)st;
    static const int len[] = {32769, 100, 4097, 8200, 3}, nq[] = {1, 1, 2, 1, 1};
    pcase c = {.Hq = 32, .Hkv = 1, .dk = 576, .dv = 512, .shared = 1, .P = 16, .nseq = 5,
               .len = len, .nq = nq, .runs = 1, .expect_tc = 1};
    run(&c);
    c.P = 5, c.Hq = 16, c.sinks = 1;
    run(&c);
}

// ---- decode rows on k_paged_decode (cuda_paged_decode.cu) ---------------------------------------

// Sequence lengths 1 + (i·7919) % span (every length from 1 to span over many sequences), one
// decode row each (nq[i] = 1).
static void spread_lens(int *len, int *nq, int n, int span) {
    for (int i = 0; i < n; i++) len[i] = 1 + (int)(((long)i * 7919) % span), nq[i] = 1;
}

// The engine's decode rows (no runs: every row on the decode kernels) on k_paged_decode with
// fold_check: the case (Qwen3-8B heads, G 4, one sequence at 1K keys, pages of 16), one
// row over 33001 keys (2063 pages, a split bound of ~66: trailing splits may be empty), rows of
// 1..33000 keys together (split and unsplit rows in one launch, rows shorter than a split, a
// 3-row run outside runs, 63 pages: an odd page count), pages of 7 (no shift/mask); G = 8 over
// 64 sequences of 1..1500 keys with a window of 700 (the pages before it released, -1) and
// sinks; G = 1 at d 64 with sinks; GateSWA's sliding layer (G 4, window 128, sinks) over 32
// sequences. Tolerance TOL_ATTN (relative L2), as every attention case of this file.
static void test_decode_fold(void **st) {
    (void)st;
    static const int len1[] = {1024}, one[] = {1}, len33[] = {33001};
    pcase c = {.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 1, .len = len1,
               .nq = one, .fold = 2};
    run(&c);
    c.len = len33;
    run(&c);
    static const int lenm[] = {1, 17, 1008, 33000, 300, 2}, nqm[] = {1, 1, 1, 1, 3, 1};
    c = (pcase){.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .P = 16, .nseq = 6, .len = lenm,
                .nq = nqm, .fold = 2};
    run(&c);
    c.P = 7, c.sinks = 1;
    run(&c);
    static int len64[64], nq64[64];
    spread_lens(len64, nq64, 64, 1500);
    c = (pcase){.Hq = 16, .Hkv = 2, .dk = 128, .dv = 128, .window = 700, .sinks = 1, .P = 7,
                .nseq = 64, .len = len64, .nq = nq64, .fold = 1}; // G = 8
    run(&c);
    static const int lend[] = {1, 2, 64, 65, 129, 700, 4097, 2000};
    static const int nqd[] = {1, 1, 1, 1, 1, 1, 1, 1};
    c = (pcase){.Hq = 8, .Hkv = 8, .dk = 64, .dv = 64, .sinks = 1, .P = 16, .nseq = 8,
                .len = lend, .nq = nqd, .fold = 2}; // G = 1, d 64
    run(&c);
    static int len32[32], nq32[32];
    spread_lens(len32, nq32, 32, 1200);
    c = (pcase){.Hq = 32, .Hkv = 8, .dk = 128, .dv = 128, .window = 128, .sinks = 1, .P = 16,
                .nseq = 32, .len = len32, .nq = nq32, .fold = 1}; // GateSWA sliding layer
    run(&c);
}

int main(void) {
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gqa),
        cmocka_unit_test(test_window_sinks),
        cmocka_unit_test(test_mla),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_prefill),
        cmocka_unit_test(test_odd_dims),
        cmocka_unit_test(test_runs_mixed),
        cmocka_unit_test(test_runs_window_sinks),
        cmocka_unit_test(test_runs_mla),
        cmocka_unit_test(test_runs_long),
        cmocka_unit_test(test_runs_order),
        cmocka_unit_test(test_runs_tc_all),
        cmocka_unit_test(test_runs_wgmma),
        cmocka_unit_test(test_runs_wgmma_fast),
        cmocka_unit_test(test_decode_long),
        cmocka_unit_test(test_decode_long_mla),
        cmocka_unit_test(test_decode_fold),
    };
    rc = ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
    ae_backend_close(g_gpu);
    return rc;
}
