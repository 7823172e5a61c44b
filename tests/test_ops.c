// CPU backend ops against naive double-precision references, and MoE routing.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "util/testutil.h"

static void test_matmul_shapes(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 1);
    int shapes[][3] = {{1, 7, 5}, {3, 16, 9}, {17, 33, 4}};
    for (size_t s = 0; s < 3; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K);
        float *y = malloc(sizeof(float) * M * N);
        ae_test_fill_normal(x, (size_t)M * K, 1.0f, &r);
        ae_test_fill_normal(w, (size_t)N * K, 1.0f, &r);
        ae_matmul(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(w), M, K, N);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double ref = 0;
                for (int k = 0; k < K; k++) ref += (double)x[i * K + k] * w[j * K + k];
                assert_true(fabs(ref - y[i * N + j]) < 1e-4 * (1 + fabs(ref)));
            }
        free(x);
        free(w);
        free(y);
    }
}

static void test_rmsnorm(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 2);
    int M = 5, D = 24;
    float x[5 * 24], w[24], y[5 * 24];
    ae_test_fill_normal(x, sizeof x / sizeof *x, 1.0f, &r);
    ae_test_fill_normal(w, 24, 1.0f, &r);
    be->rmsnorm(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(w), M, D, D, 1e-6f);
    for (int i = 0; i < M; i++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[i * D + d] * x[i * D + d];
        double inv = 1.0 / sqrt(ss / D + 1e-6);
        for (int d = 0; d < D; d++) assert_true(fabs(y[i * D + d] - w[d] * x[i * D + d] * inv) < 1e-5);
    }
    // in place gives the same
    be->rmsnorm(be, ae_host_f32(x), ae_host_f32(x), ae_host_f32(w), M, D, D, 1e-6f);
    assert_memory_equal(x, y, sizeof y);
}

static void test_rope_rotate_half(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 3);
    int T = 3, H = 2, hd = 8;
    float x[3 * 2 * 8], orig[3 * 2 * 8];
    int32_t pos[3] = {0, 5, 1000};
    ae_test_fill_normal(x, sizeof x / sizeof *x, 1.0f, &r);
    memcpy(orig, x, sizeof x);
    be->rope(be, ae_host_f32(x), ae_host_i32(pos), T, H, hd, hd, 10000.0, AE_ROPE_HALF);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < hd / 2; i++) {
                double ang = pos[t] * pow(10000.0, -2.0 * i / hd);
                const float *o = orig + (t * H + h) * hd;
                double a = o[i] * cos(ang) - o[i + hd / 2] * sin(ang);
                double b = o[i + hd / 2] * cos(ang) + o[i] * sin(ang);
                assert_true(fabs(x[(t * H + h) * hd + i] - a) < 2e-4);
                assert_true(fabs(x[(t * H + h) * hd + i + hd / 2] - b) < 2e-4);
            }
    // position 0 is the identity
    for (int i = 0; i < H * hd; i++) assert_true(x[i] == orig[i]);
}

// Interleaved pairs (2i, 2i+1) and partial rotary (rd < stride: dims rd.. are left alone), both
// modes; rope_bwd undoes rope.
static void test_rope_interleaved_partial(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 5);
    enum { T = 4, H = 3, STRIDE = 10 };
    int32_t pos[T] = {0, 3, 17, 200};
    int rds[2] = {10, 6};
    for (int mode = 0; mode < 2; mode++)
        for (int c = 0; c < 2; c++) {
            int rd = rds[c], half = rd / 2;
            float x[T * H * STRIDE], orig[T * H * STRIDE];
            ae_test_fill_normal(x, sizeof x / sizeof *x, 1.0f, &r);
            memcpy(orig, x, sizeof x);
            be->rope(be, ae_host_f32(x), ae_host_i32(pos), T, H, STRIDE, rd, 10000.0,
                     (ae_rope_mode)mode);
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++) {
                    const float *o = orig + (t * H + h) * STRIDE, *y = x + (t * H + h) * STRIDE;
                    for (int i = 0; i < half; i++) {
                        double ang = pos[t] * pow(10000.0, -2.0 * i / rd);
                        int ia = mode == AE_ROPE_HALF ? i : 2 * i;
                        int ib = mode == AE_ROPE_HALF ? i + half : 2 * i + 1;
                        double a = o[ia] * cos(ang) - o[ib] * sin(ang);
                        double b = o[ib] * cos(ang) + o[ia] * sin(ang);
                        assert_true(fabs(y[ia] - a) < 2e-4);
                        assert_true(fabs(y[ib] - b) < 2e-4);
                    }
                    for (int i = rd; i < STRIDE; i++) assert_true(y[i] == o[i]);
                }
            be->rope_bwd(be, ae_host_f32(x), ae_host_i32(pos), T, H, STRIDE, rd, 10000.0,
                         (ae_rope_mode)mode);
            for (int i = 0; i < T * H * STRIDE; i++) assert_true(fabs(x[i] - orig[i]) < 1e-5);
        }
}

