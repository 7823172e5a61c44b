// The decode GEMV of the CUDA backend (backend/cuda_gemm.cu, k_gemv / k_gemv_set, M <= 8) and
// each of its AE_CUDA_GEMV variants (chunks per step j, pipelined loads pipe, warps per tile kw,
// the heuristic's warps per SM wps, minb, split-K, programmatic dependent launch pdl) against the
// CPU reference gemm (fp32), on the same bf16-rounded inputs: odd N (1, 13, 37, 257), K a
// multiple of 8 but not of the 32-value chunk (8, 40, 264, 1032, 4104), M = 1..8, alpha/beta
// (beta 0: y must not be read; it holds NaN there, and matmul_group's outputs are fresh
// NaN-poisoned allocations), row strides longer than a row (lda > K, ldy > N: the columns past
// N must stay as they were), F32 and BF16 outputs, and matmul_group sets of 1-3 products (one
// k_gemv_set launch).
// Tolerance per element: 3e-5 · (|alpha|·Σ_k |x·w| + |beta·y|) for the fp32 sums (the kernels
// and the CPU add the same exact products in different orders: random data gives errors of
// ~sqrt(K)·2^-24 of that sum, 4e-6 at K = 4104, so 3e-5 leaves a margin of 8), plus 2^-8 · |ref|
// for a BF16 output (one rounding to bf16: at most 2^-9 relative).
// Variants that keep the kernel's arithmetic (j, pipe, minb, pdl) must give bit-identical F32
// outputs to the default; kw=1 and split-K change the sum order, so on the long-K case they must
// differ from the default somewhere (proof that they ran) yet stay within the tolerance, and
// split-K must be deterministic (two runs bit-identical). pdl=1 is also run as a chain of two
// GEMVs, the second reading the first one's output as its x (it must wait for it): equal bit for
// bit to the chain without PDL. gate_up_silu (k_gemv_swiglu, the GEMV with the SwiGLU epilogue)
// under every variant: bit for bit what matmul_group of the gate and up products then silu_mul
// give under the same variant (split-K runs those two ops inside gate_up_silu), and within
// 1e-2 relative of the CPU's op (bf16 g, u and act: three roundings of 2^-9). Needs a CUDA build
// and a GPU (exit 77 = skipped otherwise).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/ops.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "util/testutil.h"

#define TOL_SUM 3e-5
#define TOL_BF16 (1.0 / 256)

static const ae_backend *g_gpu, *g_cpu;

typedef struct {
    const char *env; // AE_CUDA_GEMV
    int exact;       // 1: the default's arithmetic, bit for bit (F32 outputs)
    int reorders;    // 1: must differ from the default somewhere on the long-K case
    int split;       // 1: split-K (deterministic: checked by running twice)
} variant;

static const variant VARIANTS[] = {
    {"", 1, 0, 0},
    {"j=4", 1, 0, 0},
    {"j=8", 1, 0, 0},
    {"pipe=1", 1, 0, 0},
    {"j=4,pipe=1", 1, 0, 0},
    {"j=8,pipe=1,minb=4", 1, 0, 0},
    {"minb=4", 1, 0, 0},
    {"j=8,minb=4", 1, 0, 0},
    {"pdl=1", 1, 0, 0},
    {"j=4,pdl=1,pipe=1", 1, 0, 0},
    {"kw=1", 0, 1, 0},
    {"kw=2", 0, 0, 0},
    {"kw=8", 0, 0, 0},
    {"wps=64", 0, 0, 0},
    {"wps=8,j=4", 0, 0, 0},
    {"split=2", 0, 1, 1},
    {"split=4", 0, 1, 1},
    {"split=16,j=8", 0, 1, 1},
    {"split=3,minb=4,pdl=1,pipe=1", 0, 1, 1},
};
#define N_VARIANTS ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

static void use_variant(const variant *v) {
    assert_int_equal(setenv("AE_CUDA_GEMV", v->env, 1), 0);
}

static float bf16r(float x) { return ae_bf16_to_f32(ae_f32_to_bf16(x)); }

