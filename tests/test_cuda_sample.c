// sample_rows on the GPU (backend/cuda_sample.cu: radix searches, no sort) against the CPU
// reference (backend/cpu_sample.c: a sort per row), id for id:
//   - thousands of random rows at V 151936 (Qwen3), 32003 and 1001 (odd), with temperature,
//     top_k and top_p varied over rows (0, 1, 2, 50, 1000, V - 1 and > V; top_p 1e-6 .. 1;
//     temperature 0 .. 3) and u from a generator; logits on a grid of a random permutation
//     (distinct values 1e-4 apart and more, so no two different logits share a probability),
//     every other row with pairs of equal logits (ties: ordered by id, including the j-th tie),
//     flat and peaked rows. The parameters are chosen so that the kernel's sums cannot decide
//     differently from the reference's: top_p and r = u · (kept mass) each at least GAP away
//     from every cumulative sum of the reference's order (redrawn until so; see GAP);
//   - the same ids on a second run (deterministic), and temperature-0 rows == argmax_rows;
//   - timing of one call at V 151936 (printed): 32 and 128 rows, all kept and top-k 50.
// The serving engine with sampled requests on the GPU (qwen3-micro): the same tokens on two runs,
// and the same tokens as with AE_SERVE_HOST_SAMPLING=1 (the host sampler on the downloaded
// logits: the same logits, so the same ids unless a sum lands within ~1e-7 of a boundary,
// ~1e-5 per token); the tokens `generate` gives on the GPU for the same seeds are printed
// beside them (the paged forward and generate's contiguous one round bf16 differently, so they
// may part after a flip, sampled or greedy).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/log.h"
#include "core/rng.h"
#include "infer/generate.h"
#include "serve/engine.h"
#include "util/testutil.h"

// How far the kernel's cumulative sums can be from the reference's: each probability within
// ~2.5e-7 relative (CUDA's expf within 2 ulp of glibc's, a product with 1/Σ instead of a
// division, Σ in another order), masses of at most 1, integer sums exact less < V · 2^-62. GAP
// is 4x that bound.
#define GAP 1e-6

static const ae_backend *g_gpu;
static char *g_tmp;

typedef struct {
    int V, rows;
} shape;

// The reference's order of row z at temperature T (its arithmetic: expf, double Σ, float p).
static void ref_order(const float *z, int V, float T, ae_sample_pair *o) {
    int best = 0;
    for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
    double sum = 0;
    for (int i = 0; i < V; i++) {
        o[i].p = expf((z[i] - z[best]) / T);
        o[i].id = i;
        sum += o[i].p;
    }
    for (int i = 0; i < V; i++) o[i].p = (float)(o[i].p / sum);
}

