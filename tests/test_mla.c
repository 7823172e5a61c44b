// MLA module: both forward forms == a naive double reference of the formulas, absorbed ==
// materialised (prefill and latent-cache decode), decode == full
// recompute, interleaved RoPE's relative-position property on the module's layout, backward vs
// finite differences for every parameter and dx, parameter names/shapes, argument errors.
// Teacher initialisation and the SVD: test_mla_init.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "model/attn_mla.h"
#include "util/fd.h"
#include "util/testutil.h"

// {D, H, q_lora, R, dn, dr, dv}: q_lora on/off, several H, R (incl. R > D), dn (incl. 0), dr, dv
static const int k_shapes[][7] = {
    {16, 2, 0, 8, 4, 4, 6},  {24, 3, 12, 10, 6, 2, 4}, {32, 4, 0, 16, 0, 8, 8},
    {20, 1, 8, 5, 8, 6, 3},  {16, 4, 6, 24, 2, 4, 5},  {12, 2, 5, 3, 3, 2, 7},
};
#define N_SHAPES (sizeof k_shapes / sizeof *k_shapes)

static ae_mla_dims dims_of(const int *s) {
    ae_mla_dims d = {.D = s[0], .H = s[1], .q_lora_rank = s[2], .kv_lora_rank = s[3],
                     .dn = s[4], .dr = s[5], .dv = s[6], .rope_theta = 10000.0, .eps = 1e-6f};
    return d;
}

// Random module; norm weights perturbed away from 1 so their gradients and effects show.
static void make_mla(ae_mla *m, const ae_mla_dims *d, uint64_t seed) {
    assert_int_equal(ae_mla_init(m, d, ae_backend_cpu()), AE_OK);
    ae_rng r;
    ae_rng_seed(&r, seed);
    assert_int_equal(ae_mla_init_random(m, 0.5f / sqrtf((float)d->D) * 2.0f, &r), AE_OK);
    if (!ae_ptr_is_null(m->q_a_norm))
        for (int i = 0; i < d->q_lora_rank; i++)
            ae_f32(m->q_a_norm)[i] = 1.0f + 0.3f * ae_rng_normal(&r);
    for (int i = 0; i < d->kv_lora_rank; i++)
        ae_f32(m->kv_a_norm)[i] = 1.0f + 0.3f * ae_rng_normal(&r);
}

// The positions argument of a forward over T tokens at pos0..pos0+T-1 (an I32 host array).
#define MAX_POS 64
static int32_t k_pos[MAX_POS];
static ae_ptr positions(int pos0, int T) {
    assert_true(pos0 >= 0 && pos0 + T <= MAX_POS);
    for (int i = 0; i < MAX_POS; i++) k_pos[i] = i;
    return ae_host_i32(k_pos + pos0);
}

// ---- independent reference: the formulas of attn_mla.h, naively, in double ----

// In place: v = rmsnorm(v) ⊙ w (util/ref.h's, with the module's float weights).   v, w: (n)
static void ref_rmsnorm(double *v, int n, const float *w, double eps) {
    double *wd = ae_test_to_double(w, (size_t)n);
    ae_ref_rmsnorm(v, v, wd, 1, n, eps);
    free(wd);
}

static void ref_matvec(double *y, const float *w, const double *x, int N, int K) {
    for (int j = 0; j < N; j++) {
        double s = 0.0;
        for (int k = 0; k < K; k++) s += (double)w[(size_t)j * K + k] * x[k];
        y[j] = s;
    }
}