// n bf16-rounded N(0, 1) values.
static float *rand_bf16(size_t n, ae_rng *r) {
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    ae_test_fill_normal(x, n, 1.0f, r);
    for (size_t i = 0; i < n; i++) x[i] = bf16r(x[i]);
    return x;
}

// A new buffer of n values of dt on be holding h (host floats).
static ae_ptr up(const ae_backend *be, const float *h, size_t n, ae_dtype dt) {
    ae_ptr p = be->alloc(be, n, dt);
    assert_non_null(p.data);
    assert_int_equal(be->upload(be, p, h, AE_DT_F32, n), AE_OK);
    return p;
}

static void down(const ae_backend *be, float *h, ae_ptr p, size_t n) {
    assert_int_equal(be->download(be, h, AE_DT_F32, p, n), AE_OK);
}

// One gemm y (M, N) = alpha · x (M, K) · w (N, K)ᵀ + beta · y on be; y0 (M, ldy) the start
// values; the result (M, ldy) into out.
static void run_gemm(const ae_backend *be, ae_dtype adt, ae_dtype ydt, const ae_gemm_args *g,
                     const float *x, const float *w, const float *y0, float *out) {
    const size_t nx = (size_t)g->M * g->lda, nw = (size_t)g->N * g->ldb, ny = (size_t)g->M * g->ldy;
    ae_ptr px = up(be, x, nx, adt), pw = up(be, w, nw, adt), py = up(be, y0, ny, ydt);
    be->gemm(be, g, py, px, pw);
    down(be, out, py, ny);
    be->free(be, px), be->free(be, pw), be->free(be, py);
}

// got (M, ldy) against the reference within the tolerance (see the top); the columns past N must
// hold y0. sum: per output the bound's Σ (|alpha|·Σ|x·w| + |beta·y|).
static void check(const char *what, const variant *v, const ae_gemm_args *g, const float *got,
                  const float *ref, const double *sum, const float *y0, int bf16_out) {
    for (int m = 0; m < g->M; m++)
        for (int n = 0; n < (int)g->ldy; n++) {
            const size_t i = (size_t)m * g->ldy + n;
            if (n >= g->N) {
                if (got[i] != y0[i])
                    fail_msg("%s [%s]: y[%d][%d] past N = %d changed: %g, was %g", what, v->env, m,
                             n, g->N, got[i], y0[i]);
                continue;
            }
            const double tol = TOL_SUM * sum[i] + (bf16_out ? TOL_BF16 * fabs(ref[i]) : 0) + 1e-30;
            if (!(fabs((double)got[i] - ref[i]) <= tol))
                fail_msg("%s [%s]: M %d N %d K %d y[%d][%d] = %.9g, reference %.9g (tol %.3g)",
                         what, v->env, g->M, g->N, g->K, m, n, got[i], ref[i], tol);
        }
}

static int differs(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) != 0;
}