// Naive attention in double (ae_test_attention), reading K/V exactly as ae_attn_args describes
// (row strides, ring rows j % ring, window, sinks); a->sinks is read as the sink logits when set.
static void ref_attention_args(double *out, const ae_attn_args *a, const float *q, const float *k,
                               const float *v) {
    int rows = a->ring > 0 ? a->ring : a->pos0 + a->T; // rows of k and v that may be read
    size_t nk = (size_t)(rows - 1) * a->k_stride + (size_t)a->Hkv * a->dk;
    size_t nv = (size_t)(rows - 1) * a->v_stride + (size_t)a->Hkv * a->dv;
    double *qd = ae_test_to_double(q, (size_t)a->T * a->Hq * a->dk);
    double *kd = ae_test_to_double(k, nk), *vd = ae_test_to_double(v, nv);
    double *sd = ae_ptr_is_null(a->sinks) ? NULL // (Hq) the sink logits
                                          : ae_test_to_double(ae_f32(a->sinks), (size_t)a->Hq);
    ae_test_attn r = {a->T, a->pos0, a->Hq, a->Hkv, a->dk, a->dv, (size_t)a->k_stride,
                      (size_t)a->v_stride, a->window, a->ring, a->scale, sd, NULL};
    ae_test_attention(out, &r, qd, kd, vd);
    free(qd), free(kd), free(vd), free(sd);
}

// Dense layout k (S, Hkv, hd), v (S, Hkv, hd), no sinks.
static void ref_attention(double *out, const float *q, const float *k, const float *v, int T,
                          int pos0, int Hq, int Hkv, int hd, int window, double scale) {
    ae_attn_args a = ae_attn_dense(T, pos0, Hq, Hkv, hd, hd, window, (float)scale, ae_ptr_null());
    ref_attention_args(out, &a, q, k, v);
}

static void test_attention_gqa_window(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 4);
    int hd = 8;
    int cases[][5] = {{6, 0, 4, 4, 0}, {6, 0, 4, 2, 0}, {5, 7, 4, 1, 0}, {9, 0, 4, 2, 3}, {3, 20, 2, 1, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int T = cases[c][0], pos0 = cases[c][1], Hq = cases[c][2], Hkv = cases[c][3], W = cases[c][4];
        int S = pos0 + T;
        float *q = malloc(sizeof(float) * T * Hq * hd), *k = malloc(sizeof(float) * S * Hkv * hd);
        float *v = malloc(sizeof(float) * S * Hkv * hd), *o = malloc(sizeof(float) * T * Hq * hd);
        double *ref = malloc(sizeof(double) * T * Hq * hd);
        ae_test_fill_normal(q, (size_t)T * Hq * hd, 1.0f, &r);
        ae_test_fill_normal(k, (size_t)S * Hkv * hd, 1.0f, &r);
        ae_test_fill_normal(v, (size_t)S * Hkv * hd, 1.0f, &r);
        ae_attn_args aa = ae_attn_dense(T, pos0, Hq, Hkv, hd, hd, W, 0.35f, ae_ptr_null());
        be->attention(be, &aa, ae_host_f32(o), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
        ref_attention(ref, q, k, v, T, pos0, Hq, Hkv, hd, W, 0.35);
        for (int i = 0; i < T * Hq * hd; i++) assert_true(fabs(o[i] - ref[i]) < 1e-5);
        free(q), free(k), free(v), free(o), free(ref);
    }
}

typedef enum { LAYOUT_DENSE, LAYOUT_PADDED, LAYOUT_MLA } attn_layout;

// One attention call in the given layout against the double reference.
static void check_attention(ae_rng *r, int T, int pos0, int Hq, int Hkv, int dk, int dv,
                            int window, int with_sinks, attn_layout layout) {
    const ae_backend *be = ae_backend_cpu();
    int S = pos0 + T;
    float *sinks = NULL;
    if (with_sinks) {
        sinks = malloc(sizeof(float) * Hq);
        ae_test_fill_normal(sinks, (size_t)Hq, 1.0f, r);
    }
    ae_attn_args a = ae_attn_dense(T, pos0, Hq, Hkv, dk, dv, window, 0.3f, ae_host_f32(sinks));
    if (layout == LAYOUT_PADDED) a.k_stride += 5, a.v_stride += 3;
    // absorbed MLA: one latent row per position (R + dr floats); the key is the whole row
    // (dk = R + dr), the value its first R floats (dv = R), Hkv = 1
    if (layout == LAYOUT_MLA) a.k_stride = a.v_stride = dk;
    size_t nk = (size_t)S * a.k_stride, nv = (size_t)S * a.v_stride;
    size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk);
    float *v = layout == LAYOUT_MLA ? k : malloc(sizeof(float) * nv);
    float *o = malloc(sizeof(float) * no);
    double *ref = malloc(sizeof(double) * no);
    ae_test_fill_normal(q, nq, 1.0f, r);
    ae_test_fill_normal(k, nk, 1.0f, r);
    if (v != k) ae_test_fill_normal(v, nv, 1.0f, r);
    be->attention(be, &a, ae_host_f32(o), ae_host_f32(q), ae_host_f32(k), ae_host_f32(v));
    ref_attention_args(ref, &a, q, k, v);
    for (size_t i = 0; i < no; i++)
        if (!(fabs(o[i] - ref[i]) < 1e-5))
            fail_msg("attention T=%d pos0=%d Hq=%d Hkv=%d dk=%d dv=%d W=%d sinks=%d layout=%d: "
                     "out[%zu] %g vs %g", T, pos0, Hq, Hkv, dk, dv, window, with_sinks,
                     (int)layout, i, (double)o[i], ref[i]);
    free(q), free(k), free(o), free(ref), free(sinks);
    if (v != k) free(v);
}