// y (T, D) for one sequence at positions 0..T-1.
static void ref_forward(const ae_mla *m, const float *x, int T, double *y) {
    const ae_mla_dims *d = &m->d;
    int D = d->D, H = d->H, R = d->kv_lora_rank, dn = d->dn, dr = d->dr, dv = d->dv;
    int dq = dn + dr, ql = d->q_lora_rank, dkv = dn + dv;
    double *q = calloc((size_t)T * H * dq, sizeof(double)), *k = calloc((size_t)T * H * dq, sizeof(double));
    double *kr = calloc((size_t)T * dr, sizeof(double)), *v = calloc((size_t)T * H * dv, sizeof(double));
    double *xd = calloc((size_t)D, sizeof(double)), *tmp = calloc((size_t)(ql + R + dr + 1), sizeof(double));
    double *kvb = calloc((size_t)H * dkv, sizeof(double)), *o = calloc((size_t)T * H * dv, sizeof(double));
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D; i++) xd[i] = x[(size_t)t * D + i];
        double *qt = q + (size_t)t * H * dq;
        if (ql == 0) {
            ref_matvec(qt, ae_f32(m->wq), xd, H * dq, D);
        } else {
            ref_matvec(tmp, ae_f32(m->wqa), xd, ql, D);
            ref_rmsnorm(tmp, ql, ae_f32(m->q_a_norm), d->eps);
            ref_matvec(qt, ae_f32(m->wqb), tmp, H * dq, ql);
        }
        for (int h = 0; h < H; h++)
            ae_ref_rope_head(qt + h * dq + dn, dr, t, d->rope_theta, AE_ROPE_INTERLEAVED);
        ref_matvec(tmp, ae_f32(m->wkva), xd, R + dr, D);
        ref_rmsnorm(tmp, R, ae_f32(m->kv_a_norm), d->eps);
        memcpy(kr + (size_t)t * dr, tmp + R, sizeof(double) * dr);
        ae_ref_rope_head(kr + (size_t)t * dr, dr, t, d->rope_theta, AE_ROPE_INTERLEAVED);
        ref_matvec(kvb, ae_f32(m->wkvb), tmp, H * dkv, R);
        for (int h = 0; h < H; h++) { // head h's key [k_nope | k_rope], k_rope shared by the heads
            double *kh = k + ((size_t)t * H + h) * dq;
            memcpy(kh, kvb + h * dkv, sizeof(double) * dn);
            memcpy(kh + dn, kr + (size_t)t * dr, sizeof(double) * dr);
            memcpy(v + ((size_t)t * H + h) * dv, kvb + h * dkv + dn, sizeof(double) * dv);
        }
    }
    ae_test_attn args = {T, 0, H, H, dq, dv, (size_t)H * dq, (size_t)H * dv, 0, 0,
                         1.0 / sqrt((double)dq), NULL, NULL};
    ae_test_attention(o, &args, q, k, v);
    for (int t = 0; t < T; t++)
        ref_matvec(y + (size_t)t * D, ae_f32(m->wo), o + (size_t)t * H * dv, D, H * dv);
    free(q), free(k), free(kr), free(v), free(xd), free(tmp), free(kvb), free(o);
}

static void test_matches_reference(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    for (size_t s = 0; s < N_SHAPES; s++) {
        ae_mla_dims d = dims_of(k_shapes[s]);
        ae_mla m;
        make_mla(&m, &d, 500 + s);
        int T = 8;
        ae_rng r;
        ae_rng_seed(&r, 600 + s);
        float *x = ae_alloc_f32((size_t)T * d.D), *y = ae_alloc_f32((size_t)T * d.D);
        float *c = ae_alloc_f32((size_t)T * ae_mla_cache_dim(&d)), *yr = ae_alloc_f32((size_t)T * d.D);
        double *ref = calloc((size_t)T * d.D, sizeof(double));
        ae_test_fill_normal(x, (size_t)T * d.D, 1.0f, &r);
        ref_forward(&m, x, T, ref);
        for (size_t i = 0; i < (size_t)T * d.D; i++) yr[i] = (float)ref[i];
        assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x), T, 0,
                                                     positions(0, T), ae_host_f32(c),
                                                     ae_host_f32(y)),
                         AE_OK);
        assert_true(ae_test_rel_err(y, yr, (size_t)T * d.D) < 1e-5);
        assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x), T, 0, positions(0, T),
                                                 ae_host_f32(c), ae_host_f32(y)),
                         AE_OK);
        assert_true(ae_test_rel_err(y, yr, (size_t)T * d.D) < 1e-5);
        free(ref);
        ae_free_aligned(x), ae_free_aligned(y), ae_free_aligned(c), ae_free_aligned(yr);
        ae_mla_free(&m);
    }
}