// Every variant on one gemm shape; long_k: the case where reordering variants must differ.
static void gemm_case(int M, int N, int K, int lda, int ldy, float alpha, float beta, ae_dtype ydt,
                      int long_k, uint64_t seed) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    const ae_gemm_args g = {.M = M, .N = N, .K = K, .batch = 1, .trans_a = 0, .trans_b = 1,
                            .lda = lda, .ldb = K, .ldy = ldy, .alpha = alpha, .beta = beta};
    const size_t ny = (size_t)M * ldy;
    float *x = rand_bf16((size_t)M * lda, &r), *w = rand_bf16((size_t)N * K, &r);
    float *y0 = rand_bf16(ny, &r);
    for (size_t i = 0; i < ny && beta == 0.0f; i++) // beta 0 must not read y: NaN would show
        if ((int)(i % ldy) < N) y0[i] = NAN;
    float *ref = malloc(ny * sizeof *ref), *got = malloc(ny * sizeof *got);
    float *base = malloc(ny * sizeof *base), *again = malloc(ny * sizeof *again);
    double *sum = calloc(ny, sizeof *sum);
    assert_true(ref && got && base && again && sum);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += fabs((double)x[(size_t)m * lda + k] * w[(size_t)n * K + k]);
            sum[(size_t)m * ldy + n] =
                fabs(alpha) * s + (beta != 0.0f ? fabs(beta * y0[(size_t)m * ldy + n]) : 0.0);
        }
    run_gemm(g_cpu, AE_DT_F32, AE_DT_F32, &g, x, w, y0, ref);
    const int bf16_out = ydt == AE_DT_BF16;
    char what[96];
    snprintf(what, sizeof what, "gemm %s alpha %g beta %g lda %d ldy %d", bf16_out ? "BF16" : "F32",
             alpha, beta, lda, ldy);
    for (int i = 0; i < N_VARIANTS; i++) {
        const variant *v = &VARIANTS[i];
        use_variant(v);
        run_gemm(g_gpu, AE_DT_BF16, ydt, &g, x, w, y0, got);
        check(what, v, &g, got, ref, sum, y0, bf16_out);
        if (i == 0) {
            memcpy(base, got, ny * sizeof *got);
            continue;
        }
        if (v->exact && !bf16_out && differs(got, base, ny))
            fail_msg("%s [%s]: M %d N %d K %d not bit-identical to the default", what, v->env, M,
                     N, K);
        if (v->reorders && long_k && !bf16_out && !differs(got, base, ny))
            fail_msg("%s [%s]: M %d N %d K %d identical to the default: did the variant run?",
                     what, v->env, M, N, K);
        if (v->split) {
            run_gemm(g_gpu, AE_DT_BF16, ydt, &g, x, w, y0, again);
            if (differs(got, again, ny))
                fail_msg("%s [%s]: two runs differ (split-K must be deterministic)", what, v->env);
        }
    }
    unsetenv("AE_CUDA_GEMV");
    free(x), free(w), free(y0), free(ref), free(got), free(base), free(again), free(sum);
}

static void test_gemm_m1_to_8(void **state) {
    (void)state;
    for (int M = 1; M <= 8; M++) {
        gemm_case(M, 37, 264, 264, 37, 1.0f, 0.0f, AE_DT_F32, 0, 100 + M);
        gemm_case(M, 13, 40, M == 1 ? 44 : 48, 16, 0.5f, -1.25f, AE_DT_F32, 0, 200 + M);
    }
}

static void test_gemm_odd_shapes(void **state) {
    (void)state;
    gemm_case(1, 1, 8, 8, 1, 1.0f, 0.0f, AE_DT_F32, 0, 1);          // one output, one chunk part
    gemm_case(3, 257, 1032, 1040, 260, 1.0f, 1.0f, AE_DT_F32, 0, 2); // 32 chunks + 8 values
    gemm_case(8, 8, 264, 264, 8, -2.0f, 0.0f, AE_DT_F32, 0, 3);     // one whole tile
}

static void test_gemm_long_k(void **state) {
    (void)state;
    gemm_case(8, 257, 4104, 4104, 257, 1.0f, 0.0f, AE_DT_F32, 1, 4); // 128 chunks + 8 values
    gemm_case(1, 257, 4104, 4104, 257, 0.75f, 0.5f, AE_DT_F32, 1, 5);
}

static void test_gemm_bf16_out(void **state) {
    (void)state;
    gemm_case(1, 37, 264, 264, 37, 1.0f, 0.0f, AE_DT_BF16, 0, 6);
    gemm_case(5, 257, 4104, 4104, 264, 0.5f, 1.0f, AE_DT_BF16, 0, 7);
    gemm_case(8, 13, 1032, 1032, 13, 1.0f, -0.5f, AE_DT_BF16, 0, 8);
}

