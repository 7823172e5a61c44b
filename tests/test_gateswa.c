// GateSWA module: training forward vs a naive double-precision reference, ring-buffer decode and
// chunked prefill vs the masked full computation, backward vs finite differences, teacher init on
// the bundled qwen3-micro teacher, parameter names/shapes.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/mem.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/attn_gateswa.h"
#include "util/fd.h"
#include "util/testutil.h"

static ae_gswa_dims dims(int D, int Hq, int Hkv, int hd, int W, ae_gate_kind gate, int sinks) {
    ae_gswa_dims d = {.D = D, .Hq = Hq, .Hkv = Hkv, .hd = hd, .window = W, .gate = gate,
                      .sinks = sinks, .rope_theta = 10000.0, .eps = 1e-6f};
    return d;
}

// A module with every parameter random and non-trivial (norm weights around 1, sinks around 0).
static void make_module(ae_gswa *m, const ae_gswa_dims *d, float std, ae_rng *r) {
    assert_int_equal(ae_gswa_init(m, d, ae_backend_cpu()), AE_OK);
    assert_int_equal(ae_gswa_init_random(m, std, r), AE_OK);
    for (int i = 0; i < d->hd; i++) {
        ae_f32(m->q_norm)[i] = 1.0f + 0.3f * ae_rng_normal(r);
        ae_f32(m->k_norm)[i] = 1.0f + 0.3f * ae_rng_normal(r);
    }
    if (!ae_ptr_is_null(m->sinks)) ae_test_fill_normal(ae_f32(m->sinks), d->Hq, 1.0f, r);
}

// Naive double-precision forward of one sequence: x (T, D) at positions 0..T-1 -> y (T, D).
static void ref_forward(const ae_gswa *m, const float *x, int T, double *y) {
    const ae_gswa_dims *d = &m->d;
    int D = d->D, Hq = d->Hq, Hkv = d->Hkv, hd = d->hd, W = d->window;
    int qd = Hq * hd, kvd = Hkv * hd;
    double *q = calloc((size_t)T * qd, sizeof(double)), *k = calloc((size_t)T * kvd, sizeof(double));
    double *v = calloc((size_t)T * kvd, sizeof(double)), *a = calloc((size_t)T * qd, sizeof(double));
    double *qn = ae_test_to_double(ae_f32(m->q_norm), (size_t)hd); // (hd) the q and k norms
    double *kn = ae_test_to_double(ae_f32(m->k_norm), (size_t)hd);
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * D;
        for (int o = 0; o < qd; o++)
            for (int i = 0; i < D; i++)
                q[t * qd + o] += (double)ae_f32(m->wq)[(size_t)o * D + i] * xt[i];
        for (int o = 0; o < kvd; o++)
            for (int i = 0; i < D; i++) {
                k[t * kvd + o] += (double)ae_f32(m->wk)[(size_t)o * D + i] * xt[i];
                v[t * kvd + o] += (double)ae_f32(m->wv)[(size_t)o * D + i] * xt[i];
            }
        for (int h = 0; h < Hq + Hkv; h++) { // norm + rope of every q and k head
            double *u = h < Hq ? q + t * qd + h * hd : k + t * kvd + (h - Hq) * hd;
            ae_ref_rmsnorm(u, u, h < Hq ? qn : kn, 1, hd, d->eps);
            ae_ref_rope_head(u, hd, t, d->rope_theta, AE_ROPE_HALF);
        }
    }
    free(qn), free(kn);
    double *sinks = ae_ptr_is_null(m->sinks) ? NULL // (Hq)
                                             : ae_test_to_double(ae_f32(m->sinks), (size_t)Hq);
    ae_test_attn args = {T, 0, Hq, Hkv, hd, hd, (size_t)kvd, (size_t)kvd, W, 0,
                         1.0 / sqrt((double)hd), sinks, NULL};
    ae_test_attention(a, &args, q, k, v);
    free(sinks);
    for (int t = 0; d->gate != AE_GATE_NONE && t < T; t++) // the output gate
        for (int h = 0; h < Hq; h++)
            for (int i = 0; i < hd; i++) {
                double gl = 0;
                int gr = d->gate == AE_GATE_ELEMENTWISE ? h * hd + i : h;
                for (int c = 0; c < D; c++)
                    gl += (double)ae_f32(m->wg)[(size_t)gr * D + c] * x[(size_t)t * D + c];
                a[t * qd + h * hd + i] *= ae_ref_sigmoid(gl);
            }
    for (int t = 0; t < T; t++)
        for (int o = 0; o < D; o++) {
            double s = 0;
            for (int i = 0; i < qd; i++)
                s += (double)ae_f32(m->wo)[(size_t)o * qd + i] * a[t * qd + i];
            y[(size_t)t * D + o] = s;
        }
    free(q);
    free(k);
    free(v);
    free(a);
}