static int by_p_desc(const void *a, const void *b) {
    const ae_sample_pair *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

// 1 when x is at least GAP from every cumulative sum c[0 .. n-1).
static int clear_of(const double *c, int n, double x) {
    for (int i = 0; i < n; i++)
        if (fabs(c[i] - x) < GAP) return 0;
    return 1;
}

// Row r's logits: a random permutation of a grid (values 16/V·scale apart), pairs of equal
// values in every other row, a peaked head in every third row.
static void make_row(float *z, int V, int r, ae_rng *rng) {
    for (int i = 0; i < V; i++) z[i] = (float)i;
    for (int i = V - 1; i > 0; i--) { // Fisher-Yates
        int j = (int)(ae_rng_uniform(rng) * (float)(i + 1));
        j = j > i ? i : j;
        float t = z[i];
        z[i] = z[j];
        z[j] = t;
    }
    float scale = (r % 3 == 0) ? 24.0f : (r % 3 == 1) ? 6.0f : 1.0f; // peaked .. nearly flat
    for (int i = 0; i < V; i++) {
        float g = r % 2 ? floorf(z[i] / 2.0f) * 2.0f : z[i]; // pairs of equal values
        z[i] = -scale + 2.0f * scale * g / (float)V;
    }
}

// Row r's parameters, top_p and u redrawn until clear of the reference's sums.
static ae_sample_param make_param(const float *z, int V, int r, ae_rng *rng, ae_sample_pair *o,
                                  double *cum) {
    static const float temps[] = {0.05f, 0.3f, 0.7f, 1.0f, 1.5f, 3.0f};
    static const float top_ps[] = {1.0f, 0.9f, 0.5f, 1e-6f, 0.95f, 0.99f, 1.0f};
    int ks[] = {0, 1, 2, 50, 1000, V - 1, V + 5, 0};
    ae_sample_param p = {temps[r % 6], top_ps[r % 7], ks[r % 8], 0};
    if (r % 97 == 5) p.temperature = 0.0f; // argmax rows
    if (p.temperature == 0.0f) return p;
    ref_order(z, V, p.temperature, o);
    qsort(o, (size_t)V, sizeof *o, by_p_desc);
    int keep = p.top_k > 0 && p.top_k < V ? p.top_k : V;
    double c = 0;
    for (int i = 0; i < keep; i++) cum[i] = (c += o[i].p);
    for (int t = 0;; t++) { // top_p clear of the sums before the set's last (its own cut)
        if (clear_of(cum, keep - 1, p.top_p)) break;
        p.top_p = t < 50 ? p.top_p * (1.0f - 1e-4f * (float)(t + 1)) : ae_rng_uniform(rng);
        if (!(p.top_p > 0.0f)) p.top_p = 0.5f;
    }
    int kept = keep;
    for (int i = 0; i < keep; i++)
        if (cum[i] >= p.top_p) {
            kept = i + 1;
            break;
        }
    for (;;) { // r clear of the kept sums before the last kept (the fallback either way)
        p.u = ae_rng_uniform(rng);
        if (clear_of(cum, kept - 1, p.u * cum[kept - 1])) break;
    }
    return p;
}

static void check_shape(shape sh) {
    int V = sh.V, R = sh.rows, chunk = 256;
    float *z = malloc(sizeof(float) * (size_t)chunk * V);
    ae_sample_param *prm = malloc(sizeof *prm * (size_t)chunk);
    int32_t *want = malloc(sizeof(int32_t) * chunk), *got = malloc(sizeof(int32_t) * chunk),
            *again = malloc(sizeof(int32_t) * chunk), *amax = malloc(sizeof(int32_t) * chunk);
    assert_true(z && prm && want && got && again && amax);
    ae_ptr dz = g_gpu->alloc(g_gpu, (size_t)chunk * V, AE_DT_F32);
    ae_ptr dp = g_gpu->alloc(g_gpu, 4 * (size_t)chunk, AE_DT_I32);
    ae_ptr di = g_gpu->alloc(g_gpu, (size_t)chunk, AE_DT_I32);
    assert_false(ae_ptr_is_null(dz) || ae_ptr_is_null(dp) || ae_ptr_is_null(di));
    int bad = 0, ties_j = 0, argmax_rows = 0;
    for (int r0 = 0; r0 < R; r0 += chunk) {
        int n = R - r0 < chunk ? R - r0 : chunk;
#pragma omp parallel
        {
            ae_sample_pair *o = malloc(sizeof *o * (size_t)V);
            double *cum = malloc(sizeof(double) * (size_t)V);
#pragma omp for schedule(dynamic)
            for (int k = 0; k < n; k++) {
                ae_rng rng;
                ae_rng_seed(&rng, (uint64_t)V * 1000003u + (uint64_t)(r0 + k));
                float *row = z + (size_t)k * V;
                make_row(row, V, r0 + k, &rng);
                prm[k] = make_param(row, V, r0 + k, &rng, o, cum);
                want[k] = ae_sample_row(row, V, &prm[k], o);
            }
            free(o);
            free(cum);
        }
        assert_int_equal(g_gpu->upload(g_gpu, dz, z, AE_DT_F32, (size_t)n * V), AE_OK);
        assert_int_equal(g_gpu->upload(g_gpu, dp, prm, AE_DT_I32, 4 * (size_t)n), AE_OK);
        g_gpu->sample_rows(g_gpu, di, dz, dp, n, V);
        assert_int_equal(g_gpu->download(g_gpu, got, AE_DT_I32, di, (size_t)n), AE_OK);
        g_gpu->sample_rows(g_gpu, di, dz, dp, n, V);
        assert_int_equal(g_gpu->download(g_gpu, again, AE_DT_I32, di, (size_t)n), AE_OK);
        g_gpu->argmax_rows(g_gpu, di, dz, n, V);
        assert_int_equal(g_gpu->download(g_gpu, amax, AE_DT_I32, di, (size_t)n), AE_OK);
        if (memcmp(got, again, sizeof(int32_t) * (size_t)n) != 0)
            fail_msg("V %d: two runs of sample_rows differ (rows %d..)", V, r0);
        for (int k = 0; k < n; k++) {
            const float *row = z + (size_t)k * V;
            if ((r0 + k) % 2 && prm[k].temperature > 0.0f) // a pick that is not the lowest tied id
                for (int j = 0; j < want[k]; j++)
                    if (row[j] == row[want[k]]) {
                        ties_j++;
                        break;
                    }
            if (prm[k].temperature == 0.0f) {
                argmax_rows++;
                if (got[k] != amax[k]) fail_msg("V %d row %d: temperature 0 gives %d, argmax_rows %d", V, r0 + k, got[k], amax[k]);
            }
            if (got[k] != want[k] && bad++ < 10)
                printf("V %d row %d (T %g top_k %d top_p %.9g u %.9g): gpu %d, cpu %d\n", V, r0 + k,
                       prm[k].temperature, prm[k].top_k, prm[k].top_p, prm[k].u, got[k], want[k]);
        }
    }
    printf("V %6d: %d rows, %d differ from the CPU (%d picks of the second of two equal logits, "
           "%d argmax rows)\n", V, R, bad, ties_j, argmax_rows);
    fflush(stdout);
    assert_int_equal(bad, 0);
    assert_true(ties_j > 0); // the tie scan (j > 0) ran
    g_gpu->free(g_gpu, dz);
    g_gpu->free(g_gpu, dp);
    g_gpu->free(g_gpu, di);
    free(z), free(prm), free(want), free(got), free(again), free(amax);
}

static void test_random_rows(void **state) {
    (void)state;
    check_shape((shape){151936, 2048});
    check_shape((shape){32003, 4096});
    check_shape((shape){1001, 4096});
}

// Milliseconds of one sample_rows call (printed for the docs; not a check).
static void test_timing(void **state) {
    (void)state;
    int V = 151936, N = 128;
    float *z = malloc(sizeof(float) * (size_t)N * V);
    ae_sample_param prm[128];
    ae_rng rng;
    ae_rng_seed(&rng, 5);
    for (int k = 0; k < N; k++) make_row(z + (size_t)k * V, V, k, &rng);
    ae_ptr dz = g_gpu->alloc(g_gpu, (size_t)N * V, AE_DT_F32);
    ae_ptr dp = g_gpu->alloc(g_gpu, 4 * (size_t)N, AE_DT_I32);
    ae_ptr di = g_gpu->alloc(g_gpu, (size_t)N, AE_DT_I32);
    assert_int_equal(g_gpu->upload(g_gpu, dz, z, AE_DT_F32, (size_t)N * V), AE_OK);
    const struct {
        float T, top_p;
        int top_k;
    } cfg[] = {{1.0f, 1.0f, 0}, {0.8f, 0.9f, 0}, {0.8f, 0.95f, 50}};
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++)
        for (int n = 32; n <= N; n *= 4) {
            for (int k = 0; k < n; k++) prm[k] = (ae_sample_param){cfg[c].T, cfg[c].top_p, cfg[c].top_k, 0.37f};
            assert_int_equal(g_gpu->upload(g_gpu, dp, prm, AE_DT_I32, 4 * (size_t)n), AE_OK);
            g_gpu->sample_rows(g_gpu, di, dz, dp, n, V); // warm
            assert_int_equal(g_gpu->sync(g_gpu), AE_OK);
            double t0 = ae_time_now();
            for (int it = 0; it < 20; it++) g_gpu->sample_rows(g_gpu, di, dz, dp, n, V);
            assert_int_equal(g_gpu->sync(g_gpu), AE_OK);
            printf("sample_rows V %d, %3d rows, T %.1f top_p %.2f top_k %2d: %.3f ms a call\n", V,
                   n, cfg[c].T, cfg[c].top_p, cfg[c].top_k, (ae_time_now() - t0) / 20 * 1e3);
        }
    fflush(stdout);
    g_gpu->free(g_gpu, dz);
    g_gpu->free(g_gpu, dp);
    g_gpu->free(g_gpu, di);
    free(z);
}