// matmul_group: n products of one x (M, K) in one launch; y[i] = x · w[i]ᵀ (alpha 1, beta 0).
static void group_case(int n, const int *N, int M, int K, ae_dtype ydt, uint64_t seed) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    float *x = rand_bf16((size_t)M * K, &r), *w[AE_MATMUL_GROUP_MAX], *ref[AE_MATMUL_GROUP_MAX];
    float *base[AE_MATMUL_GROUP_MAX];
    double *sum[AE_MATMUL_GROUP_MAX];
    ae_ptr gw[AE_MATMUL_GROUP_MAX], gy[AE_MATMUL_GROUP_MAX];
    ae_ptr gx = up(g_gpu, x, (size_t)M * K, AE_DT_BF16);
    for (int i = 0; i < n; i++) {
        const size_t ny = (size_t)M * N[i];
        w[i] = rand_bf16((size_t)N[i] * K, &r);
        ref[i] = malloc(ny * sizeof(float)), base[i] = malloc(ny * sizeof(float));
        sum[i] = calloc(ny, sizeof(double));
        assert_true(ref[i] && base[i] && sum[i]);
        const ae_gemm_args g = {.M = M, .N = N[i], .K = K, .batch = 1, .trans_b = 1, .lda = K,
                                .ldb = K, .ldy = N[i], .alpha = 1.0f, .beta = 0.0f};
        float *zero = calloc(ny, sizeof(float));
        assert_non_null(zero);
        run_gemm(g_cpu, AE_DT_F32, AE_DT_F32, &g, x, w[i], zero, ref[i]);
        free(zero);
        for (int m = 0; m < M; m++)
            for (int c = 0; c < N[i]; c++)
                for (int k = 0; k < K; k++)
                    sum[i][(size_t)m * N[i] + c] +=
                        fabs((double)x[(size_t)m * K + k] * w[i][(size_t)c * K + k]);
        gw[i] = up(g_gpu, w[i], (size_t)N[i] * K, AE_DT_BF16);
    }
    const int bf16_out = ydt == AE_DT_BF16;
    char what[64];
    snprintf(what, sizeof what, "matmul_group of %d, %s", n, bf16_out ? "BF16" : "F32");
    for (int v = 0; v < N_VARIANTS; v++) {
        use_variant(&VARIANTS[v]);
        for (int i = 0; i < n; i++) gy[i] = g_gpu->alloc(g_gpu, (size_t)M * N[i], ydt);
        g_gpu->matmul_group(g_gpu, n, gy, gx, gw, N, M, K);
        for (int i = 0; i < n; i++) {
            const size_t ny = (size_t)M * N[i];
            float *got = malloc(ny * sizeof *got);
            assert_non_null(got);
            down(g_gpu, got, gy[i], ny);
            const ae_gemm_args g = {.M = M, .N = N[i], .K = K, .ldy = N[i], .alpha = 1.0f};
            check(what, &VARIANTS[v], &g, got, ref[i], sum[i], got, bf16_out);
            if (v == 0) memcpy(base[i], got, ny * sizeof *got);
            else if (VARIANTS[v].exact && !bf16_out && differs(got, base[i], ny))
                fail_msg("%s [%s]: product %d not bit-identical to the default", what,
                         VARIANTS[v].env, i);
            free(got);
            g_gpu->free(g_gpu, gy[i]);
        }
    }
    unsetenv("AE_CUDA_GEMV");
    g_gpu->free(g_gpu, gx);
    for (int i = 0; i < n; i++) {
        g_gpu->free(g_gpu, gw[i]);
        free(w[i]), free(ref[i]), free(base[i]), free(sum[i]);
    }
    free(x);
}

static void test_group_sets(void **state) {
    (void)state;
    const int one[1] = {37}, two[2] = {13, 257}, qkv[3] = {64, 17, 17};
    for (int M = 1; M <= 8; M += 3) {
        group_case(1, one, M, 264, AE_DT_F32, 300 + M);
        group_case(2, two, M, 1032, AE_DT_F32, 310 + M);
        group_case(3, qkv, M, 4104, AE_DT_F32, 320 + M);
        group_case(3, qkv, M, 40, AE_DT_BF16, 330 + M);
    }
}