static const int k_heads[3][2] = {{2, 2}, {4, 2}, {4, 1}}; // (Hq, Hkv): ratios 1, 2, 4
static const ae_gate_kind k_gates[3] = {AE_GATE_NONE, AE_GATE_ELEMENTWISE, AE_GATE_HEAD};

// The training forward against the double reference, for every head ratio, gate, sinks and
// window; ae_gswa_forward_batch against the training forward.
static void test_train_forward_reference(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 11);
    int D = 16, hd = 8, B = 2, T = 11, windows[] = {0, 1, 4};
    double worst = 0;
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 3; gi++)
            for (int sk = 0; sk < 2; sk++)
                for (int wi = 0; wi < 3; wi++) {
                    ae_gswa_dims d = dims(D, k_heads[hi][0], k_heads[hi][1], hd, windows[wi],
                                          k_gates[gi], sk);
                    ae_gswa m;
                    make_module(&m, &d, 0.3f, &r);
                    float *x = ae_alloc_f32((size_t)B * T * D), *y = ae_alloc_f32((size_t)B * T * D);
                    double *yr = calloc((size_t)T * D, sizeof(double));
                    ae_test_fill_normal(x, (size_t)B * T * D, 1.0f, &r);
                    ae_gswa_acts *acts = NULL;
                    assert_int_equal(
                        ae_gswa_train_forward(be, &m, ae_host_f32(x), B, T, ae_host_f32(y), &acts),
                        AE_OK);
                    for (int b = 0; b < B; b++) {
                        ref_forward(&m, x + (size_t)b * T * D, T, yr);
                        for (int i = 0; i < T * D; i++) {
                            double e = fabs(yr[i] - y[(size_t)b * T * D + i]) / (1 + fabs(yr[i]));
                            if (e > worst) worst = e;
                            assert_true(e < 1e-4);
                        }
                    }
                    // the forward-only form: the same ops on the cpu, so the same bits
                    float *yb = ae_alloc_f32((size_t)B * T * D);
                    assert_int_equal(
                        ae_gswa_forward_batch(be, &m, ae_host_f32(x), B, T, ae_host_f32(yb)),
                        AE_OK);
                    assert_memory_equal(yb, y, sizeof(float) * (size_t)B * T * D);
                    ae_free_aligned(yb);
                    ae_gswa_acts_free(acts);
                    ae_free_aligned(x);
                    ae_free_aligned(y);
                    free(yr);
                    ae_gswa_free(&m);
                }
    printf("train forward vs double reference: max rel err %.2e\n", worst);
}