static void test_absorbed_equals_materialized(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    for (size_t s = 0; s < N_SHAPES; s++) {
        ae_mla_dims d = dims_of(k_shapes[s]);
        ae_mla m;
        make_mla(&m, &d, 100 + s);
        int T0 = 7, T1 = 4, Tt = T0 + T1, Cd = ae_mla_cache_dim(&d);
        assert_int_equal(Cd, d.kv_lora_rank + d.dr);
        ae_rng r;
        ae_rng_seed(&r, 200 + s);
        float *x = ae_alloc_f32((size_t)Tt * d.D);             // (Tt, D)
        float *cm = ae_alloc_f32((size_t)Tt * Cd), *ca = ae_alloc_f32((size_t)Tt * Cd); // caches
        float *ym = ae_alloc_f32((size_t)Tt * d.D), *ya = ae_alloc_f32((size_t)Tt * d.D);
        ae_test_fill_normal(x, (size_t)Tt * d.D, 1.0f, &r);
        // prefill T0 tokens in both forms
        assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x), T0, 0,
                                                     positions(0, T0), ae_host_f32(cm),
                                                     ae_host_f32(ym)),
                         AE_OK);
        assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x), T0, 0, positions(0, T0),
                                                 ae_host_f32(ca), ae_host_f32(ya)),
                         AE_OK);
        double e_pre = ae_test_rel_err(ya, ym, (size_t)T0 * d.D);
        // then decode one token at a time, each form on its own latent cache
        for (int t = T0; t < Tt; t++) {
            const float *xt = x + (size_t)t * d.D;
            assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(xt), 1, t,
                                                         positions(t, 1), ae_host_f32(cm),
                                                         ae_host_f32(ym + (size_t)t * d.D)),
                             AE_OK);
            assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(xt), 1, t,
                                                     positions(t, 1), ae_host_f32(ca),
                                                     ae_host_f32(ya + (size_t)t * d.D)),
                             AE_OK);
        }
        double e_dec = ae_test_rel_err(ya + (size_t)T0 * d.D, ym + (size_t)T0 * d.D, (size_t)T1 * d.D);
        assert_memory_equal(cm, ca, sizeof(float) * (size_t)Tt * Cd); // same cache contents
        printf("shape %zu: absorbed vs materialised rel err prefill %.2e decode %.2e\n", s, e_pre, e_dec);
        assert_true(e_pre < 1e-5);
        assert_true(e_dec < 1e-5);
        // a multi-token chunk after a prefill (absorbed, T > 1, pos0 > 0) agrees too
        float *y2 = ae_alloc_f32((size_t)Tt * d.D);
        assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x), T0, 0, positions(0, T0),
                                                 ae_host_f32(ca), ae_host_f32(y2)),
                         AE_OK);
        assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x + (size_t)T0 * d.D), T1,
                                                 T0, positions(T0, T1), ae_host_f32(ca),
                                                 ae_host_f32(y2 + (size_t)T0 * d.D)),
                         AE_OK);
        assert_true(ae_test_rel_err(y2, ym, (size_t)Tt * d.D) < 1e-5);
        ae_free_aligned(y2);
        ae_free_aligned(x);
        ae_free_aligned(cm);
        ae_free_aligned(ca);
        ae_free_aligned(ym);
        ae_free_aligned(ya);
        ae_mla_free(&m);
    }
}

