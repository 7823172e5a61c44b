// CPU backend ops against naive double-precision references, and MoE routing.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/rng.h"
#include "model/moe.h"
#include "util/testutil.h"

static void fill(float *x, size_t n, ae_rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = ae_rng_normal(r);
}

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
        fill(x, (size_t)M * K, &r);
        fill(w, (size_t)N * K, &r);
        be->matmul(be, y, x, w, M, K, N);
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
    fill(x, sizeof x / sizeof *x, &r);
    fill(w, 24, &r);
    be->rmsnorm(be, y, x, w, M, D, 1e-6f);
    for (int i = 0; i < M; i++) {
        double ss = 0;
        for (int d = 0; d < D; d++) ss += (double)x[i * D + d] * x[i * D + d];
        double inv = 1.0 / sqrt(ss / D + 1e-6);
        for (int d = 0; d < D; d++) assert_true(fabs(y[i * D + d] - w[d] * x[i * D + d] * inv) < 1e-5);
    }
    be->rmsnorm(be, x, x, w, M, D, 1e-6f); // in place gives the same
    assert_memory_equal(x, y, sizeof y);
}

static void test_rope_rotate_half(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    ae_rng r;
    ae_rng_seed(&r, 3);
    int T = 3, H = 2, hd = 8;
    float x[3 * 2 * 8], orig[3 * 2 * 8];
    int pos[3] = {0, 5, 1000};
    fill(x, sizeof x / sizeof *x, &r);
    memcpy(orig, x, sizeof x);
    be->rope(be, x, pos, T, H, hd, hd, 10000.0, AE_ROPE_HALF);
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

// Naive masked attention in double: query at qpos sees keys j <= qpos (and > qpos - window).
static void ref_attention(double *out, const float *q, const float *k, const float *v, int T,
                          int pos0, int Hq, int Hkv, int hd, int window, double scale) {
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hq; h++) {
            int kh = h / (Hq / Hkv), qpos = pos0 + t;
            double s[64], mx = -1e300, sum = 0;
            for (int j = 0; j <= qpos; j++) {
                int visible = window <= 0 || qpos - j < window;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)q[(t * Hq + h) * hd + i] * k[(j * Hkv + kh) * hd + i];
                s[j] = visible ? d * scale : -INFINITY;
                if (s[j] > mx) mx = s[j];
            }
            for (int j = 0; j <= qpos; j++) sum += (s[j] = exp(s[j] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int j = 0; j <= qpos; j++) o += s[j] / sum * v[(j * Hkv + kh) * hd + i];
                out[(t * Hq + h) * hd + i] = o;
            }
        }
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
        fill(q, (size_t)T * Hq * hd, &r);
        fill(k, (size_t)S * Hkv * hd, &r);
        fill(v, (size_t)S * Hkv * hd, &r);
        ae_attn_args aa = ae_attn_dense(T, pos0, Hq, Hkv, hd, hd, W, 0.35f, NULL);
        be->attention(be, &aa, o, q, k, v);
        ref_attention(ref, q, k, v, T, pos0, Hq, Hkv, hd, W, 0.35);
        for (int i = 0; i < T * Hq * hd; i++) assert_true(fabs(o[i] - ref[i]) < 1e-5);
        free(q), free(k), free(v), free(o), free(ref);
    }
}

static void test_silu_mul_add(void **state) {
    (void)state;
    const ae_backend *be = ae_backend_cpu();
    float g[3] = {-2.0f, 0.0f, 3.0f}, u[3] = {1.0f, 5.0f, -2.0f}, y[3];
    be->silu_mul(be, y, g, u, 3);
    for (int i = 0; i < 3; i++) assert_true(fabs(y[i] - g[i] / (1 + exp(-g[i])) * u[i]) < 1e-6);
    float a[3] = {1, 2, 3};
    be->add(be, a, u, 3);
    assert_true(a[0] == 2.0f && a[1] == 7.0f && a[2] == 1.0f);
}

static void test_moe_route(void **state) {
    (void)state;
    float p[5] = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
    int idx[3];
    float w[3];
    ae_moe_route(p, 5, 3, 0, idx, w);
    assert_int_equal(idx[0], 1); // tie between 1 and 3: lower index first
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    assert_true(w[0] == 0.3f && w[2] == 0.25f);
    ae_moe_route(p, 5, 2, 1, idx, w);
    assert_true(fabs(w[0] - 0.5) < 1e-7 && fabs(w[1] - 0.5) < 1e-7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_shapes),   cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope_rotate_half), cmocka_unit_test(test_attention_gqa_window),
        cmocka_unit_test(test_silu_mul_add),    cmocka_unit_test(test_moe_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