static void test_attention_layouts(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 6);
    // T, pos0, Hq, Hkv, dk, dv, window, sinks, layout
    check_attention(&r, 6, 0, 4, 2, 8, 8, 0, 1, LAYOUT_DENSE);   // sinks
    check_attention(&r, 7, 3, 4, 1, 8, 8, 3, 1, LAYOUT_DENSE);   // sinks + window + pos0
    check_attention(&r, 1, 12, 2, 2, 8, 8, 0, 1, LAYOUT_DENSE);  // sinks, decode
    check_attention(&r, 5, 0, 4, 2, 12, 6, 0, 0, LAYOUT_DENSE);  // dk != dv
    check_attention(&r, 5, 2, 2, 1, 4, 10, 3, 1, LAYOUT_DENSE);  // dk < dv
    check_attention(&r, 6, 0, 4, 2, 8, 4, 0, 0, LAYOUT_PADDED);  // k/v rows wider than Hkv·d
    check_attention(&r, 4, 5, 4, 2, 6, 6, 4, 1, LAYOUT_PADDED);
    check_attention(&r, 6, 0, 4, 1, 10, 8, 0, 0, LAYOUT_MLA);    // R = 8, dr = 2
    check_attention(&r, 1, 9, 4, 1, 10, 8, 0, 0, LAYOUT_MLA);    // absorbed decode
    check_attention(&r, 5, 3, 8, 1, 10, 8, 4, 1, LAYOUT_MLA);
}