// ---- the engine with sampled requests on the GPU ----

#define NREQ 6
#define GEN 24

static ae_sampler_params req_sampling(int k) {
    ae_sampler_params sp = {.temperature = 0.8f, .top_p = 0.9f, .seed = (uint64_t)(40 + k)};
    if (k % 3 == 1) sp.top_k = 40;
    if (k % 3 == 2) sp.temperature = 1.2f, sp.top_p = 1.0f;
    return sp;
}

static void prompt_of(int k, int V, int32_t *p, int *n) {
    *n = 5 + 7 * k;
    for (int i = 0; i < *n; i++) p[i] = (int32_t)(((long)k * 7919 + (long)i * 104729) % V);
}

// The NREQ requests through one engine on the GPU, submitted while it is paused (the same steps
// every run); host: AE_SERVE_HOST_SAMPLING=1.
static void serve_sampled(const ae_model *m, int host, int32_t out[NREQ][GEN]) {
    ae_engine_opts o = {.max_seqs = 4, .max_batch_tokens = 32, .max_model_len = 256,
                        .max_queue = 8, .cache_bytes = 16u << 20, .page_positions = 16};
    if (host) setenv("AE_SERVE_HOST_SAMPLING", "1", 1); // read by ae_engine_start
    ae_engine *e = NULL;
    if (ae_engine_start(m, NULL, &o, &e) != AE_OK) fail_msg("engine: %s", ae_last_error());
    unsetenv("AE_SERVE_HOST_SAMPLING");
    ae_engine_pause(e, 1);
    ae_req *r[NREQ];
    for (int k = 0; k < NREQ; k++) {
        int32_t *p = malloc(sizeof(int32_t) * 64);
        int n;
        prompt_of(k, m->cfg.vocab_size, p, &n);
        ae_req_params rp = {.max_tokens = GEN, .sp = req_sampling(k), .logprobs = k == 1 ? 2 : -1,
                            .ignore_eos = 1};
        r[k] = ae_req_new(p, n, &rp);
        assert_non_null(r[k]);
        assert_int_equal(ae_engine_submit(e, r[k]), AE_OK);
    }
    ae_engine_pause(e, 0);
    ae_engine_lock(e);
    for (int k = 0; k < NREQ; k++)
        while (r[k]->finish == AE_FINISH_NONE) ae_engine_wait_locked(e, 0.5);
    for (int k = 0; k < NREQ; k++) {
        if (r[k]->finish != AE_FINISH_LENGTH || r[k]->n_out != GEN)
            fail_msg("request %d finished %s after %d tokens: %s", k, ae_finish_name(r[k]->finish),
                     r[k]->n_out, r[k]->error);
        memcpy(out[k], r[k]->out_ids, sizeof(int32_t) * GEN);
        ae_engine_release_locked(e, r[k]);
    }
    ae_engine_unlock(e);
    ae_engine_stop(e);
}

