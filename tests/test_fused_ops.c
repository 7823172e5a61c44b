// The fused ops of the CPU reference backend equal the compositions they replace, bit for bit:
//   qk_norm_rope == rmsnorm then rope of q's and k's head rows (any hd, rd <= hd, both rope
//                   conventions, q and k at their own row strides, either one absent);
//   matmul_group == one ae_matmul per product (1..AE_MATMUL_GROUP_MAX products, any M).
// (GPU against these references: tests/test_backend_ops.c.)
#include <stdlib.h>
#include <string.h>

#include "backend/cpu.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "util/testutil.h"

static float *normal(ae_rng *r, size_t n, float scale) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    ae_test_fill_normal(p, n, scale, r);
    return p;
}

static float *dup(const float *x, size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

// q rows at stride ldq (>= Hq·hd), k rows at stride ldk from offset koff (a cache slot); the
// fused op against rmsnorm + rope per token on copies. with_q / with_k: pass the tensor or null.
static void qk_case(ae_rng *r, int M, int Hq, int Hkv, int hd, int rd, int64_t ldq, int64_t ldk,
                    size_t koff, ae_rope_mode mode, int with_q, int with_k) {
    const ae_backend *be = ae_backend_cpu();
    size_t nq = (size_t)M * ldq, nk = koff + (size_t)M * ldk;
    float *q = normal(r, nq, 2.0f), *k = normal(r, nk, 2.0f);
    float *wq = normal(r, (size_t)hd, 1.0f), *wk = normal(r, (size_t)hd, 1.0f);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)M);
    assert_non_null(pos);
    for (int t = 0; t < M; t++) pos[t] = (int32_t)(ae_rng_u64(r) % 40000);
    float *qr = dup(q, nq), *kr = dup(k, nk);
    float eps = 1e-6f;
    double theta = 1e6;
    for (int t = 0; t < M; t++) { // the composition, token by token
        if (with_q) {
            ae_ptr x = ae_host_f32(qr + (size_t)t * ldq);
            be->rmsnorm(be, x, x, ae_host_f32(wq), Hq, hd, hd, eps);
            be->rope(be, x, ae_host_i32(pos + t), 1, Hq, hd, rd, theta, mode);
        }
        if (with_k) {
            ae_ptr x = ae_host_f32(kr + koff + (size_t)t * ldk);
            be->rmsnorm(be, x, x, ae_host_f32(wk), Hkv, hd, hd, eps);
            be->rope(be, x, ae_host_i32(pos + t), 1, Hkv, hd, rd, theta, mode);
        }
    }
    ae_qk_norm_rope_args a = {.M = M, .Hq = Hq, .Hkv = Hkv, .hd = hd, .rd = rd, .ldq = ldq,
                              .ldk = ldk, .eps = eps, .theta = theta, .mode = mode};
    be->qk_norm_rope(be, &a, with_q ? ae_host_f32(q) : ae_ptr_null(),
                     with_k ? ae_host_f32(k + koff) : ae_ptr_null(), ae_host_f32(wq),
                     ae_host_f32(wk), ae_host_i32(pos));
    if (memcmp(q, qr, sizeof(float) * nq) != 0 || memcmp(k, kr, sizeof(float) * nk) != 0)
        fail_msg("qk_norm_rope M=%d Hq=%d Hkv=%d hd=%d rd=%d ldq=%lld ldk=%lld koff=%zu %s q%d k%d "
                 "differs from rmsnorm + rope",
                 M, Hq, Hkv, hd, rd, (long long)ldq, (long long)ldk, koff,
                 mode == AE_ROPE_HALF ? "half" : "interleaved", with_q, with_k);
    free(q), free(k), free(wq), free(wk), free(pos), free(qr), free(kr);
}

static void test_qk_norm_rope(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 11);
    for (int m = 0; m < 2; m++) {
        ae_rope_mode mode = (ae_rope_mode)m;
        qk_case(&r, 1, 16, 2, 128, 128, 16 * 128, 2 * 128, 0, mode, 1, 1);   // Qwen3 decode
        qk_case(&r, 5, 16, 2, 128, 128, 16 * 128, 2 * 128, 7 * 256, mode, 1, 1); // cache rows
        qk_case(&r, 40, 4, 2, 64, 64, 4 * 64, 2 * 64, 0, mode, 1, 1);     // packed, > 16 rows
        qk_case(&r, 5, 3, 1, 41, 40, 3 * 41, 41, 0, mode, 1, 1);          // odd hd, rd < hd
        qk_case(&r, 3, 2, 2, 33, 16, 2 * 33 + 5, 2 * 33 + 3, 11, mode, 1, 1); // padded strides
        qk_case(&r, 4, 8, 2, 64, 64, 8 * 64, 2 * 64, 0, mode, 1, 0);      // q only
        qk_case(&r, 4, 8, 2, 64, 64, 8 * 64, 2 * 64 + 9, 5, mode, 0, 1);  // k only
    }
}

// The group against separate ae_matmul calls.
static void group_case(ae_rng *r, int n, int M, int K, const int *N) {
    const ae_backend *be = ae_backend_cpu();
    float *x = normal(r, (size_t)M * K, 1.0f);
    float *w[AE_MATMUL_GROUP_MAX], *y[AE_MATMUL_GROUP_MAX], *ref[AE_MATMUL_GROUP_MAX];
    ae_ptr yp[AE_MATMUL_GROUP_MAX], wp[AE_MATMUL_GROUP_MAX];
    for (int i = 0; i < n; i++) {
        w[i] = normal(r, (size_t)N[i] * K, 1.0f);
        y[i] = normal(r, (size_t)M * N[i], 1.0f); // overwritten
        ref[i] = normal(r, (size_t)M * N[i], 1.0f);
        ae_matmul(be, ae_host_f32(ref[i]), ae_host_f32(x), ae_host_f32(w[i]), M, K, N[i]);
        yp[i] = ae_host_f32(y[i]), wp[i] = ae_host_f32(w[i]);
    }
    if (n % 2) be->matmul_group(be, n, yp, ae_host_f32(x), wp, N, M, K);
    else ae_matmul_group(be, n, yp, ae_host_f32(x), wp, N, M, K); // the helper over the slot
    for (int i = 0; i < n; i++) {
        if (memcmp(y[i], ref[i], sizeof(float) * (size_t)M * N[i]) != 0)
            fail_msg("matmul_group n=%d M=%d K=%d: product %d (N=%d) differs from ae_matmul", n, M,
                     K, i, N[i]);
        free(w[i]), free(y[i]), free(ref[i]);
    }
    free(x);
}

static void test_matmul_group(void **state) {
    (void)state;
    ae_rng r;
    ae_rng_seed(&r, 12);
    const int N[AE_MATMUL_GROUP_MAX] = {37, 9, 9, 5};
    const int Ms[] = {1, 3, 8, 9};
    for (int n = 1; n <= AE_MATMUL_GROUP_MAX; n++)
        for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++) group_case(&r, n, Ms[m], 24, N);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qk_norm_rope),
        cmocka_unit_test(test_matmul_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