// Runs the cached forward over x (N, D) with prefill chunks of the given sizes (cycled) and
// returns the largest |difference| against y_full (N, D).
static double decode_diff(const ae_backend *be, const ae_gswa *m, const float *x, int N,
                          const int *sizes, int nsizes, const float *y_full) {
    int D = m->d.D;
    ae_gswa_cache c;
    assert_int_equal(ae_gswa_cache_init(&c, &m->d, N, be), AE_OK);
    assert_int_equal(c.ring, m->d.window > 0);
    assert_int_equal(c.rows, m->d.window > 0 ? m->d.window : N);
    float *y = ae_alloc_f32((size_t)N * D);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)N);
    for (int i = 0; i < N; i++) pos[i] = i;
    for (int p = 0, s = 0; p < N; s++) {
        int C = sizes[s % nsizes];
        if (C > N - p) C = N - p;
        assert_int_equal(ae_gswa_forward(be, m, ae_host_f32(x + (size_t)p * D), C, p,
                                         ae_host_i32(pos + p), &c, ae_host_f32(y + (size_t)p * D)),
                         AE_OK);
        p += C;
    }
    double worst = 0;
    for (size_t i = 0; i < (size_t)N * D; i++) {
        double e = fabs((double)y[i] - y_full[i]);
        if (e > worst) worst = e;
    }
    ae_free_aligned(y);
    free(pos);
    ae_gswa_cache_free(&c);
    return worst;
}

static void test_decode_matches_masked(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 12);
    int D = 16, hd = 8, windows[] = {0, 1, 3, 5, 8};
    double worst = 0;
    int runs = 0;
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 3; gi++)
            for (int sk = 0; sk < 2; sk++)
                for (int wi = 0; wi < 5; wi++) {
                    int W = windows[wi];
                    ae_gswa_dims d = dims(D, k_heads[hi][0], k_heads[hi][1], hd, W, k_gates[gi], sk);
                    ae_gswa m;
                    make_module(&m, &d, 0.3f, &r);
                    int lens[] = {W > 1 ? W - 1 : 2, W, 2 * W + 7, 23};
                    for (int li = 0; li < 4; li++) {
                        int N = lens[li] > 0 ? lens[li] : 1;
                        float *x = ae_alloc_f32((size_t)N * D), *yf = ae_alloc_f32((size_t)N * D);
                        ae_test_fill_normal(x, (size_t)N * D, 1.0f, &r);
                        ae_gswa_acts *acts = NULL;
                        assert_int_equal(ae_gswa_train_forward(be, &m, ae_host_f32(x), 1, N,
                                                               ae_host_f32(yf), &acts),
                                         AE_OK);
                        ae_gswa_acts_free(acts);
                        // token by token; equal chunks of 2, 3, W, W+1, 2W+1; mixed; all at once
                        int one[] = {1}, two[] = {2}, three[] = {3}, w0[] = {W > 0 ? W : 4};
                        int w1[] = {W + 1}, w2[] = {2 * W + 1}, mix[] = {3, 1, W + 2, 1, 2}, all[] = {N};
                        const int *sched[] = {one, two, three, w0, w1, w2, mix, all};
                        int ns[] = {1, 1, 1, 1, 1, 1, 5, 1};
                        for (int s = 0; s < 8; s++) {
                            double e = decode_diff(be, &m, x, N, sched[s], ns[s], yf);
                            if (e > worst) worst = e;
                            if (e > 2e-5)
                                fail_msg("Hq %d Hkv %d gate %d sinks %d W %d N %d sched %d: %.3e",
                                         d.Hq, d.Hkv, (int)d.gate, sk, W, N, s, e);
                            runs++;
                        }
                        ae_free_aligned(x);
                        ae_free_aligned(yf);
                    }
                    ae_gswa_free(&m);
                }
    printf("decode/prefill (%d schedules) vs masked full: max abs err %.2e\n", runs, worst);
}