static int collect(void *ud, int32_t id) {
    int32_t *o = ud;
    o[o[GEN]++] = id;
    return 0;
}

static void test_engine_sampled(void **state) {
    (void)state;
    ae_model *m = NULL;
    if (ae_model_load(ae_test_src("models/qwen3-micro"), g_gpu, &m) != AE_OK)
        fail_msg("load qwen3-micro: %s", ae_last_error());
    static int32_t a[NREQ][GEN], b[NREQ][GEN], h[NREQ][GEN], g[NREQ][GEN + 1];
    serve_sampled(m, 0, a);
    serve_sampled(m, 0, b);
    serve_sampled(m, 1, h);
    int same_gen = 0;
    for (int k = 0; k < NREQ; k++) {
        int32_t p[64];
        int n;
        prompt_of(k, m->cfg.vocab_size, p, &n);
        ae_sampler_params sp = req_sampling(k);
        ae_sampler s;
        assert_int_equal(ae_sampler_init(&s, &sp, m->cfg.vocab_size), AE_OK);
        ae_gen_stats gs;
        g[k][GEN] = 0;
        assert_int_equal(ae_generate(m, p, n, GEN, &s, -1, collect, g[k], &gs), AE_OK);
        ae_sampler_free(&s);
        int agree = 0;
        while (agree < GEN && g[k][agree] == a[k][agree]) agree++;
        same_gen += agree == GEN;
        printf("request %d: engine == generate (GPU) for the first %d of %d tokens\n", k, agree, GEN);
        if (memcmp(a[k], b[k], sizeof a[k]) != 0) fail_msg("request %d: two engine runs differ", k);
        if (memcmp(a[k], h[k], sizeof a[k]) != 0)
            fail_msg("request %d: device sampling differs from AE_SERVE_HOST_SAMPLING=1", k);
    }
    printf("%d of %d sampled requests: the engine's tokens == generate's on the GPU\n", same_gen, NREQ);
    fflush(stdout);
    ae_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_rows),
        cmocka_unit_test(test_timing),
        cmocka_unit_test(test_engine_sampled),
    };
    ae_test_gpu_group grp = {.gpu = &g_gpu, .tmp = &g_tmp};
    return ae_test_gpu_main(&grp, tests);
}