// Token-by-token decode on the latent cache == one full recompute of the whole sequence; and
// the result depends on the earlier tokens (the cache is really read).
static void test_decode_equals_full(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    for (size_t s = 0; s < N_SHAPES; s++) {
        ae_mla_dims d = dims_of(k_shapes[s]);
        ae_mla m;
        make_mla(&m, &d, 300 + s);
        int T = 9, Cd = ae_mla_cache_dim(&d);
        ae_rng r;
        ae_rng_seed(&r, 400 + s);
        float *x = ae_alloc_f32((size_t)T * d.D), *c1 = ae_alloc_f32((size_t)T * Cd);
        float *c2 = ae_alloc_f32((size_t)T * Cd), *yf = ae_alloc_f32((size_t)T * d.D);
        float *yd = ae_alloc_f32((size_t)T * d.D);
        ae_test_fill_normal(x, (size_t)T * d.D, 1.0f, &r);
        assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x), T, 0,
                                                     positions(0, T), ae_host_f32(c1),
                                                     ae_host_f32(yf)),
                         AE_OK);
        for (int t = 0; t < T; t++)
            assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x + (size_t)t * d.D), 1,
                                                     t, positions(t, 1), ae_host_f32(c2),
                                                     ae_host_f32(yd + (size_t)t * d.D)),
                             AE_OK);
        assert_true(ae_test_rel_err(yd, yf, (size_t)T * d.D) < 1e-5);
        assert_true(ae_test_rel_err(c2, c1, (size_t)T * Cd) < 1e-6);
        // changing token 0 changes the last output: attention over the cache is live
        x[0] += 1.0f;
        assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x), T, 0,
                                                     positions(0, T), ae_host_f32(c1),
                                                     ae_host_f32(yd)),
                         AE_OK);
        assert_true(ae_test_rel_err(yd + (size_t)(T - 1) * d.D, yf + (size_t)(T - 1) * d.D, (size_t)d.D) > 1e-4);
        ae_free_aligned(x);
        ae_free_aligned(c1);
        ae_free_aligned(c2);
        ae_free_aligned(yf);
        ae_free_aligned(yd);
        ae_mla_free(&m);
    }
}

// Interleaved RoPE on the module's layouts: the q_rope slice of a query (stride dn+dr, offset dn)
// and the kr slice of a cache row (stride R+dr, offset R). q·k of a query at position p and a key
// at position s depends only on p - s; the non-rope parts are untouched.
static void test_rope_relative_position(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    int H = 3, dn = 5, dr = 8, R = 6, dq = dn + dr, Cd = R + dr;
    ae_rng r;
    ae_rng_seed(&r, 7);
    float q0[3 * 13], k0[14];
    ae_test_fill_normal(q0, sizeof q0 / sizeof *q0, 1.0f, &r);
    ae_test_fill_normal(k0, sizeof k0 / sizeof *k0, 1.0f, &r);
    int32_t pairs[][2] = {{5, 2}, {103, 100}, {3, 0}, {1003, 1000}, {40, 37}};
    double ref[3] = {0, 0, 0};
    for (size_t c = 0; c < sizeof pairs / sizeof *pairs; c++) {
        float q[3 * 13], k[14];
        memcpy(q, q0, sizeof q);
        memcpy(k, k0, sizeof k);
        be->rope(be, ae_host_f32(q + dn), ae_host_i32(&pairs[c][0]), 1, H, dq, dr, 10000.0,
                 AE_ROPE_INTERLEAVED);
        be->rope(be, ae_host_f32(k + R), ae_host_i32(&pairs[c][1]), 1, 1, Cd, dr, 10000.0,
                 AE_ROPE_INTERLEAVED);
        assert_memory_equal(k, k0, sizeof(float) * R);
        for (int h = 0; h < H; h++) {
            assert_memory_equal(q + h * dq, q0 + h * dq, sizeof(float) * dn);
            double dot = 0.0;
            for (int e = 0; e < dr; e++) dot += (double)q[h * dq + dn + e] * k[R + e];
            if (c == 0) ref[h] = dot;
            else assert_true(fabs(dot - ref[h]) < 1e-4 * (1.0 + fabs(ref[h])));
        }
    }
    // control: another offset gives another score, and the pairing is (2j, 2j+1)
    float q[3 * 13], k[14];
    memcpy(q, q0, sizeof q);
    memcpy(k, k0, sizeof k);
    int32_t p = 4, s0 = 0;
    be->rope(be, ae_host_f32(q + dn), ae_host_i32(&p), 1, H, dq, dr, 10000.0,
             AE_ROPE_INTERLEAVED);
    be->rope(be, ae_host_f32(k + R), ae_host_i32(&s0), 1, 1, Cd, dr, 10000.0,
             AE_ROPE_INTERLEAVED);
    double dot = 0.0;
    for (int e = 0; e < dr; e++) dot += (double)q[dn + e] * k[R + e];
    assert_true(fabs(dot - ref[0]) > 1e-3);
    double ang = 4.0 * 1.0; // pair 0: frequency 1
    assert_true(fabs(q[dn] - (q0[dn] * cos(ang) - q0[dn + 1] * sin(ang))) < 1e-5);
    assert_true(fabs(q[dn + 1] - (q0[dn + 1] * cos(ang) + q0[dn] * sin(ang))) < 1e-5);
}