// A prefill longer than the staging chunk on a ring (AE_GSWA_PREFILL_CHUNK 512 here: 1100
// tokens are three chunks, the last partial), then a few decode steps.
static void test_long_prefill(void **state) {
    (void)state;
    assert_int_equal(setenv("AE_GSWA_PREFILL_CHUNK", "512", 1), 0);
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 13);
    int D = 8, N = 1200;
    ae_gswa_dims d = dims(D, 2, 1, 4, 6, AE_GATE_HEAD, 1);
    ae_gswa m;
    make_module(&m, &d, 0.4f, &r);
    float *x = ae_alloc_f32((size_t)N * D), *yf = ae_alloc_f32((size_t)N * D);
    ae_test_fill_normal(x, (size_t)N * D, 1.0f, &r);
    ae_gswa_acts *acts = NULL;
    assert_int_equal(ae_gswa_train_forward(be, &m, ae_host_f32(x), 1, N, ae_host_f32(yf), &acts),
                     AE_OK);
    ae_gswa_acts_free(acts);
    int sched[] = {1100, 1, 1, 1, 97};
    double e = decode_diff(be, &m, x, N, sched, 5, yf);
    assert_int_equal(unsetenv("AE_GSWA_PREFILL_CHUNK"), 0);
    printf("prefill 1100 + decode, W 6, chunks of 512: max abs err %.2e\n", e);
    assert_true(e < 2e-5);
    ae_free_aligned(x);
    ae_free_aligned(yf);
    ae_gswa_free(&m);
}

static void test_bad_args(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_gswa m;
    ae_gswa_dims d = dims(8, 3, 2, 4, 0, AE_GATE_NONE, 0);
    assert_int_equal(ae_gswa_init(&m, &d, be), AE_ERR_ARG); // Hq not a multiple of Hkv
    d = dims(8, 2, 1, 4, 0, AE_GATE_NONE, 0);
    assert_int_equal(ae_gswa_init(&m, &d, be), AE_OK);
    ae_gswa_cache c;
    assert_int_equal(ae_gswa_cache_init(&c, &d, 4, be), AE_OK);
    float x[5 * 8] = {0}, y[5 * 8];
    int32_t pos[5] = {0, 1, 2, 3, 4};
    // past capacity
    assert_int_equal(ae_gswa_forward(be, &m, ae_host_f32(x), 5, 0, ae_host_i32(pos), &c,
                                     ae_host_f32(y)),
                     AE_ERR_ARG);
    ae_gswa_dims d2 = dims(8, 2, 1, 4, 3, AE_GATE_NONE, 0);
    ae_gswa_cache c2;
    assert_int_equal(ae_gswa_cache_init(&c2, &d2, 4, be), AE_OK);
    // ring vs full layer
    assert_int_equal(ae_gswa_forward(be, &m, ae_host_f32(x), 1, 0, ae_host_i32(pos), &c2,
                                     ae_host_f32(y)),
                     AE_ERR_ARG);
    ae_gswa_cache_free(&c);
    ae_gswa_cache_free(&c2);
    ae_gswa_free(&m);
}


// ---- backward vs finite differences ----------------------------------------------------------

// loss = Σ y ⊙ R over the batch, accumulated in double (for util/fd.h).
typedef struct {
    const ae_backend *be;
    const ae_gswa *m;
    const float *x; // (B, T, D)
    int B, T;
    const float *R; // (B, T, D)
    float *y;       // (B, T, D) scratch
} fd_case;

static double fd_loss(void *ctx) {
    const fd_case *c = ctx;
    ae_gswa_acts *acts = NULL;
    assert_int_equal(ae_gswa_train_forward(c->be, c->m, ae_host_f32(c->x), c->B, c->T,
                                           ae_host_f32(c->y), &acts),
                     AE_OK);
    ae_gswa_acts_free(acts);
    double s = 0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->m->d.D; i++) s += (double)c->y[i] * c->R[i];
    return s;
}