// A ring buffer of `ring` slots holding position j at slot j % ring gives the same result as
// the full cache with the same window (window <= ring).
static void test_attention_ring(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 7);
    int cases[][6] = {// T, pos0, Hq, Hkv, window, ring
                      {1, 20, 4, 2, 5, 8}, {3, 20, 4, 2, 5, 8}, {4, 9, 2, 1, 4, 7},
                      {1, 3, 2, 2, 4, 4},  {2, 0, 2, 1, 3, 4},  {1, 37, 4, 1, 6, 6}};
    int dk = 6, dv = 4;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int T = cases[c][0], pos0 = cases[c][1], Hq = cases[c][2], Hkv = cases[c][3];
        int W = cases[c][4], ring = cases[c][5], S = pos0 + T;
        assert_true(T + W - 1 <= ring); // every key any query needs is still in the ring
        float *sinks = malloc(sizeof(float) * Hq);
        ae_test_fill_normal(sinks, (size_t)Hq, 1.0f, &r);
        size_t nq = (size_t)T * Hq * dk, no = (size_t)T * Hq * dv;
        float *q = malloc(sizeof(float) * nq), *o = malloc(sizeof(float) * no);
        float *ofull = malloc(sizeof(float) * no);
        float *k = malloc(sizeof(float) * S * Hkv * dk), *v = malloc(sizeof(float) * S * Hkv * dv);
        float *kr = malloc(sizeof(float) * ring * Hkv * dk);
        float *vr = malloc(sizeof(float) * ring * Hkv * dv);
        ae_test_fill_normal(q, nq, 1.0f, &r);
        ae_test_fill_normal(k, (size_t)S * Hkv * dk, 1.0f, &r);
        ae_test_fill_normal(v, (size_t)S * Hkv * dv, 1.0f, &r);
        for (size_t i = 0; i < (size_t)ring * Hkv * dk; i++) kr[i] = NAN; // never-written slots
        for (size_t i = 0; i < (size_t)ring * Hkv * dv; i++) vr[i] = NAN;
        for (int j = 0; j < S; j++) { // the cache as written token by token
            memcpy(kr + (size_t)(j % ring) * Hkv * dk, k + (size_t)j * Hkv * dk,
                   sizeof(float) * Hkv * dk);
            memcpy(vr + (size_t)(j % ring) * Hkv * dv, v + (size_t)j * Hkv * dv,
                   sizeof(float) * Hkv * dv);
        }
        ae_attn_args full = ae_attn_dense(T, pos0, Hq, Hkv, dk, dv, W, 0.4f, ae_host_f32(sinks));
        ae_attn_args ringa = full;
        ringa.ring = ring;
        be->attention(be, &full, ae_host_f32(ofull), ae_host_f32(q), ae_host_f32(k),
                      ae_host_f32(v));
        be->attention(be, &ringa, ae_host_f32(o), ae_host_f32(q), ae_host_f32(kr), ae_host_f32(vr));
        double *ref = malloc(sizeof(double) * no);
        ref_attention_args(ref, &full, q, k, v);
        for (size_t i = 0; i < no; i++) {
            assert_true(fabs(o[i] - ref[i]) < 1e-5);
            assert_true(o[i] == ofull[i]); // same keys, same order: bit-identical
        }
        free(sinks), free(q), free(o), free(ofull), free(k), free(v), free(kr), free(vr),
            free(ref);
    }
}

static void test_gate_mul(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 8);
    enum { T = 3, H = 4, HD = 5, N = T * H * HD };
    float x[N], g[N], y[N];
    ae_test_fill_normal(x, N, 1.0f, &r);
    ae_test_fill_normal(g, N, 1.0f, &r);
    g[0] = -200.0f, g[1] = 40.0f; // saturated: exactly 0 and x
    be->gate_mul(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(g), T, H, HD, 0);
    for (int i = 0; i < N; i++) assert_true(fabs(y[i] - x[i] / (1 + exp(-(double)g[i]))) < 1e-6);
    assert_true(y[0] == 0.0f && y[1] == x[1]);
    // per head: g read as (T, H)
    be->gate_mul(be, ae_host_f32(y), ae_host_f32(x), ae_host_f32(g), T, H, HD, 1);
    for (int i = 0; i < N; i++)
        assert_true(fabs(y[i] - x[i] / (1 + exp(-(double)g[i / HD]))) < 1e-6);
    float z[N];
    memcpy(z, x, sizeof z);
    // y may alias x
    be->gate_mul(be, ae_host_f32(z), ae_host_f32(z), ae_host_f32(g), T, H, HD, 1);
    assert_memory_equal(z, y, sizeof z);
}

static void test_silu_mul_add(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    float g[3] = {-2.0f, 0.0f, 3.0f}, u[3] = {1.0f, 5.0f, -2.0f}, y[3];
    be->silu_mul(be, ae_host_f32(y), ae_host_f32(g), ae_host_f32(u), 3);
    for (int i = 0; i < 3; i++) assert_true(fabs(y[i] - g[i] / (1 + exp(-g[i])) * u[i]) < 1e-6);
    float a[3] = {1, 2, 3};
    be->add(be, ae_host_f32(a), ae_host_f32(u), 3);
    assert_true(a[0] == 2.0f && a[1] == 7.0f && a[2] == 1.0f);
}

static void test_moe_route(void **state) {
    (void)state;
    float p[5] = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
    int idx[3];
    float w[3];
    ae_moe_topk(p, 5, 3, 0, idx, w);
    assert_int_equal(idx[0], 1); // tie between 1 and 3: lower index first
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    assert_true(w[0] == 0.3f && w[2] == 0.25f);
    ae_moe_topk(p, 5, 2, 1, idx, w);
    assert_true(fabs(w[0] - 0.5) < 1e-7 && fabs(w[1] - 0.5) < 1e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_shapes),   cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope_rotate_half), cmocka_unit_test(test_attention_gqa_window),
        cmocka_unit_test(test_rope_interleaved_partial), cmocka_unit_test(test_attention_layouts),
        cmocka_unit_test(test_attention_ring),  cmocka_unit_test(test_gate_mul),
        cmocka_unit_test(test_silu_mul_add),    cmocka_unit_test(test_moe_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