// ---- backward vs finite differences ----

static int have_bwd(const ae_backend *be) {
    return be->gemm && be->rmsnorm_bwd && be->rope_bwd && be->attention_bwd;
}

// loss = Σ y ⊙ w, in double (for util/fd.h).
typedef struct {
    const ae_backend *be;
    const ae_mla *m;
    const float *x; // (B, T, D)
    int B, T;
    const float *w; // (B, T, D)
    float *y;       // (B, T, D) scratch
} fd_case;

static double loss_of(void *ctx) {
    const fd_case *c = ctx;
    ae_mla_acts *a = NULL;
    assert_int_equal(ae_mla_train_forward(c->be, c->m, ae_host_f32(c->x), c->B, c->T,
                                          ae_host_f32(c->y), &a),
                     AE_OK);
    ae_mla_acts_free(a);
    double L = 0.0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->m->d.D; i++) L += (double)c->y[i] * c->w[i];
    return L;
}

// Compares analytic and central-difference gradients on up to `ns` random elements of p (n).
// The error measure is ‖fd − an‖ / ‖fd‖ over the sample; also returns ‖fd‖.
static double fd_check(const ae_backend *be, const ae_mla *m, float *x, int B, int T,
                       const float *w, float *y, float *p, const float *an, size_t n, int ns,
                       ae_rng *r, double *fd_norm) {
    fd_case fc = {be, m, x, B, T, w, y};
    double num = 0.0, den = 0.0;
    int all = n <= (size_t)ns;
    for (int s = 0; s < (all ? (int)n : ns); s++) {
        int64_t i = all ? (int64_t)s : (int64_t)(ae_rng_u64(r) % n);
        ae_fd_dir d = ae_fd_element(p, &i);
        double fd = ae_fd_central(loss_of, &fc, &d, 1e-2f * fmaxf(1.0f, fabsf(p[i])));
        num += (fd - an[i]) * (fd - an[i]);
        den += fd * fd;
    }
    *fd_norm = sqrt(den);
    return sqrt(num / (den > 0 ? den : 1e-300));
}