// Checks up to `nsample` random elements of p (analytic gradient g) by central differences;
// returns the relative error norm |fd - g| / |g| over the sampled elements.
static double fd_check(const ae_backend *be, const ae_gswa *m, float *p, const float *g, size_t n,
                       const float *x, int B, int T, const float *R, float *y, ae_rng *r,
                       const char *what) {
    const float eps = 1e-2f;
    const size_t nsample = 24;
    fd_case fc = {be, m, x, B, T, R, y};
    double num = 0, den = 0;
    for (size_t c = 0; c < (n < nsample ? n : nsample); c++) {
        int64_t i = n <= nsample ? (int64_t)c : (int64_t)(ae_rng_u64(r) % n);
        ae_fd_dir d = ae_fd_element(p, &i);
        double fd = ae_fd_central(fd_loss, &fc, &d, eps);
        if (fabs(fd - g[i]) > 2e-3 + 1e-2 * fabs(g[i]))
            fail_msg("%s[%lld]: analytic %.6f, finite difference %.6f", what, (long long)i, g[i], fd);
        num += (fd - g[i]) * (fd - g[i]);
        den += (double)g[i] * g[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_backward_fd(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 14);
    int D = 12, hd = 8, B = 2, W = 4, Ts[] = {3, 9};
    ae_gate_kind gates[] = {AE_GATE_ELEMENTWISE, AE_GATE_HEAD, AE_GATE_NONE};
    double worst = 0;
    for (int hi = 0; hi < 3; hi++)
        for (int gi = 0; gi < 3; gi++)
            for (int sk = 0; sk < 2; sk++)
                for (int ti = 0; ti < 2; ti++) {
                    if (gates[gi] == AE_GATE_NONE && (sk || hi)) continue; // one no-gate case
                    int T = Ts[ti];
                    ae_gswa_dims d = dims(D, k_heads[hi][0], k_heads[hi][1], hd, W, gates[gi], sk);
                    ae_gswa m, grad;
                    make_module(&m, &d, 0.3f, &r);
                    assert_int_equal(ae_gswa_init(&grad, &d, be), AE_OK);
                    size_t n = (size_t)B * T * D;
                    float *x = ae_alloc_f32(n), *y = ae_alloc_f32(n), *R = ae_alloc_f32(n);
                    float *dx = ae_alloc_f32(n), *dx2 = ae_alloc_f32(n);
                    ae_test_fill_normal(x, n, 1.0f, &r);
                    ae_test_fill_normal(R, n, 1.0f, &r);
                    ae_gswa_acts *acts = NULL;
                    assert_int_equal(
                        ae_gswa_train_forward(be, &m, ae_host_f32(x), B, T, ae_host_f32(y), &acts),
                        AE_OK);
                    assert_int_equal(
                        ae_gswa_backward(be, &m, acts, ae_host_f32(R), ae_host_f32(dx), &grad),
                        AE_OK);
                    ae_param_list pl = ae_gswa_params(&m), gl = ae_gswa_params(&grad);
                    for (int k = 0; k < pl.n; k++) {
                        size_t cnt = (size_t)pl.p[k].shape[0] * (pl.p[k].ndim == 2 ? pl.p[k].shape[1] : 1);
                        double e = fd_check(be, &m, ae_f32(pl.p[k].data), ae_f32(gl.p[k].data), cnt,
                                            x, B, T, R, y, &r, pl.p[k].name);
                        if (e > worst) worst = e;
                        assert_true(e < 1e-2);
                    }
                    double e = fd_check(be, &m, x, dx, n, x, B, T, R, y, &r, "dx");
                    if (e > worst) worst = e;
                    assert_true(e < 1e-2);
                    // A second backward accumulates parameter gradients and overwrites dx.
                    float *g1 = ae_alloc_f32((size_t)gl.p[0].shape[0] * gl.p[0].shape[1]);
                    memcpy(g1, ae_f32(gl.p[0].data),
                           sizeof(float) * gl.p[0].shape[0] * gl.p[0].shape[1]);
                    ae_test_fill_normal(dx2, n, 1.0f, &r);
                    assert_int_equal(
                        ae_gswa_backward(be, &m, acts, ae_host_f32(R), ae_host_f32(dx2), &grad),
                        AE_OK);
                    assert_memory_equal(dx, dx2, sizeof(float) * n);
                    for (int64_t i = 0; i < gl.p[0].shape[0] * gl.p[0].shape[1]; i++)
                        assert_true(fabsf(ae_f32(gl.p[0].data)[i] - 2 * g1[i]) <=
                                    1e-5f * (1 + fabsf(g1[i])));
                    assert_int_equal(
                        ae_gswa_backward(be, &m, acts, ae_host_f32(R), ae_ptr_null(), &grad),
                        AE_OK);
                    ae_gswa_acts_free(acts);
                    ae_free_aligned(g1);
                    ae_free_aligned(x);
                    ae_free_aligned(y);
                    ae_free_aligned(R);
                    ae_free_aligned(dx);
                    ae_free_aligned(dx2);
                    ae_gswa_free(&m);
                    ae_gswa_free(&grad);
                }
    printf("backward vs finite differences: max relative error norm %.2e\n", worst);
}

// ---- teacher init ----------------------------------------------------------------------------

static float *load(const ae_st_set *s, const char *name, int64_t r0, int64_t r1) {
    int64_t shape[2] = {r0, r1};
    float *p = ae_alloc_f32((size_t)r0 * (r1 > 0 ? r1 : 1));
    char full[128];
    snprintf(full, sizeof full, "model.layers.0.%s", name);
    ae_status st = ae_st_load_f32(s, full, r1 > 0 ? 2 : 1, shape, p);
    if (st != AE_OK) fail_msg("%s", ae_last_error());
    return p;
}

static void test_teacher_init(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_st_set *s = NULL;
    assert_int_equal(ae_st_open_dir(ae_test_src("models/qwen3-micro"), &s), AE_OK);
    int D = 128, Hq = 4, Hkv = 2, hd = 32, T = 13, qd = Hq * hd, kvd = Hkv * hd;
    double theta = 1000000.0;
    float eps = 1e-6f;
    float *wq = load(s, "self_attn.q_proj.weight", qd, D), *wk = load(s, "self_attn.k_proj.weight", kvd, D);
    float *wv = load(s, "self_attn.v_proj.weight", kvd, D), *wo = load(s, "self_attn.o_proj.weight", D, qd);
    float *qn = load(s, "self_attn.q_norm.weight", hd, 0), *kn = load(s, "self_attn.k_norm.weight", hd, 0);
    float *ln = load(s, "input_layernorm.weight", D, 0);
    ae_st_close(s);

    ae_rng r;
    ae_rng_seed(&r, 15);
    float *x = ae_alloc_f32((size_t)T * D);                      // (T, D) normalised input
    ae_test_fill_normal(x, (size_t)T * D, 1.0f, &r);
    be->rmsnorm(be, ae_host_f32(x), ae_host_f32(x), ae_host_f32(ln), T, D, D, eps);
    // The teacher's attention, written out with the ops.
    float *q = ae_alloc_f32((size_t)T * qd), *k = ae_alloc_f32((size_t)T * kvd);
    float *v = ae_alloc_f32((size_t)T * kvd), *a = ae_alloc_f32((size_t)T * qd);
    float *yt = ae_alloc_f32((size_t)T * D), *y = ae_alloc_f32((size_t)T * D);
    int32_t pos[13];
    for (int t = 0; t < T; t++) pos[t] = t;
    ae_matmul(be, ae_host_f32(q), ae_host_f32(x), ae_host_f32(wq), T, D, qd);
    ae_matmul(be, ae_host_f32(k), ae_host_f32(x), ae_host_f32(wk), T, D, kvd);
    ae_matmul(be, ae_host_f32(v), ae_host_f32(x), ae_host_f32(wv), T, D, kvd);
    be->rmsnorm(be, ae_host_f32(q), ae_host_f32(q), ae_host_f32(qn), T * Hq, hd, hd, eps);
    be->rmsnorm(be, ae_host_f32(k), ae_host_f32(k), ae_host_f32(kn), T * Hkv, hd, hd, eps);
    be->rope(be, ae_host_f32(q), ae_host_i32(pos), T, Hq, hd, hd, theta, AE_ROPE_HALF);
    be->rope(be, ae_host_f32(k), ae_host_i32(pos), T, Hkv, hd, hd, theta, AE_ROPE_HALF);
    ae_attn_args aa =
        ae_attn_dense(T, 0, Hq, Hkv, hd, hd, 0, 1.0f / sqrtf((float)hd), ae_ptr_null());
    be->attention(be, &aa, ae_host_f32(a), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    ae_matmul(be, ae_host_f32(yt), ae_host_f32(a), ae_host_f32(wo), T, qd, D);
    // The teacher's module: the same tensors, no gate, no sinks, full attention.
    ae_gswa_dims td = {.D = D, .Hq = Hq, .Hkv = Hkv, .hd = hd, .window = 0,
                       .gate = AE_GATE_NONE, .sinks = 0, .rope_theta = theta, .eps = eps};
    ae_gswa teacher = {.d = td, .be = be, .wq = ae_host_f32(wq), .wk = ae_host_f32(wk),
                       .wv = ae_host_f32(wv), .wo = ae_host_f32(wo), .q_norm = ae_host_f32(qn),
                       .k_norm = ae_host_f32(kn), .wg = ae_ptr_null(), .sinks = ae_ptr_null()};

    int windows[] = {0, T, T + 5};
    for (int gi = 0; gi < 3; gi++)
        for (int sk = 0; sk < 2; sk++)
            for (int wi = 0; wi < 3; wi++) {
                ae_gswa_dims d = {.D = D, .Hq = Hq, .Hkv = Hkv, .hd = hd, .window = windows[wi],
                                  .gate = k_gates[gi], .sinks = sk, .rope_theta = theta, .eps = eps};
                ae_gswa m;
                assert_int_equal(ae_gswa_init(&m, &d, be), AE_OK);
                assert_int_equal(ae_gswa_init_from_teacher(&m, &teacher), AE_OK);
                if (sk) assert_true(ae_f32(m.sinks)[0] == AE_GSWA_SINK_INIT);
                for (int i = 0; i < D * qd; i++)
                    assert_true(ae_f32(m.wo)[i] == (ae_ptr_is_null(m.wg) ? 1 : 2) * wo[i]);
                ae_gswa_acts *acts = NULL;
                assert_int_equal(
                    ae_gswa_train_forward(be, &m, ae_host_f32(x), 1, T, ae_host_f32(y), &acts),
                    AE_OK);
                ae_gswa_acts_free(acts);
                double e = 0;
                for (int i = 0; i < T * D; i++) e = fmax(e, fabs((double)y[i] - yt[i]));
                if (!sk) assert_memory_equal(y, yt, sizeof(float) * T * D); // bit for bit
                assert_true(e <= 1e-6);
                // The cached path: prefill 5, then token by token.
                ae_gswa_cache c;
                assert_int_equal(ae_gswa_cache_init(&c, &d, T, be), AE_OK);
                assert_int_equal(ae_gswa_forward(be, &m, ae_host_f32(x), 5, 0, ae_host_i32(pos), &c,
                                                 ae_host_f32(y)),
                                 AE_OK);
                for (int t = 5; t < T; t++)
                    assert_int_equal(ae_gswa_forward(be, &m, ae_host_f32(x + t * D), 1, t,
                                                     ae_host_i32(pos + t), &c,
                                                     ae_host_f32(y + t * D)),
                                     AE_OK);
                double ed = 0;
                for (int i = 0; i < T * D; i++) ed = fmax(ed, fabs((double)y[i] - yt[i]));
                assert_true(ed <= 1e-5);
                printf("teacher init gate %d sinks %d W %d: train max diff %.2e, decode %.2e\n",
                       (int)d.gate, sk, d.window, e, ed);
                ae_gswa_cache_free(&c);
                ae_gswa_free(&m);
            }
    float *ps[] = {wq, wk, wv, wo, qn, kn, ln, x, q, k, v, a, yt, y};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) ae_free_aligned(ps[i]);
}

// ---- parameter list --------------------------------------------------------------------------

static void test_params(void **state) {
    (void)state;
    for (int gi = 0; gi < 3; gi++)
        for (int sk = 0; sk < 2; sk++) {
            ae_gswa_dims d = dims(24, 6, 2, 8, 16, k_gates[gi], sk);
            ae_gswa m;
            assert_int_equal(ae_gswa_init(&m, &d, ae_backend_cpu()), AE_OK);
            ae_param_list l = ae_gswa_params(&m);
            const char *names[] = {"q_proj.weight", "k_proj.weight", "v_proj.weight",
                                   "o_proj.weight", "q_norm.weight", "k_norm.weight"};
            int64_t shapes[][2] = {{48, 24}, {16, 24}, {16, 24}, {24, 48}, {8, 0}, {8, 0}};
            ae_ptr data[] = {m.wq, m.wk, m.wv, m.wo, m.q_norm, m.k_norm};
            assert_int_equal(l.n, 6 + (gi != 0) + sk);
            for (int i = 0; i < 6; i++) {
                assert_string_equal(l.p[i].name, names[i]);
                assert_int_equal(l.p[i].ndim, shapes[i][1] ? 2 : 1);
                assert_int_equal(l.p[i].shape[0], shapes[i][0]);
                if (shapes[i][1]) assert_int_equal(l.p[i].shape[1], shapes[i][1]);
                assert_ptr_equal(l.p[i].data.data, data[i].data);
                assert_int_equal(l.p[i].decay, i < 4);
            }
            int i = 6;
            if (gi != 0) {
                assert_string_equal(l.p[i].name, "g_proj.weight");
                assert_int_equal(l.p[i].ndim, 2);
                assert_int_equal(l.p[i].shape[0], k_gates[gi] == AE_GATE_ELEMENTWISE ? 48 : 6);
                assert_int_equal(l.p[i].shape[1], 24);
                assert_ptr_equal(l.p[i].data.data, m.wg.data);
                assert_int_equal(l.p[i].decay, 0); // no weight decay on gates
                i++;
            } else {
                assert_null(m.wg.data);
            }
            if (sk) {
                assert_string_equal(l.p[i].name, "sinks");
                assert_int_equal(l.p[i].ndim, 1);
                assert_int_equal(l.p[i].shape[0], 6);
                assert_int_equal(l.p[i].decay, 0);
                assert_ptr_equal(l.p[i].data.data, m.sinks.data);
            } else {
                assert_null(m.sinks.data);
            }
            ae_rng r;
            ae_rng_seed(&r, 16);
            assert_int_equal(ae_gswa_init_random(&m, 0.02f, &r), AE_OK);
            assert_true(ae_f32(m.q_norm)[3] == 1.0f && ae_f32(m.k_norm)[5] == 1.0f);
            if (sk) assert_true(ae_f32(m.sinks)[2] == 0.0f);
            const float *wq = ae_f32(m.wq);
            double ss = 0;
            for (int j = 0; j < 48 * 24; j++) ss += (double)wq[j] * wq[j];
            assert_true(fabs(sqrt(ss / (48 * 24)) - 0.02) < 0.002);
            ae_gswa_free(&m);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_forward_reference),
        cmocka_unit_test(test_decode_matches_masked),
        cmocka_unit_test(test_long_prefill),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_backward_fd),
        cmocka_unit_test(test_teacher_init),
        cmocka_unit_test(test_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