// pdl=1 in a chain: y1 = x · w1ᵀ, then y2 = y1 · w2ᵀ reads y1 as its x (it must wait for the
// first kernel); ten chains back to back, y2 of each equal bit for bit to the chain without PDL.
static void test_pdl_chain(void **state) {
    (void)state;
    enum { M = 2, K = 4096, N1 = 4096, N2 = 1032, CHAINS = 10 };
    ae_rng r;
    ae_rng_seed(&r, 77);
    float *x = rand_bf16((size_t)M * K, &r), *w1 = rand_bf16((size_t)N1 * K, &r);
    float *w2 = rand_bf16((size_t)N2 * N1, &r);
    for (size_t i = 0; i < (size_t)N1 * K; i++) w1[i] *= 1.0f / 64; // y1 values ~N(0, 1)
    ae_ptr gx = up(g_gpu, x, (size_t)M * K, AE_DT_BF16);
    ae_ptr gw1 = up(g_gpu, w1, (size_t)N1 * K, AE_DT_BF16);
    ae_ptr gw2 = up(g_gpu, w2, (size_t)N2 * N1, AE_DT_BF16);
    float *out[2];
    const ae_gemm_args g1 = {.M = M, .N = N1, .K = K, .batch = 1, .trans_b = 1, .lda = K, .ldb = K,
                             .ldy = N1, .alpha = 1.0f};
    const ae_gemm_args g2 = {.M = M, .N = N2, .K = N1, .batch = 1, .trans_b = 1, .lda = N1,
                             .ldb = N1, .ldy = N2, .alpha = 1.0f};
    for (int pdl = 0; pdl < 2; pdl++) {
        assert_int_equal(setenv("AE_CUDA_GEMV", pdl ? "pdl=1" : "", 1), 0);
        out[pdl] = malloc((size_t)CHAINS * M * N2 * sizeof(float));
        assert_non_null(out[pdl]);
        ae_ptr y1[CHAINS], y2[CHAINS];
        for (int c = 0; c < CHAINS; c++) { // fresh NaN-poisoned outputs: a read too early shows
            y1[c] = g_gpu->alloc(g_gpu, (size_t)M * N1, AE_DT_BF16);
            y2[c] = g_gpu->alloc(g_gpu, (size_t)M * N2, AE_DT_F32);
            assert_true(y1[c].data && y2[c].data);
        }
        for (int c = 0; c < CHAINS; c++) {
            g_gpu->gemm(g_gpu, &g1, y1[c], gx, gw1);
            g_gpu->gemm(g_gpu, &g2, y2[c], y1[c], gw2);
        }
        for (int c = 0; c < CHAINS; c++) {
            down(g_gpu, out[pdl] + (size_t)c * M * N2, y2[c], (size_t)M * N2);
            g_gpu->free(g_gpu, y1[c]), g_gpu->free(g_gpu, y2[c]);
        }
    }
    unsetenv("AE_CUDA_GEMV");
    for (size_t i = 0; i < (size_t)CHAINS * M * N2; i++)
        if (!(out[1][i] == out[0][i]))
            fail_msg("pdl chain: value %zu = %g with pdl=1, %g without", i, out[1][i], out[0][i]);
    g_gpu->free(g_gpu, gx), g_gpu->free(g_gpu, gw1), g_gpu->free(g_gpu, gw2);
    free(x), free(w1), free(w2), free(out[0]), free(out[1]);
}