static void run_grad_check(int q_lora) {
    const ae_backend *be = ae_backend_cpu();
    if (!have_bwd(be)) {
        printf("SKIP MLA backward: backend %s has no backward ops yet\n", be->name);
        return;
    }
    ae_mla_dims d = {.D = 12, .H = 3, .q_lora_rank = q_lora, .kv_lora_rank = 6, .dn = 4,
                     .dr = 4, .dv = 5, .rope_theta = 10000.0, .eps = 1e-6f};
    int B = 2, T = 5;
    size_t n = (size_t)B * T * d.D;
    ae_mla m, g;
    make_mla(&m, &d, 11 + (uint64_t)q_lora);
    assert_int_equal(ae_mla_init(&g, &d, be), AE_OK);
    ae_rng r;
    ae_rng_seed(&r, 12);
    float *x = ae_alloc_f32(n), *w = ae_alloc_f32(n), *y = ae_alloc_f32(n), *dx = ae_alloc_f32(n);
    ae_test_fill_normal(x, n, 1.0f, &r);
    ae_test_fill_normal(w, n, 1.0f, &r);
    ae_mla_acts *a = NULL;
    assert_int_equal(ae_mla_train_forward(be, &m, ae_host_f32(x), B, T, ae_host_f32(y), &a),
                     AE_OK);
    // the training forward equals the inference forward of each sequence
    float *yi = ae_alloc_f32((size_t)T * d.D), *cache = ae_alloc_f32((size_t)T * ae_mla_cache_dim(&d));
    for (int b = 0; b < B; b++) {
        assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x + (size_t)b * T * d.D),
                                                     T, 0, positions(0, T), ae_host_f32(cache),
                                                     ae_host_f32(yi)),
                         AE_OK);
        assert_true(ae_test_rel_err(yi, y + (size_t)b * T * d.D, (size_t)T * d.D) < 1e-6);
    }
    ae_free_aligned(yi);
    ae_free_aligned(cache);
    // accumulation: run backward twice into g, compare against half
    assert_int_equal(ae_mla_backward(be, &m, a, ae_host_f32(w), ae_host_f32(dx), &g), AE_OK);
    assert_int_equal(ae_mla_backward(be, &m, a, ae_host_f32(w), ae_host_f32(dx), &g), AE_OK);
    ae_mla_acts_free(a);
    ae_param_list pl = ae_mla_params(&m), gl = ae_mla_params(&g);
    for (int i = 0; i < gl.n; i++) {
        size_t cnt = (size_t)gl.p[i].shape[0] * (size_t)(gl.p[i].ndim == 2 ? gl.p[i].shape[1] : 1);
        for (size_t j = 0; j < cnt; j++) ae_f32(gl.p[i].data)[j] *= 0.5f;
    }
    for (int i = 0; i < pl.n; i++) {
        size_t cnt = (size_t)pl.p[i].shape[0] * (size_t)(pl.p[i].ndim == 2 ? pl.p[i].shape[1] : 1);
        double fdn, e = fd_check(be, &m, x, B, T, w, y, ae_f32(pl.p[i].data), ae_f32(gl.p[i].data),
                                 cnt, 40, &r, &fdn);
        printf("q_lora %d  %-28s rel err %.2e  (|fd| %.3g)\n", q_lora, pl.p[i].name, e, fdn);
        assert_true(fdn > 1e-2); // a gradient that is really there
        assert_true(e < 3e-3);
    }
    double fdn, e = fd_check(be, &m, x, B, T, w, y, x, dx, n, 40, &r, &fdn);
    printf("q_lora %d  %-28s rel err %.2e  (|fd| %.3g)\n", q_lora, "dx", e, fdn);
    assert_true(fdn > 1e-2);
    assert_true(e < 3e-3);
    ae_free_aligned(x);
    ae_free_aligned(w);
    ae_free_aligned(y);
    ae_free_aligned(dx);
    ae_mla_free(&m);
    ae_mla_free(&g);
}

static void test_backward_fd_plain_q(void **state) {
    (void)state;
    run_grad_check(0);
}

static void test_backward_fd_q_lora(void **state) {
    (void)state;
    run_grad_check(7);
}