// gate_up_silu on x (M, K), wg, wu (N, K), under every variant: act equal bit for bit to
// matmul_group + silu_mul under the same variant (bf16 g, u as the model keeps them), and close
// to the CPU's fp32 op: |act − ref| <= 1e-2 · max(1, |ref|) (three bf16 roundings, <= 6e-3).
static void swiglu_case(int M, int N, int K, uint64_t seed) {
    ae_rng r;
    ae_rng_seed(&r, seed);
    const size_t ny = (size_t)M * N, nw = (size_t)N * K;
    float *x = rand_bf16((size_t)M * K, &r), *wg = rand_bf16(nw, &r), *wu = rand_bf16(nw, &r);
    const float sg = 2.0f / sqrtf((float)K), su = 1.0f / sqrtf((float)K); // g ~ N(0, 4), u ~ N(0, 1)
    for (size_t i = 0; i < nw; i++) wg[i] = bf16r(wg[i] * sg), wu[i] = bf16r(wu[i] * su);
    float *ref = malloc(ny * sizeof *ref), *gc = malloc(ny * sizeof *gc);
    float *uc = malloc(ny * sizeof *uc), *got = malloc(ny * sizeof *got);
    float *two = malloc(ny * sizeof *two);
    assert_true(ref && gc && uc && got && two);
    g_cpu->gate_up_silu(g_cpu, ae_host_f32(ref), ae_host_f32(gc), ae_host_f32(uc),
                        ae_host_f32(x), ae_host_f32(wg), ae_host_f32(wu), M, K, N);
    ae_ptr gx = up(g_gpu, x, (size_t)M * K, AE_DT_BF16), gwg = up(g_gpu, wg, nw, AE_DT_BF16);
    ae_ptr gwu = up(g_gpu, wu, nw, AE_DT_BF16);
    ae_ptr ws[2] = {gwg, gwu};
    const int Ns[2] = {N, N};
    for (int v = 0; v < N_VARIANTS; v++) {
        use_variant(&VARIANTS[v]);
        ae_ptr act = g_gpu->alloc(g_gpu, ny, AE_DT_BF16), g = g_gpu->alloc(g_gpu, ny, AE_DT_BF16);
        ae_ptr u = g_gpu->alloc(g_gpu, ny, AE_DT_BF16);
        assert_true(act.data && g.data && u.data);
        g_gpu->gate_up_silu(g_gpu, act, g, u, gx, gwg, gwu, M, K, N);
        down(g_gpu, got, act, ny);
        ae_ptr ys[2] = {g, u};
        g_gpu->matmul_group(g_gpu, 2, ys, gx, ws, Ns, M, K);
        g_gpu->silu_mul(g_gpu, g, g, u, ny);
        down(g_gpu, two, g, ny);
        for (size_t i = 0; i < ny; i++) {
            if (!(got[i] == two[i]))
                fail_msg("gate_up_silu [%s]: M %d N %d K %d act[%zu] = %.9g, matmul_group + "
                         "silu_mul %.9g (must be bit-identical)",
                         VARIANTS[v].env, M, N, K, i, got[i], two[i]);
            const double tol = 1e-2 * fmax(1.0, fabs(ref[i]));
            if (!(fabs((double)got[i] - ref[i]) <= tol))
                fail_msg("gate_up_silu [%s]: M %d N %d K %d act[%zu] = %.9g, cpu %.9g (tol %.3g)",
                         VARIANTS[v].env, M, N, K, i, got[i], ref[i], tol);
        }
        g_gpu->free(g_gpu, act), g_gpu->free(g_gpu, g), g_gpu->free(g_gpu, u);
    }
    unsetenv("AE_CUDA_GEMV");
    g_gpu->free(g_gpu, gx), g_gpu->free(g_gpu, gwg), g_gpu->free(g_gpu, gwu);
    free(x), free(wg), free(wu), free(ref), free(gc), free(uc), free(got), free(two);
}

// The heuristic's warps per tile 1 (K = 40), 2 (264), 4 (776) and 8 (4104: a block does the
// gate tile, then the up tile); odd N; M = 1..8.
static void test_swiglu_variants(void **state) {
    (void)state;
    for (int M = 1; M <= 8; M += 3) {
        swiglu_case(M, 37, 40, 400 + M);
        swiglu_case(M, 257, 264, 410 + M);
        swiglu_case(M, 64, 776, 420 + M);
        swiglu_case(M, 13, 4104, 430 + M);
    }
    swiglu_case(8, 1, 8, 440);
}

int main(void) {
    int rc = ae_test_open_gpu(&g_gpu, 1);
    if (rc) return rc;
    g_cpu = ae_backend_cpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_m1_to_8),   cmocka_unit_test(test_gemm_odd_shapes),
        cmocka_unit_test(test_gemm_long_k),    cmocka_unit_test(test_gemm_bf16_out),
        cmocka_unit_test(test_group_sets),     cmocka_unit_test(test_pdl_chain),
        cmocka_unit_test(test_swiglu_variants),
    };
    rc = ae_test_finish(cmocka_run_group_tests(tests, NULL, NULL));
    ae_backend_close(g_gpu);
    return rc;
}