static void test_params(void **state) {
    (void)state;
    ae_mla_dims d = {.D = 10, .H = 2, .q_lora_rank = 0, .kv_lora_rank = 4, .dn = 3, .dr = 2,
                     .dv = 6, .rope_theta = 1e6, .eps = 1e-6f};
    ae_mla m;
    assert_int_equal(ae_mla_init(&m, &d, ae_backend_cpu()), AE_OK);
    ae_param_list l = ae_mla_params(&m);
    assert_int_equal(l.n, 5);
    const char *names[] = {"q_proj.weight", "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight",
                           "kv_b_proj.weight", "o_proj.weight"};
    int64_t shapes[][2] = {{2 * 5, 10}, {4 + 2, 10}, {4, 0}, {2 * 9, 4}, {10, 12}};
    ae_ptr ptrs[] = {m.wq, m.wkva, m.kv_a_norm, m.wkvb, m.wo};
    for (int i = 0; i < l.n; i++) {
        assert_string_equal(l.p[i].name, names[i]);
        assert_int_equal(l.p[i].ndim, shapes[i][1] ? 2 : 1);
        assert_int_equal(l.p[i].shape[0], shapes[i][0]);
        if (shapes[i][1]) assert_int_equal(l.p[i].shape[1], shapes[i][1]);
        assert_int_equal(l.p[i].decay, shapes[i][1] ? 1 : 0);
        assert_ptr_equal(l.p[i].data.data, ptrs[i].data);
    }
    ae_mla_free(&m);
    d.q_lora_rank = 7;
    assert_int_equal(ae_mla_init(&m, &d, ae_backend_cpu()), AE_OK);
    assert_null(m.wq.data);
    l = ae_mla_params(&m);
    assert_int_equal(l.n, 7);
    const char *names2[] = {"q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight",
                            "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight",
                            "kv_b_proj.weight", "o_proj.weight"};
    int64_t shapes2[][2] = {{7, 10}, {7, 0}, {10, 7}, {6, 10}, {4, 0}, {18, 4}, {10, 12}};
    ae_ptr ptrs2[] = {m.wqa, m.q_a_norm, m.wqb, m.wkva, m.kv_a_norm, m.wkvb, m.wo};
    for (int i = 0; i < l.n; i++) {
        assert_string_equal(l.p[i].name, names2[i]);
        assert_int_equal(l.p[i].shape[0], shapes2[i][0]);
        if (shapes2[i][1]) assert_int_equal(l.p[i].shape[1], shapes2[i][1]);
        assert_int_equal(l.p[i].decay, shapes2[i][1] ? 1 : 0);
        assert_ptr_equal(l.p[i].data.data, ptrs2[i].data);
    }
    // random init: norms 1, matrices with the requested spread
    ae_rng r;
    ae_rng_seed(&r, 5);
    assert_int_equal(ae_mla_init_random(&m, 0.02f, &r), AE_OK);
    for (int i = 0; i < 7; i++) assert_true(ae_f32(m.q_a_norm)[i] == 1.0f);
    const float *wo = ae_f32(m.wo);
    double ss = 0.0;
    for (int i = 0; i < 10 * 12; i++) ss += (double)wo[i] * wo[i];
    assert_true(sqrt(ss / 120) > 0.014 && sqrt(ss / 120) < 0.026);
    ae_mla_free(&m);
    ae_mla_free(&m); // free twice is harmless (zeroed)
}

static void test_bad_dims(void **state) {
    (void)state;
    ae_mla_dims good = {.D = 8, .H = 2, .q_lora_rank = 0, .kv_lora_rank = 4, .dn = 2, .dr = 2,
                        .dv = 2, .rope_theta = 1e4, .eps = 1e-6f};
    ae_mla m;
    ae_mla_dims d = good;
    d.dr = 3;
    const ae_backend *be = ae_backend_cpu();
    assert_int_equal(ae_mla_init(&m, &d, be), AE_ERR_ARG);
    d = good;
    d.kv_lora_rank = 0;
    assert_int_equal(ae_mla_init(&m, &d, be), AE_ERR_ARG);
    d = good;
    d.dn = -1;
    assert_int_equal(ae_mla_init(&m, &d, be), AE_ERR_ARG);
    assert_int_equal(ae_mla_init(&m, &good, be), AE_OK);
    float x[8] = {0}, cache[6] = {0}, y[8];
    int32_t pos[1] = {-1}; // T = 0: no position; pos0 = -1: the (invalid) position itself
    assert_int_equal(ae_mla_forward_absorbed(be, &m, ae_host_f32(x), 0, 0, ae_host_i32(pos),
                                             ae_host_f32(cache), ae_host_f32(y)),
                     AE_ERR_ARG);
    assert_int_equal(ae_mla_forward_materialized(be, &m, ae_host_f32(x), 1, -1, ae_host_i32(pos),
                                                 ae_host_f32(cache), ae_host_f32(y)),
                     AE_ERR_ARG);
    ae_mla_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_absorbed_equals_materialized),
        cmocka_unit_test(test_decode_equals_full),
        cmocka_unit_test(test_rope_relative_position),
        cmocka_unit_test(test_backward_fd_plain_q),
        cmocka_unit_test(test_backward_fd_q_lora),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_bad_dims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
